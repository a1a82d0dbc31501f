//! What a tenant sees, through the real `kubectl` and a real API server, when the chart is
//! installed with a registry policy (and when they ask for a server-side dry run):
//!
//! - **enforce:** `kubectl apply` of a Pod with a denied or not-allowed image fails with
//!   `admission webhook "validate.pullsecret-injector.io" denied the request: <our
//!   message>`, naming every offending container, and no Pod exists; an allowed Pod (even
//!   one that only passes because `/mutate` forced its pull policy first) is created.
//! - **warn:** the Pod is created and kubectl prints one `Warning: <our text>` line per
//!   offence, exactly as our server phrases it.
//! - **audit:** the Pod is created silently, and the API server's audit log holds our
//!   `auditAnnotations` on the Pod's create event, under
//!   `validate.pullsecret-injector.io/<key>`.
//! - **dry run:** `kubectl create --dry-run=server -o json` shows the mutated Pod
//!   (imagePullSecrets appended, pull policy forced) and writes nothing: no Pod, no managed
//!   Secret copy, no Event, no Secret create in the audit log. A real `kubectl create`
//!   then does create the copy (and its Event), so the checks are not vacuous.
//!
//! The control plane comes from `tests/common/envtest.rs` (skipped without
//! `KUBEBUILDER_ASSETS`, a failure under `CI=true`); the chart is installed by
//! `tests/common/install.rs`. Run with
//! `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test e2e_policy_kubectl`.

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envtest::Envtest;
use install::{Install, RELEASE_NS};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, Secret};
use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

/// The webhook names the chart registers (the audit-annotation key prefixes).
const VALIDATE_HOOK: &str = "validate.pullsecret-injector.io";
const TENANT: &str = "team-a";

/// Chart values for the policy tests: two private registries (one with `alwaysPull`, one
/// without), Docker Hub's library and registry.k8s.io allowed, two deny rules, and the
/// final Pod must pull private images `Always`.
fn policy_values(mode: &str) -> Value {
    json!({
        "registries": [
            {"name": "tcr", "match": ["*.tencentcloudcr.com"], "secret": "tcr-pull", "alwaysPull": true},
            {"name": "local", "match": ["localhost:5000"], "secret": "local-registry"}
        ],
        "namespaces": {"exclude": ["kube-system"]},
        "policy": {
            "mode": mode,
            "allow": ["*.tencentcloudcr.com", "docker.io/library", "registry.k8s.io", "localhost:5000"],
            "deny": ["docker.io/library/evil", "docker.io/evilcorp"],
            "requireAlwaysPull": "private"
        }
    })
}

/// A control plane with the chart installed with `policy.mode: <mode>`, and the tenant
/// namespace.
async fn policy_install(env: &Envtest, mode: &str) -> Install {
    let install = Install::new(env, &policy_values(mode), &[]).await;
    envtest::create_namespace(&env.client, TENANT, None).await;
    install
}

async fn pod_exists(env: &Envtest, ns: &str, name: &str) -> bool {
    Api::<Pod>::namespaced(env.client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get pod")
        .is_some()
}

/// The `Warning: ` lines kubectl printed, without the prefix, in order.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("Warning: "))
        .collect()
}

/// The admission webhook's denial as the API server words it around our message.
fn denial(message: &str) -> String {
    format!("admission webhook \"{VALIDATE_HOOK}\" denied the request: {message}")
}

/// The `ResponseComplete` audit event of the create of Pod `ns/name` (waiting briefly:
/// the event is written as the request completes).
async fn pod_create_event(env: &Envtest, ns: &str, name: &str) -> Value {
    envtest::eventually(
        Duration::from_secs(10),
        &format!("audit event of the create of pod {ns}/{name}"),
        || async {
            env.audit_events().into_iter().find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["verb"] == "create"
                    && e["objectRef"]["resource"] == "pods"
                    && e["objectRef"].get("subresource").is_none()
                    && e["objectRef"]["namespace"] == ns
                    && e["objectRef"]["name"] == name
            })
        },
    )
    .await
}

/// The audit annotations our validating webhook left on an event, with the API server's
/// `<webhook name>/` prefix stripped.
fn our_audit_annotations(event: &Value) -> BTreeMap<String, String> {
    let prefix = format!("{VALIDATE_HOOK}/");
    event["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.as_str()?.into())))
        .collect()
}

#[tokio::test]
async fn enforce_mode_denies_with_our_exact_message() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let install = policy_install(&env, "enforce").await;

    // One Pod, every kind of breach: a deny rule, an image outside allow, and a private
    // image with IfNotPresent that /mutate does not force (entry `local` has no alwaysPull).
    let bad = r#"apiVersion: v1
kind: Pod
metadata:
  name: bad
  namespace: team-a
spec:
  initContainers:
    - name: setup
      image: docker.io/evilcorp/tool:1
      imagePullPolicy: Always
  containers:
    - name: app
      image: quay.io/x/y:2
      imagePullPolicy: Always
    - name: sidecar
      image: localhost:5000/side:1
      imagePullPolicy: IfNotPresent
"#;
    let (ok, stdout, stderr) = env.kubectl(&["apply", "-f", "-"], Some(bad));
    assert!(!ok, "kubectl apply must fail; stdout: {stdout}");
    let message = concat!(
        r#"init container "setup" image "docker.io/evilcorp/tool:1" (registry docker.io) is denied by policy.deny pattern "docker.io/evilcorp"; "#,
        r#"container "app" image "quay.io/x/y:2" (registry quay.io) is not in policy.allow; "#,
        r#"container "sidecar" image "localhost:5000/side:1" (registry localhost:5000) must have imagePullPolicy Always (policy.requireAlwaysPull: private), has "IfNotPresent""#
    );
    assert_eq!(
        stderr,
        format!(
            "Error from server (Forbidden): error when creating \"STDIN\": {}\n",
            denial(message)
        ),
        "kubectl's whole stderr\n--- webhook log ---\n{}",
        install.server().log()
    );
    assert!(!pod_exists(&env, TENANT, "bad").await, "denied Pod exists");

    // The README's own example, word for word.
    let (ok, _, stderr) = env.kubectl(&["run", "x", "--image=evil.io/x:1", "-n", TENANT], None);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "Error from server (Forbidden): {}\n",
            denial(
                r#"container "x" image "evil.io/x:1" (registry evil.io) is not in policy.allow"#
            )
        )
    );
    assert!(!pod_exists(&env, TENANT, "x").await);

    // Allowed: the tcr image arrives with IfNotPresent and only passes requireAlwaysPull
    // because /mutate forced Always first (the policy judges the final Pod).
    let good = r#"apiVersion: v1
kind: Pod
metadata:
  name: good
  namespace: team-a
spec:
  containers:
    - name: app
      image: demo.tencentcloudcr.com/app:1
      imagePullPolicy: IfNotPresent
    - name: hub
      image: nginx:1.25
      imagePullPolicy: IfNotPresent
    - name: side
      image: localhost:5000/side:1
      imagePullPolicy: Always
"#;
    let (ok, stdout, stderr) = env.kubectl(&["apply", "-f", "-"], Some(good));
    assert!(ok, "allowed Pod rejected: {stderr}");
    assert_eq!(stdout, "pod/good created\n");
    assert_eq!(stderr, "", "no warnings for a clean Pod");
    let pod = Api::<Pod>::namespaced(env.client.clone(), TENANT)
        .get("good")
        .await
        .expect("allowed Pod exists");
    let spec = pod.spec.unwrap();
    let secrets: Vec<String> = spec
        .image_pull_secrets
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(secrets, ["tcr-pull", "local-registry"]);
    let policies: Vec<Option<String>> = spec
        .containers
        .iter()
        .map(|c| c.image_pull_policy.clone())
        .collect();
    assert_eq!(
        policies,
        [
            Some("Always".into()),
            Some("IfNotPresent".into()),
            Some("Always".into())
        ]
    );
}

#[tokio::test]
async fn warn_mode_prints_our_warning_lines() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let install = policy_install(&env, "warn").await;

    let risky = r#"apiVersion: v1
kind: Pod
metadata:
  name: risky
  namespace: team-a
spec:
  containers:
    - name: a
      image: evil.io/x:1
      imagePullPolicy: Always
    - name: b
      image: docker.io/evilcorp/tool:1
      imagePullPolicy: Always
    - name: c
      image: localhost:5000/side:1
      imagePullPolicy: IfNotPresent
    - name: d
      image: Bad/Ref
      imagePullPolicy: Always
    - name: e
      image: nginx:1.25
      imagePullPolicy: IfNotPresent
"#;
    let (ok, stdout, stderr) = env.kubectl(&["apply", "-f", "-"], Some(risky));
    assert!(
        ok,
        "warn mode must admit: {stderr}\n--- webhook log ---\n{}",
        install.server().log()
    );
    assert_eq!(stdout, "pod/risky created\n");
    assert_eq!(
        warnings(&stderr),
        [
            // from /mutate: an unparseable image gets no secret, and says so (cut to
            // the 120 characters every warning is shaped to)
            r#"container "d" image "Bad/Ref" is not a valid image reference (registry host "Bad" is ambiguous (upper-case first compon…"#,
            // from /validate, one short line per offence
            r#"container "a": evil.io/x:1 not in policy.allow"#,
            r#"container "b": docker.io/evilcorp/tool:1 denied by policy (docker.io/evilcorp)"#,
            r#"container "c": localhost:5000/side:1 must use imagePullPolicy Always"#,
            r#"container "d": invalid image "Bad/Ref""#,
        ],
        "kubectl stderr:\n{stderr}"
    );
    for w in warnings(&stderr) {
        assert!(w.chars().count() <= 120, "{w}");
    }
    assert_eq!(
        stderr.lines().count(),
        5,
        "nothing but the warnings on stderr:\n{stderr}"
    );
    assert!(pod_exists(&env, TENANT, "risky").await);

    // The README's example, word for word.
    let (ok, stdout, stderr) =
        env.kubectl(&["run", "x", "--image=evil.io/x:1", "-n", TENANT], None);
    assert!(ok, "{stderr}");
    assert_eq!(
        stderr,
        "Warning: container \"x\": evil.io/x:1 not in policy.allow\n"
    );
    assert_eq!(stdout, "pod/x created\n");
    assert!(pod_exists(&env, TENANT, "x").await);
}

#[tokio::test]
async fn audit_mode_writes_our_annotations_into_the_audit_log() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let _install = policy_install(&env, "audit").await;

    let quiet = r#"apiVersion: v1
kind: Pod
metadata:
  name: quiet
  namespace: team-a
spec:
  containers:
    - name: app
      image: evil.io/x:1
      imagePullPolicy: Always
    - name: ok
      image: nginx:1.25
      imagePullPolicy: IfNotPresent
    - name: tool
      image: docker.io/evilcorp/tool:1
      imagePullPolicy: Always
"#;
    let (ok, stdout, stderr) = env.kubectl(&["apply", "-f", "-"], Some(quiet));
    assert!(ok, "audit mode must admit: {stderr}");
    assert_eq!(stdout, "pod/quiet created\n");
    assert_eq!(stderr, "", "audit mode is silent to the tenant");
    assert!(pod_exists(&env, TENANT, "quiet").await);

    let event = pod_create_event(&env, TENANT, "quiet").await;
    assert_eq!(event["responseStatus"]["code"], 201, "{event}");
    assert_eq!(
        our_audit_annotations(&event),
        BTreeMap::from([
            (
                "policy-offences".to_string(),
                concat!(
                    r#"container "app" image "evil.io/x:1" (registry evil.io) is not in policy.allow; "#,
                    r#"container "tool" image "docker.io/evilcorp/tool:1" (registry docker.io) is denied by policy.deny pattern "docker.io/evilcorp""#
                )
                .to_string()
            ),
            ("policy-offence-count".to_string(), "2".to_string()),
        ]),
        "annotations of the create event: {}",
        event["annotations"]
    );

    // A clean Pod leaves no trace of ours.
    let clean = r#"apiVersion: v1
kind: Pod
metadata:
  name: clean
  namespace: team-a
spec:
  containers:
    - name: ok
      image: nginx:1.25
      imagePullPolicy: IfNotPresent
"#;
    let (ok, _, stderr) = env.kubectl(&["apply", "-f", "-"], Some(clean));
    assert!(ok, "{stderr}");
    assert_eq!(stderr, "");
    let event = pod_create_event(&env, TENANT, "clean").await;
    assert_eq!(event["responseStatus"]["code"], 201, "{event}");
    assert_eq!(
        our_audit_annotations(&event),
        BTreeMap::new(),
        "{}",
        event["annotations"]
    );
}

const DRY_NS: &str = "team-dry";

const DRY_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: team-dry
spec:
  containers:
    - name: app
      image: ghcr.io/acme/app:1
      imagePullPolicy: IfNotPresent
"#;

/// Secret creates in `ns` recorded by the audit log (any stage, dry run or not).
fn audited_secret_creates(env: &Envtest, ns: &str) -> Vec<Value> {
    env.audit_events()
        .into_iter()
        .filter(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "secrets"
                && e["objectRef"]["namespace"] == ns
        })
        .collect()
}

/// Events anywhere about `ns` or in it: core/v1 and events.k8s.io/v1, in `ns` itself and,
/// for Events regarding the Namespace object (cluster-scoped, so filed in `default`),
/// across the cluster.
async fn events_about(env: &Envtest, ns: &str) -> Vec<String> {
    let c = env.client.clone();
    let lp = ListParams::default();
    let mut out = Vec::new();
    for e in Api::<CoreEvent>::all(c.clone())
        .list(&lp)
        .await
        .expect("list core/v1 events")
    {
        let o = &e.involved_object;
        if e.metadata.namespace.as_deref() == Some(ns)
            || o.namespace.as_deref() == Some(ns)
            || (o.kind.as_deref() == Some("Namespace") && o.name.as_deref() == Some(ns))
        {
            out.push(format!(
                "core/v1 {:?}/{:?}: {:?} {:?}",
                e.metadata.namespace, e.metadata.name, e.reason, e.message
            ));
        }
    }
    for e in Api::<NewEvent>::all(c)
        .list(&lp)
        .await
        .expect("list events.k8s.io/v1 events")
    {
        let r = e.regarding.clone().unwrap_or_default();
        if e.metadata.namespace.as_deref() == Some(ns)
            || r.namespace.as_deref() == Some(ns)
            || (r.kind.as_deref() == Some("Namespace") && r.name.as_deref() == Some(ns))
        {
            out.push(format!(
                "events.k8s.io/v1 {:?}/{:?}: {:?} {:?}",
                e.metadata.namespace, e.metadata.name, e.reason, e.note
            ));
        }
    }
    out
}

#[tokio::test]
async fn dry_run_shows_the_mutation_and_creates_nothing() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = &env.client;
    // The source of the copies, and a live sync Lease held by another replica, so our
    // controller stays passive: only the admission path could create anything below.
    envtest::create_namespace(c, RELEASE_NS, None).await;
    envtest::create_namespace(c, "registry-creds", None).await;
    envtest::hold_sync_lease_elsewhere(c, RELEASE_NS).await;
    envtest::create_pull_secret(
        c,
        "registry-creds",
        "ghcr-acme-source",
        "ghcr.io",
        "robot:s3cr3t",
    )
    .await;
    let install = Install::new(&env, &install::ghcr_values(), &["--identity", "replica-a"]).await;
    envtest::create_namespace(c, DRY_NS, None).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), DRY_NS);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), DRY_NS);

    let (ok, stdout, stderr) = env.kubectl(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(DRY_POD),
    );
    assert!(
        ok,
        "dry run failed: {stderr}\n--- webhook log ---\n{}",
        install.server().log()
    );
    assert_eq!(stderr, "", "no warnings for a dry run");
    let shown: Value = serde_json::from_str(&stdout).expect("kubectl -o json prints the Pod");
    assert_eq!(shown["kind"], "Pod");
    assert_eq!(
        shown["spec"]["imagePullSecrets"],
        json!([{"name": "ghcr-acme"}]),
        "the dry run shows the injected secret: {shown}"
    );
    assert_eq!(
        shown["spec"]["containers"][0]["imagePullPolicy"], "Always",
        "the dry run shows the forced pull policy"
    );
    assert_eq!(
        shown["metadata"]["annotations"]["pullsecret-injector.io/injected"],
        "ghcr-acme"
    );

    // Nothing appears, during a bounded grace period (an Event is published in the
    // background, so "not yet" right after the request is not enough).
    let grace = Instant::now() + Duration::from_secs(3);
    loop {
        assert!(
            pods.get_opt("web").await.unwrap().is_none(),
            "dry run created the Pod"
        );
        assert!(
            secrets.get_opt("ghcr-acme").await.unwrap().is_none(),
            "dry run created the managed Secret copy\n--- webhook log ---\n{}",
            install.server().log()
        );
        let events = events_about(&env, DRY_NS).await;
        assert!(events.is_empty(), "dry run produced Events: {events:#?}");
        let creates = audited_secret_creates(&env, DRY_NS);
        assert!(
            creates.is_empty(),
            "the audit log shows Secret creates in {DRY_NS} after a dry run: {creates:#?}"
        );
        if Instant::now() > grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no Secret at all in {DRY_NS}"
    );

    // Contrast: the same manifest for real creates the copy before the Pod is admitted,
    // its Secret create is audited as ours, and its Event is filed where we looked.
    let (ok, stdout, stderr) = env.kubectl(&["create", "-f", "-"], Some(DRY_POD));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "pod/web created\n");
    let copy = secrets
        .get_opt("ghcr-acme")
        .await
        .unwrap()
        .expect("a real create delivers the copy before the Pod exists");
    assert_eq!(
        copy.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    let pod = pods.get("web").await.expect("the Pod exists");
    assert_eq!(
        pod.spec.unwrap().image_pull_secrets.unwrap()[0].name,
        "ghcr-acme"
    );
    let creates = envtest::eventually(
        Duration::from_secs(10),
        "the copy's create in the audit log",
        || async {
            let v: Vec<Value> = audited_secret_creates(&env, DRY_NS)
                .into_iter()
                .filter(|e| e["stage"] == "ResponseComplete")
                .collect();
            (!v.is_empty()).then_some(v)
        },
    )
    .await;
    assert_eq!(creates.len(), 1, "{creates:#?}");
    assert_eq!(
        creates[0]["user"]["username"],
        format!("system:serviceaccount:{RELEASE_NS}:{}", install::FULLNAME)
    );
    assert_eq!(creates[0]["objectRef"]["name"], "ghcr-acme");
    assert_eq!(creates[0]["responseStatus"]["code"], 201);
    let events = envtest::eventually(
        Duration::from_secs(10),
        "the PullSecretCopied Event of the real create",
        || async {
            let e = events_about(&env, DRY_NS).await;
            e.iter()
                .any(|e| e.contains("PullSecretCopied"))
                .then_some(e)
        },
    )
    .await;
    assert!(!events.is_empty());
}
