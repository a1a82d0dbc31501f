//! `/mutate` over real HTTPS: real AdmissionReview JSON in, patch decoded, applied with
//! the json-patch crate to the original pod, result read back as a k8s-openapi `Pod`.

mod support;

use std::sync::OnceLock;

use serde_json::{Value, json};
use support::*;

fn server() -> &'static Server {
    // Never dropped; the server still exits with this test binary (see `Server::start`).
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start(CONFIG, &[]))
}

async fn mutate(object: &Value, ns: &str) -> (Value, k8s_openapi::api::core::v1::Pod) {
    let review = review_for(object.clone(), ns, "CREATE");
    let body = post_review(server(), "/mutate", &review).await;
    assert_eq!(body["response"]["allowed"], true, "/mutate never denies");
    let pod = apply_pod(object, &body);
    (body, pod)
}

#[tokio::test]
async fn issue_example_tcr_image_gets_its_secret() {
    let p = pod(&[(
        "app",
        "demo-tcr.tencentcloudcr.com/docker/getting-started:latest",
    )]);
    let (body, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["tcr-pull"]);
    assert_eq!(
        out.metadata.annotations.unwrap()["pullsecret-injector.io/injected"],
        "tcr-pull"
    );
    assert_eq!(
        body["response"]["auditAnnotations"]["injected-secrets"],
        "tcr-pull"
    );
    // nothing else in the spec changed
    assert_eq!(
        out.spec.as_ref().unwrap().containers[0]
            .image_pull_policy
            .as_deref(),
        Some("IfNotPresent")
    );
}

#[tokio::test]
async fn absent_field_gets_one_add_of_the_whole_list() {
    let p = pod(&[("app", "ghcr.io/acme/api:1")]);
    let (body, out) = mutate(&p, "team-a").await;
    let ops = patch_ops(&body);
    assert_eq!(
        ops[0],
        json!({"op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "ghcr-acme"}]})
    );
    assert_eq!(secret_names(&out), ["ghcr-acme"]);
}

#[tokio::test]
async fn existing_secrets_are_kept_in_order_and_not_duplicated() {
    let mut p = pod(&[("a", "ghcr.io/acme/api:1"), ("b", "quay.io/team/x:2")]);
    p["spec"]["imagePullSecrets"] = json!([{"name": "sa-secret"}, {"name": "quay-all"}]);
    let (_, out) = mutate(&p, "team-a").await;
    assert_eq!(
        secret_names(&out),
        ["sa-secret", "quay-all", "ghcr-acme", "quay-team"]
    );
}

#[tokio::test]
async fn empty_list_is_handled() {
    let mut p = pod(&[("a", "ghcr.io/acme/api:1")]);
    p["spec"]["imagePullSecrets"] = json!([]);
    p["metadata"]["annotations"] = json!({});
    let (_, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["ghcr-acme"]);
    assert_eq!(out.metadata.annotations.unwrap().len(), 1);
}

#[tokio::test]
async fn three_registries_in_one_pod() {
    let p = pod(&[
        ("a", "demo-tcr.tencentcloudcr.com/x/y:1"),
        ("b", "ghcr.io/acme/api:1"),
        ("c", "nginx:1.25"),
    ]);
    let (_, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["tcr-pull", "ghcr-acme", "hub-library"]);
    assert_eq!(
        out.metadata.annotations.unwrap()["pullsecret-injector.io/injected"],
        "tcr-pull,ghcr-acme,hub-library"
    );
}

#[tokio::test]
async fn image_matching_several_entries_gets_every_secret() {
    let p = pod(&[("a", "quay.io/team/app:1")]);
    let (_, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["quay-all", "quay-team"]);
}

#[tokio::test]
async fn init_ephemeral_containers_and_image_volumes_count() {
    let mut p = pod(&[("app", "registry.k8s.io/pause:3.10")]);
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "ghcr.io/acme/init:1", "imagePullPolicy": "IfNotPresent"}]);
    p["spec"]["volumes"] = json!([
        {"name": "cfg", "configMap": {"name": "x"}},
        {"name": "model", "image": {"reference": "quay.io/other/model:v1", "pullPolicy": "IfNotPresent"}}
    ]);
    let (_, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["ghcr-acme", "quay-all"]);

    // ephemeral containers only exist on existing pods; on CREATE the walker still reads them
    let mut q = pod(&[("app", "registry.k8s.io/pause:3.10")]);
    q["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "localhost:5000/debug:1", "imagePullPolicy": "IfNotPresent"}]);
    let (_, out) = mutate(&q, "team-a").await;
    assert_eq!(secret_names(&out), ["local-registry"]);
    let eph = &out.spec.unwrap().ephemeral_containers.unwrap()[0];
    assert_eq!(
        eph.image_pull_policy.as_deref(),
        Some("Always"),
        "local entry has alwaysPull"
    );
}

#[tokio::test]
async fn unparseable_images_are_warned_about_not_guessed() {
    let p = pod(&[
        ("bad", "ghcr.io/Acme/app:1"),
        ("good", "ghcr.io/acme/app:1"),
    ]);
    let (body, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["ghcr-acme"]);
    let w = body["response"]["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1);
    let w = w[0].as_str().unwrap();
    assert!(
        w.starts_with(
            "container \"bad\" image \"ghcr.io/Acme/app:1\" is not a valid image reference"
        ),
        "{w}"
    );
    assert!(w.chars().count() <= 120);
}

#[tokio::test]
async fn docker_hub_short_names_normalise_to_docker_io_library() {
    for image in [
        "nginx",
        "nginx:1.25",
        "library/nginx",
        "docker.io/nginx",
        "index.docker.io/library/nginx:1",
        // no '/', so Docker Hub's library/localhost with tag 5000 (reference vector 11)
        "localhost:5000",
    ] {
        let (_, out) = mutate(&pod(&[("a", image)]), "team-a").await;
        assert_eq!(secret_names(&out), ["hub-library"], "{image}");
    }
    for image in [
        "myuser/app",
        "registry-1.docker.io/nginx",
        "localhost:5000/nginx",
    ] {
        let (_, out) = mutate(&pod(&[("a", image)]), "team-a").await;
        assert!(
            !secret_names(&out).contains(&"hub-library".to_string()),
            "{image} is not docker.io/library"
        );
    }
}

#[tokio::test]
async fn ports_must_match_exactly() {
    let (_, out) = mutate(&pod(&[("a", "localhost:5000/app:1")]), "team-a").await;
    assert_eq!(secret_names(&out), ["local-registry"]);
    for image in [
        "localhost/app:1",
        "localhost:5001/app",
        "ghcr.io:443/acme/app",
    ] {
        let (_, out) = mutate(&pod(&[("a", image)]), "team-a").await;
        assert!(secret_names(&out).is_empty(), "{image}");
    }
}

#[tokio::test]
async fn wildcards_match_exactly_one_label() {
    let (_, out) = mutate(&pod(&[("a", "other.tencentcloudcr.com/x:1")]), "team-a").await;
    assert_eq!(secret_names(&out), ["tcr-pull"]);
    for image in [
        "a.b.tencentcloudcr.com/x",
        "tencentcloudcr.com/x",
        "tencentcloudcr.com.evil.io/x",
        "evil.io/tencentcloudcr.com/x",
    ] {
        let (_, out) = mutate(&pod(&[("a", image)]), "team-a").await;
        assert!(secret_names(&out).is_empty(), "{image}");
    }
}

#[tokio::test]
async fn path_prefix_matches_on_component_boundary() {
    for (image, want) in [
        ("ghcr.io/acme/app", true),
        ("ghcr.io/acme", true),
        ("ghcr.io/acme-other/app", false),
        ("ghcr.io/acmeinc/app", false),
        ("ghcr.io/other/acme/app", false),
    ] {
        let (_, out) = mutate(&pod(&[("a", image)]), "team-a").await;
        assert_eq!(!secret_names(&out).is_empty(), want, "{image}");
    }
}

#[tokio::test]
async fn scope_excluded_namespaces_and_opt_out() {
    let tcr = pod(&[("a", "demo-tcr.tencentcloudcr.com/x/y:1")]);
    // per-entry scope: tcr only in team-* minus team-legacy
    for ns in ["team-legacy", "default"] {
        let (body, _) = mutate(&tcr, ns).await;
        assert!(patch_ops(&body).is_empty(), "{ns}");
    }
    // global exclusion wins over every entry
    let (body, _) = mutate(&pod(&[("a", "nginx")]), "kube-system").await;
    assert!(patch_ops(&body).is_empty());
    // opt-out annotation
    let mut p = pod(&[("a", "nginx")]);
    p["metadata"]["annotations"] = json!({"pullsecret-injector.io/inject": "false"});
    let (body, _) = mutate(&p, "team-a").await;
    assert!(patch_ops(&body).is_empty());
    // mirror pods are never touched
    let mut p = pod(&[("a", "nginx")]);
    p["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    let (body, _) = mutate(&p, "team-a").await;
    assert!(patch_ops(&body).is_empty());
}

#[tokio::test]
async fn reinvocation_is_idempotent() {
    let mut p = pod(&[
        ("a", "ghcr.io/acme/x:1"),
        ("b", "localhost:5000/y:1"),
        ("c", "nginx"),
    ]);
    p["metadata"]["annotations"] = json!({"a/b~c": "keys needing escapes"});
    let (body, _) = mutate(&p, "team-a").await;
    let once = apply(&p, &body);
    let (body2, _) = mutate(&once, "team-a").await;
    assert!(
        body2["response"].get("patch").is_none(),
        "second pass must not patch: {body2}"
    );
    assert_eq!(
        once["metadata"]["annotations"]["a/b~c"],
        "keys needing escapes"
    );
}

#[tokio::test]
async fn annotation_key_is_escaped_when_annotations_exist() {
    let mut p = pod(&[("a", "ghcr.io/acme/x:1")]);
    p["metadata"]["annotations"] = json!({"x": "y"});
    let (body, out) = mutate(&p, "team-a").await;
    let ops = patch_ops(&body);
    assert!(
        ops.iter()
            .any(|o| o["path"] == "/metadata/annotations/pullsecret-injector.io~1injected"),
        "{ops:?}"
    );
    let ann = out.metadata.annotations.unwrap();
    assert_eq!(ann["x"], "y");
    assert_eq!(ann["pullsecret-injector.io/injected"], "ghcr-acme");
}

#[tokio::test]
async fn non_pod_kinds_and_other_operations_pass_untouched() {
    let mut review = review_for(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}, "spec": {}}),
        "team-a",
        "CREATE",
    );
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    review["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    let body = post_review(server(), "/mutate", &review).await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());

    // the every-field review of an unknown kind from Kubernetes' own test data
    let fixture = fixture("admission.k8s.io.v1.AdmissionReview.json");
    let mut r = fixture.clone();
    r.as_object_mut().unwrap().remove("response");
    let body = post_review(server(), "/mutate", &r).await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());

    // a pod UPDATE (not the ephemeral subresource) is never patched: the spec is immutable
    let p = pod(&[("a", "nginx")]);
    let mut review = review_for(p.clone(), "team-a", "UPDATE");
    review["request"]["oldObject"] = p;
    let body = post_review(server(), "/mutate", &review).await;
    assert!(body["response"].get("patch").is_none());
}

#[tokio::test]
async fn ephemeral_container_update_forces_always_on_new_ones_only() {
    let mut old = pod(&[("app", "nginx")]);
    old["spec"]["imagePullSecrets"] = json!([{"name": "hub-library"}]);
    old["spec"]["ephemeralContainers"] = json!([{"name": "old", "image": "localhost:5000/dbg:1", "imagePullPolicy": "IfNotPresent"}]);
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "new", "image": "localhost:5000/dbg:2", "imagePullPolicy": "IfNotPresent"}));
    let mut review = review_for(new.clone(), "team-a", "UPDATE");
    review["request"]["subResource"] = json!("ephemeralcontainers");
    review["request"]["oldObject"] = old;
    let body = post_review(server(), "/mutate", &review).await;
    let ops = patch_ops(&body);
    assert_eq!(
        ops,
        vec![
            json!({"op": "add", "path": "/spec/ephemeralContainers/1/imagePullPolicy", "value": "Always"})
        ]
    );
    // the pod lacks local-registry and it cannot be added now: the tenant is told
    let w = body["response"]["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("ephemeral container \"new\": pod lacks imagePullSecret \"local-registry\""),
        "{w}"
    );
}

#[tokio::test]
async fn every_field_pod_fixture_changes_only_what_we_meant() {
    for file in ["core.v1.Pod.json", "v1.33.0-core.v1.Pod.json"] {
        let mut p = fixture(file);
        p["spec"]["containers"][0]["image"] = json!("ghcr.io/acme/app:1");
        let review = review_for(p.clone(), "team-a", "CREATE");
        let body = post_review(server(), "/mutate", &review).await;
        let mut out = apply(&p, &body);
        // the tool's own changes, removed again, must leave the original byte-for-byte in value
        assert_eq!(
            out["spec"]["imagePullSecrets"],
            json!([{"name": "nameValue"}, {"name": "ghcr-acme"}]),
            "{file}"
        );
        assert_eq!(
            out["metadata"]["annotations"]["pullsecret-injector.io/injected"],
            "ghcr-acme"
        );
        out["spec"]["imagePullSecrets"] = p["spec"]["imagePullSecrets"].clone();
        out["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("pullsecret-injector.io/injected");
        assert_eq!(out, p, "{file}: nothing else may change");
        // the placeholder images ("imageValue") are not valid references: warned, not guessed
        assert!(!body["response"]["warnings"].as_array().unwrap().is_empty());
        // and the typed Pod still decodes
        let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(apply(&p, &body)).unwrap();
    }
}

#[tokio::test]
async fn v1beta1_is_answered_in_kind() {
    let mut review = review_for(pod(&[("a", "nginx")]), "team-a", "CREATE");
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let body = post_review(server(), "/mutate", &review).await;
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1beta1");
    assert!(body["response"]["patch"].is_string());
}

#[tokio::test]
async fn malformed_oversized_and_wrong_type_bodies_get_clear_http_errors() {
    let c = server().client();
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"not json".to_vec(), "application/json", 400, "body is not a valid AdmissionReview"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "application/json", 400, "AdmissionReview has no request"),
        (br#"{"apiVersion":"v9","kind":"AdmissionReview","request":{}}"#.to_vec(), "application/json", 400, "unsupported AdmissionReview apiVersion"),
        (serde_json::to_vec(&json!({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{}}})).unwrap(), "application/json", 400, "missing field `uid`"),
        (vec![0xff, 0xfe, 0x00], "application/json", 400, "body is not a valid AdmissionReview"),
        (b"{}".to_vec(), "text/plain", 415, "content type"),
        (vec![b' '; 3 * 1024 * 1024 + 1], "application/json", 413, ""),
    ];
    for (body, ct, status, text) in cases {
        let resp = c
            .post(server().url("/mutate"))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{text}");
        let got = resp.text().await.unwrap();
        assert!(got.contains(text), "{got:?} should contain {text:?}");
        assert_eq!(
            got.trim_end().lines().count(),
            1,
            "one-line reason: {got:?}"
        );
    }
    // deeply nested JSON is refused by the parser's recursion limit, not a stack overflow
    let deep = format!(
        "{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let resp = c
        .post(server().url("/mutate"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // and the server is still fine
    let ok = c.get(server().url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn huge_pods_are_answered() {
    let containers: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("c{i}"), format!("ghcr.io/acme/app{i}:1")))
        .collect();
    let refs: Vec<(&str, &str)> = containers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let p = pod(&refs);
    let (_, out) = mutate(&p, "team-a").await;
    assert_eq!(secret_names(&out), ["ghcr-acme"]);
}

/// `/mutate` refuses a pod review without a pod the way `/validate` does, rather than
/// admitting it unpatched.
#[tokio::test]
async fn a_pod_review_without_an_object_is_a_bad_request() {
    let mut null = review_for(pod(&[("a", "ghcr.io/acme/a:1")]), "team-a", "CREATE");
    null["request"]["object"] = Value::Null;
    let mut missing = null.clone();
    missing["request"].as_object_mut().unwrap().remove("object");
    for review in [null, missing] {
        let resp = server()
            .client()
            .post(server().url("/mutate"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        assert_eq!(
            resp.text().await.unwrap(),
            "AdmissionReview request for a Pod CREATE has no object\n"
        );
    }
}
