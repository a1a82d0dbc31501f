//! `/validate` in enforce mode: exact admission responses for each rule.

mod support;

use std::sync::OnceLock;

use serde_json::{Value, json};
use support::*;

fn server() -> &'static Server {
    // Never dropped; the server still exits with this test binary (see `Server::start`).
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| policy_server("enforce"))
}

async fn validate(review: &Value) -> Value {
    let body = post_review(server(), "/validate", review).await;
    assert!(
        body["response"].get("patch").is_none(),
        "a validating answer never patches"
    );
    body["response"].clone()
}

fn denied_with(resp: &Value, message: &str) {
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 403);
    assert_eq!(resp["status"]["reason"], "Forbidden");
    assert_eq!(resp["status"]["message"], message);
}

fn always(p: &mut Value) {
    for c in p["spec"]["containers"].as_array_mut().unwrap() {
        c["imagePullPolicy"] = json!("Always");
    }
}

#[tokio::test]
async fn allowed_registries_pass() {
    let mut p = pod(&[
        ("a", "nginx:1.25"),
        ("b", "registry.k8s.io/pause:3.10"),
        ("c", "demo.tencentcloudcr.com/x:1"),
    ]);
    always(&mut p);
    let r = validate(&review_for(p, "team-a", "CREATE")).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("warnings").is_none());
}

#[tokio::test]
async fn not_in_allow_is_rejected_with_a_precise_message() {
    let r = validate(&review_for(
        pod(&[("app", "evil.io/x:1")]),
        "team-a",
        "CREATE",
    ))
    .await;
    denied_with(
        &r,
        r#"container "app" image "evil.io/x:1" (registry evil.io) is not in policy.allow"#,
    );
}

#[tokio::test]
async fn deny_wins_over_allow_and_every_offence_is_named() {
    // docker.io/library is allowed, docker.io/library/evil denied
    let mut p = pod(&[("a", "evil:1"), ("b", "quay.io/x/y:2")]);
    p["spec"]["initContainers"] =
        json!([{"name": "i", "image": "docker.io/evilcorp/tool", "imagePullPolicy": "Always"}]);
    let r = validate(&review_for(p, "team-a", "CREATE")).await;
    denied_with(
        &r,
        concat!(
            r#"init container "i" image "docker.io/evilcorp/tool" (registry docker.io) is denied by policy.deny pattern "docker.io/evilcorp"; "#,
            r#"container "a" image "evil:1" (registry docker.io) is denied by policy.deny pattern "docker.io/library/evil"; "#,
            r#"container "b" image "quay.io/x/y:2" (registry quay.io) is not in policy.allow"#
        ),
    );
}

#[tokio::test]
async fn docker_hub_short_names_are_judged_as_docker_io_library() {
    let mut ok = pod(&[
        ("a", "nginx"),
        ("b", "library/redis:7"),
        ("c", "docker.io/busybox"),
    ]);
    always(&mut ok);
    assert_eq!(
        validate(&review_for(ok, "team-a", "CREATE")).await["allowed"],
        true
    );
    let r = validate(&review_for(
        pod(&[("a", "someuser/app:1")]),
        "team-a",
        "CREATE",
    ))
    .await;
    denied_with(
        &r,
        r#"container "a" image "someuser/app:1" (registry docker.io) is not in policy.allow"#,
    );
}

#[tokio::test]
async fn unparseable_images_are_offences() {
    let r = validate(&review_for(
        pod(&[("a", "Docker.io/Nginx")]),
        "team-a",
        "CREATE",
    ))
    .await;
    denied_with(
        &r,
        r#"container "a" image "Docker.io/Nginx" is not a valid image reference: repository name must be lowercase"#,
    );
}

#[tokio::test]
async fn image_volumes_are_judged() {
    let mut p = pod(&[("a", "nginx")]);
    always(&mut p);
    p["spec"]["volumes"] = json!([{"name": "m", "image": {"reference": "quay.io/models/m:1", "pullPolicy": "Always"}}]);
    let r = validate(&review_for(p, "team-a", "CREATE")).await;
    denied_with(
        &r,
        r#"image volume "m" image "quay.io/models/m:1" (registry quay.io) is not in policy.allow"#,
    );
}

#[tokio::test]
async fn require_always_pull_catches_a_pod_changed_after_mutation() {
    // /mutate would have set Always; a later webhook set it back
    let p = pod(&[("app", "demo.tencentcloudcr.com/x:1"), ("hub", "nginx")]);
    let r = validate(&review_for(p, "team-a", "CREATE")).await;
    denied_with(
        &r,
        r#"container "app" image "demo.tencentcloudcr.com/x:1" (registry demo.tencentcloudcr.com) must have imagePullPolicy Always (policy.requireAlwaysPull: private), has "IfNotPresent""#,
    );
}

#[tokio::test]
async fn update_with_unchanged_images_is_allowed_even_under_a_newer_policy() {
    // created before the policy existed: quay.io and IfNotPresent
    let old = pod(&[("a", "quay.io/x/y:1"), ("b", "demo.tencentcloudcr.com/x:1")]);
    let mut new = old.clone();
    new["metadata"]["labels"]["tier"] = json!("gold");
    let r = validate(&update_review(old, new, "team-a", None)).await;
    assert_eq!(r["allowed"], true, "{r}");
}

#[tokio::test]
async fn update_adding_a_bad_image_is_rejected() {
    let old = pod(&[("a", "quay.io/x/y:1"), ("b", "nginx")]);
    let mut new = old.clone();
    new["spec"]["containers"][1]["image"] = json!("evil.io/nginx:2");
    let r = validate(&update_review(old, new, "team-a", None)).await;
    denied_with(
        &r,
        r#"container "b" image "evil.io/nginx:2" (registry evil.io) is not in policy.allow"#,
    );
}

#[tokio::test]
async fn ephemeral_container_from_a_denied_registry_is_rejected() {
    let mut old = pod(&[("a", "nginx")]);
    always(&mut old);
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "image": "docker.io/evilcorp/shell", "imagePullPolicy": "Always"}]);
    let r = validate(&update_review(
        old,
        new,
        "team-a",
        Some("ephemeralcontainers"),
    ))
    .await;
    denied_with(
        &r,
        r#"ephemeral container "debugger" image "docker.io/evilcorp/shell" (registry docker.io) is denied by policy.deny pattern "docker.io/evilcorp""#,
    );
}

#[tokio::test]
async fn ephemeral_container_needing_a_missing_secret_is_warned() {
    let mut old = pod(&[("a", "nginx")]);
    always(&mut old);
    let mut new = old.clone();
    new["spec"]["ephemeralContainers"] =
        json!([{"name": "dbg", "image": "localhost:5000/tools:1", "imagePullPolicy": "Always"}]);
    let r = validate(&update_review(
        old,
        new,
        "team-a",
        Some("ephemeralcontainers"),
    ))
    .await;
    assert_eq!(r["allowed"], true);
    assert_eq!(
        r["warnings"],
        json!([
            r#"ephemeral container "dbg": pod lacks imagePullSecret "local-registry" (registry local); its pull may fail"#
        ])
    );
}

#[tokio::test]
async fn exempt_namespaces_and_overrides() {
    let bad = pod(&[("app", "evil.io/x:1")]);
    assert_eq!(
        validate(&review_for(bad.clone(), "kube-system", "CREATE")).await["allowed"],
        true
    );
    // sandbox-*: warn mode and allow ["*"]; requireAlwaysPull still inherited
    let r = validate(&review_for(bad, "sandbox-1", "CREATE")).await;
    assert_eq!(r["allowed"], true);
    assert!(r.get("warnings").is_none(), "allow * admits evil.io: {r}");
    let r = validate(&review_for(
        pod(&[("a", "docker.io/evilcorp/x")]),
        "sandbox-1",
        "CREATE",
    ))
    .await;
    assert_eq!(r["allowed"], true);
    assert_eq!(
        r["warnings"],
        json!([r#"container "a": docker.io/evilcorp/x denied by policy (docker.io/evilcorp)"#])
    );
}

#[tokio::test]
async fn workload_objects_are_not_judged() {
    let mut review = review_for(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "evil.io/x"}]}}}}),
        "team-a",
        "CREATE",
    );
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    review["request"]["resource"] =
        json!({"group": "apps", "version": "v1", "resource": "deployments"});
    assert_eq!(validate(&review).await["allowed"], true);
}

#[test]
fn verify_command_fails_a_pipeline_on_enforced_breaches() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a}
spec:
  template:
    spec:
      containers:
        - {name: web, image: "evil.io/web:1", imagePullPolicy: Always}
        - {name: ok, image: "nginx:1.25", imagePullPolicy: Always}
---
apiVersion: v1
kind: Pod
metadata: {name: s, namespace: sandbox-2}
spec: {containers: [{name: c, image: "docker.io/evilcorp/x", imagePullPolicy: Always}]}
"#;
    for (mode, code) in [("enforce", 1), ("warn", 0)] {
        let cfg = dir.path().join(format!("{mode}.yaml"));
        std::fs::write(&cfg, POLICY_CONFIG.replace("{mode}", mode)).unwrap();
        let (got, out, err) = run_cli(
            &["verify", "--config", cfg.to_str().unwrap(), "-f", "-"],
            manifests.as_bytes(),
        );
        assert_eq!(got, code, "{mode}: {out}{err}");
        assert_eq!(
            out,
            format!(
                "Deployment/web: {mode}: container \"web\" image \"evil.io/web:1\" (registry evil.io) is not in policy.allow\n\
                 Pod/s: warn: container \"c\" image \"docker.io/evilcorp/x\" (registry docker.io) is denied by policy.deny pattern \"docker.io/evilcorp\"\n"
            )
        );
    }
}

/// Longest denial text the README promises, whatever the pod holds.
const MESSAGE_BOUND: usize = 12 * 1024;

/// The containers of a pod built to blow up a denial: one image of megabytes of control
/// characters (each escapes to several) first, then thousands of rejected registries.
fn hostile_pod(rejected: usize) -> Value {
    let huge = format!("evil.io/x:1{}", "\u{1b}[2J\r\n\u{202e}".repeat(100_000));
    let mut cs = vec![("big".to_string(), huge)];
    cs.extend((0..rejected).map(|i| (format!("c{i}"), format!("evil{i}.io/x:1"))));
    let refs: Vec<(&str, &str)> = cs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    pod(&refs)
}

#[tokio::test]
async fn denial_of_a_huge_pod_is_bounded_and_escaped() {
    let r = validate(&review_for(hostile_pod(5000), "team-a", "CREATE")).await;
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(msg.len() <= MESSAGE_BOUND, "{} bytes", msg.len());
    assert!(
        !msg.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "raw control characters in {msg:?}"
    );
    // The huge image is shown escaped and shortened, never cut inside an escape.
    assert!(
        msg.starts_with(r#"container "big" image "evil.io/x:1\u{1b}[2J\r\n\u{202e}\u{1b}[2J"#),
        "{msg}"
    );
    assert!(msg.contains("…\""), "{msg}");
    // The offences after it read as before, up to the cap; the rest are counted.
    assert!(
        msg.contains(
            r#"; container "c0" image "evil0.io/x:1" (registry evil0.io) is not in policy.allow; "#
        ),
        "{msg}"
    );
    assert!(msg.contains(r#"container "c8" image"#), "{msg}");
    assert!(!msg.contains(r#"container "c9" image"#), "{msg}");
    assert!(msg.ends_with("; ... and 4991 more offences"), "{msg}");
}

#[tokio::test]
async fn ten_offences_are_all_named_and_eleven_are_summarised() {
    let names: Vec<(String, String)> = (0..11)
        .map(|i| (format!("c{i}"), format!("evil{i}.io/x:1")))
        .collect();
    let line = |i: usize| {
        format!(
            r#"container "c{i}" image "evil{i}.io/x:1" (registry evil{i}.io) is not in policy.allow"#
        )
    };
    for n in [10, 11] {
        let refs: Vec<(&str, &str)> = names[..n]
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let r = validate(&review_for(pod(&refs), "team-a", "CREATE")).await;
        let mut want: Vec<String> = (0..10).map(line).collect();
        if n == 11 {
            want.push("... and 1 more offences".into());
        }
        denied_with(&r, &want.join("; "));
    }
}

/// A Pod CREATE without a pod is not a review the API server sends; admitting it would
/// fail open, so it is a bad request like every other malformed review.
#[tokio::test]
async fn a_pod_review_without_an_object_is_a_bad_request() {
    let c = server().client();
    for endpoint in ["/validate", "/mutate"] {
        for operation in ["CREATE", "UPDATE"] {
            let mut null = review_for(pod(&[("app", "evil.io/x:1")]), "team-a", operation);
            null["request"]["object"] = Value::Null;
            let mut missing = null.clone();
            missing["request"].as_object_mut().unwrap().remove("object");
            for review in [null, missing] {
                let resp = c
                    .post(server().url(endpoint))
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&review).unwrap())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                assert_eq!(status, 400, "{endpoint} {operation}: {text}");
                assert_eq!(
                    text,
                    format!("AdmissionReview request for a Pod {operation} has no object\n")
                );
            }
        }
    }
    // A DELETE carries no object (only oldObject) and is answered as before.
    let mut delete = review_for(Value::Null, "team-a", "DELETE");
    delete["request"]["oldObject"] = pod(&[("app", "evil.io/x:1")]);
    assert_eq!(validate(&delete).await["allowed"], true);
}
