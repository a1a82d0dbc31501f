//! The chart's own webhook configurations, as a real API server (k8s 1.37, see
//! `tests/common/envtest.rs`) applies them to a real process of ours (the chart installed
//! as far as loopback allows, see `tests/common/install.rs`).
//!
//! What it proves, each claim shown twice: by what happened to the Pod (mutated, denied,
//! or admitted untouched) and by our process's own request counters (per endpoint,
//! operation and outcome), so "not sent" is told apart from "sent and let through":
//!
//! - `rules`: Pod CREATE goes to both webhooks; a Pod label UPDATE reaches neither (the
//!   chart's `skip-updates-without-new-images` matchCondition), an image UPDATE goes to
//!   `/validate` (and is denied); `pods/ephemeralcontainers` UPDATE goes to both; DELETE
//!   to neither.
//! - `namespaceSelector`: the release namespace and kube-system reach neither webhook; a
//!   namespace labelled `pullsecret-injector.io/inject: disabled` and an exact name from
//!   `namespaces.exclude` skip `/mutate` but not `/validate`; a glob from
//!   `namespaces.exclude` is not in the selector (our process skips it itself); an exact
//!   `policy.exemptNamespaces` name skips `/validate` only.
//! - `objectSelector` (from `webhook.objectSelector`): a labelled Pod skips `/mutate`, and
//!   never `/validate` (tenants label their own Pods).
//! - CEL `matchConditions`: mirror Pods and Pods created by node users skip both webhooks,
//!   while the same Pods from a normal user with the same RBAC are mutated or denied.
//! - `failurePolicy` with the default values (mutating `Ignore`, validating `Fail` in
//!   enforce mode): with the process down, Pods still get created, unmutated, where only
//!   the mutating webhook applies, and are refused where the validating one does; once the
//!   process is back (same address, API server not restarted) both recover.
//!
//! Run with `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test
//! e2e_chart_webhooks`; without it each test prints a skip notice and passes (under
//! `CI=true` it fails instead).

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use envtest::Envtest;
use install::{Install, RELEASE_NS};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// Matched by the `acme` registry entry (secret `acme-pull`, `alwaysPull`) and allowed.
const GOOD: &str = "ghcr.io/acme/app:1";
/// Denied by `policy.deny`.
const EVIL: &str = "docker.io/evilcorp/miner:1";
const SECRET: &str = "acme-pull";
const MUTATE_HOOK: &str = "mutate.pullsecret-injector.io";
const VALIDATE_HOOK: &str = "validate.pullsecret-injector.io";
/// Our denial text for `EVIL` (src/admission/validate.rs).
const DENIED_BY_US: &str = "is denied by policy.deny pattern \"docker.io/evilcorp\"";
/// The label `webhook.objectSelector` opts Pods out of injection with.
const SKIP_LABEL: &str = "example.com/no-injection";
const NODE_USER: &str = "system:node:node-1";

fn policy() -> Value {
    json!({
        "mode": "enforce",
        "allow": ["ghcr.io/acme", "registry.k8s.io"],
        "deny": ["docker.io/evilcorp"],
        "exemptNamespaces": ["ops"]
    })
}

fn registries() -> Value {
    json!([{"name": "acme", "match": ["ghcr.io/acme"], "secret": SECRET, "alwaysPull": true}])
}

// ---------------------------------------------------------------------------------------
// Pods

fn pod(name: &str, image: &str, labels: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}]}
    }))
    .unwrap()
}

fn plain(name: &str, image: &str) -> Pod {
    pod(name, image, json!({}), json!({}))
}

fn pods(c: &Client, ns: &str) -> Api<Pod> {
    Api::namespaced(c.clone(), ns)
}

async fn create(c: &Client, ns: &str, p: &Pod) -> Result<Pod, kube::Error> {
    pods(c, ns).create(&PostParams::default(), p).await
}

fn secrets_of(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .map(|l| l.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

fn injected_annotation(p: &Pod) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()?
        .get("pullsecret-injector.io/injected")
        .map(String::as_str)
}

/// The Pod as `/mutate` leaves it: secret added, pull policy forced, annotation recorded.
fn assert_mutated(p: &Pod, what: &str) {
    assert_eq!(secrets_of(p), [SECRET], "{what}: secret injected");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.image_pull_policy.as_deref(),
        Some("Always"),
        "{what}: pull policy forced"
    );
    assert_eq!(injected_annotation(p), Some(SECRET), "{what}: annotation");
}

/// The Pod exactly as submitted: no webhook patch applied.
fn assert_untouched(p: &Pod, what: &str) {
    assert!(secrets_of(p).is_empty(), "{what}: no secret expected");
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.image_pull_policy.as_deref(),
        Some("IfNotPresent"),
        "{what}: pull policy left alone"
    );
    assert_eq!(injected_annotation(p), None, "{what}: no annotation");
}

/// The API server's `Status` of a refused request.
fn refusal<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.message.clone()),
        other => panic!("{what}: expected the API server to refuse, got {other:?}"),
    }
}

/// Refused by our `/validate`, with our message, as the API server relays it.
fn assert_denied_by_us<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    let (code, msg) = refusal(r, what);
    assert_eq!(code, 403, "{what}: {msg}");
    assert!(
        msg.contains(&format!(
            "admission webhook \"{VALIDATE_HOOK}\" denied the request"
        )) && msg.contains(DENIED_BY_US),
        "{what}: unexpected message {msg:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Our process's request counters

/// `pullsecret_injector_admission_requests_total` of the running process, by
/// (endpoint, operation, outcome), plus the per-endpoint totals `Install::requests` reads.
#[derive(Debug, Clone)]
struct Seen {
    by_label: BTreeMap<(String, String, String), f64>,
    mutate: f64,
    validate: f64,
}

fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    let start = format!("{key}=\"");
    labels
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("", |(v, _)| v)
}

async fn seen(install: &Install) -> Seen {
    let text = install.metrics().await;
    let mut by_label = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pullsecret_injector_admission_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").expect("sample line");
        let key = (
            label(labels, "endpoint").to_string(),
            label(labels, "operation").to_string(),
            label(labels, "outcome").to_string(),
        );
        *by_label.entry(key).or_insert(0.0) += value.trim().parse::<f64>().expect("value");
    }
    Seen {
        by_label,
        mutate: install.requests("mutate").await,
        validate: install.requests("validate").await,
    }
}

/// Asserts that, since `before`, our process answered exactly the reviews in `expected`
/// (`(endpoint, operation, outcome)`, each once) and nothing else; returns the new reading.
/// The API server calls webhooks inside the request, so once a request has returned its
/// reviews are counted.
async fn expect_calls(
    install: &Install,
    before: &Seen,
    what: &str,
    expected: &[(&str, &str, &str)],
) -> Seen {
    let now = seen(install).await;
    let mut moved: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (k, v) in &now.by_label {
        let d = v - before.by_label.get(k).copied().unwrap_or(0.0);
        if d != 0.0 {
            moved.insert(k.clone(), d);
        }
    }
    let mut want: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for (e, o, r) in expected {
        *want
            .entry((e.to_string(), o.to_string(), r.to_string()))
            .or_insert(0.0) += 1.0;
    }
    assert_eq!(
        moved, want,
        "{what}: reviews our process answered (endpoint, operation, outcome)"
    );
    let count = |ep: &str| expected.iter().filter(|(e, _, _)| *e == ep).count() as f64;
    assert_eq!(
        now.mutate - before.mutate,
        count("mutate"),
        "{what}: /mutate requests"
    );
    assert_eq!(
        now.validate - before.validate,
        count("validate"),
        "{what}: /validate requests"
    );
    now
}

// ---------------------------------------------------------------------------------------
// Cluster setup

async fn namespace(c: &Client, name: &str, labels: &[(&str, &str)]) {
    let labels = (!labels.is_empty()).then(|| {
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    envtest::create_namespace(c, name, labels).await;
}

/// kube-system exists from the start; its `default` ServiceAccount comes with the
/// service-account controller.
async fn wait_default_sa(c: &Client, ns: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    envtest::eventually(
        Duration::from_secs(30),
        &format!("default ServiceAccount in {ns}"),
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
}

/// Lets `users` create, read and update Pods everywhere (the same grant for each);
/// `user_client` waits for RBAC to catch up.
async fn grant_pods(env: &Envtest, users: &[&str]) {
    let c = &env.client;
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "e2e-pod-writer"},
        "rules": [{"apiGroups": [""], "resources": ["pods"],
                   "verbs": ["create", "get", "list", "patch", "update"]}]
    }))
    .unwrap();
    Api::<ClusterRole>::all(c.clone())
        .create(&PostParams::default(), &role)
        .await
        .expect("create ClusterRole");
    let subjects: Vec<Value> = users
        .iter()
        .map(|u| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": u}))
        .collect();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "e2e-pod-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "e2e-pod-writer"},
        "subjects": subjects
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(c.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("create ClusterRoleBinding");
}

/// A client for `user` (in `group`) once RBAC lets it list Pods in `ns` (listing reaches
/// no webhook, so the counters stay still while we wait).
async fn user_client(env: &Envtest, user: &str, group: Option<&str>, ns: &str) -> Client {
    let (client, _) = env.client_as(user, group).await;
    let api = pods(&client, ns);
    envtest::eventually(
        Duration::from_secs(30),
        &format!("RBAC lets {user} list pods in {ns}"),
        || async { api.list(&ListParams::default()).await.ok() },
    )
    .await;
    client
}

/// The audit event of the Pod CREATE that made `name` in `ns`.
fn audit_create(env: &Envtest, ns: &str, name: &str) -> Value {
    env.audit_events()
        .into_iter()
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["subresource"].is_null()
                && e["objectRef"]["namespace"] == ns
                && e["objectRef"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no audit event for creating pod {ns}/{name}"))
}

fn hook_field<'a>(conf: &'a Value, field: &str) -> &'a Value {
    &conf["webhooks"][0][field]
}

// ---------------------------------------------------------------------------------------
// 1. rules, namespaceSelector, objectSelector, matchConditions

#[tokio::test]
async fn the_api_server_honours_the_charts_rules_selectors_and_match_conditions() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let values = json!({
        "registries": registries(),
        // "legacy" is an exact name (goes into the namespaceSelector); "old-*" a glob
        // (only our process knows it).
        "namespaces": {"exclude": ["kube-system", "legacy", "old-*"]},
        "policy": policy(),
        "webhook": {"objectSelector": {"matchExpressions": [
            {"key": SKIP_LABEL, "operator": "DoesNotExist"}
        ]}}
    });
    let install = Install::new(&env, &values, &[]).await;
    let validating = install
        .validating
        .as_ref()
        .expect("a policy renders the ValidatingWebhookConfiguration");
    assert_eq!(hook_field(validating, "failurePolicy"), "Fail");
    assert_eq!(hook_field(&install.mutating, "name"), MUTATE_HOOK);
    assert_eq!(hook_field(validating, "name"), VALIDATE_HOOK);

    let c = &env.client;
    for (ns, labels) in [
        ("team-a", &[][..]),
        (
            "optout",
            &[("pullsecret-injector.io/inject", "disabled")][..],
        ),
        ("legacy", &[][..]),
        ("old-app", &[][..]),
        ("ops", &[][..]),
    ] {
        namespace(c, ns, labels).await;
    }
    wait_default_sa(c, "kube-system").await;
    grant_pods(&env, &[NODE_USER, "alice"]).await;
    let node = user_client(&env, NODE_USER, Some("system:nodes"), "team-a").await;
    let alice = user_client(&env, "alice", None, "team-a").await;

    let mut s = seen(&install).await;
    let both_created = [
        ("mutate", "CREATE", "patched"),
        ("validate", "CREATE", "allowed"),
    ];
    let both_denied = [
        ("mutate", "CREATE", "allowed"),
        ("validate", "CREATE", "denied"),
    ];

    // --- rules -------------------------------------------------------------------------
    let web = create(c, "team-a", &plain("web", GOOD)).await.unwrap();
    assert_mutated(&web, "CREATE in team-a");
    s = expect_calls(&install, &s, "CREATE in team-a", &both_created).await;

    assert_denied_by_us(
        create(c, "team-a", &plain("evil", EVIL)).await,
        "CREATE of a denied image",
    );
    s = expect_calls(&install, &s, "CREATE of a denied image", &both_denied).await;

    // Label UPDATE: no image changes, so the chart's matchCondition keeps it from both
    // webhooks (a webhook outage can never block it).
    let relabelled = pods(c, "team-a")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
        )
        .await
        .expect("label update admitted");
    assert_eq!(
        relabelled.metadata.labels.as_ref().unwrap()["tier"],
        "front"
    );
    assert_mutated(&relabelled, "after a label update");
    s = expect_calls(&install, &s, "label UPDATE", &[]).await;

    // Image UPDATE to a denied image: /validate judges the new image.
    assert_denied_by_us(
        pods(c, "team-a")
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Strategic(
                    json!({"spec": {"containers": [{"name": "app", "image": EVIL}]}}),
                ),
            )
            .await,
        "image UPDATE to a denied image",
    );
    s = expect_calls(
        &install,
        &s,
        "image UPDATE",
        &[("validate", "UPDATE", "denied")],
    )
    .await;

    // pods/ephemeralcontainers UPDATE (kubectl debug): both webhooks.
    let debug = |name: &str, image: &str| {
        Patch::Strategic(json!({"spec": {"ephemeralContainers": [
            {"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}
        ]}}))
    };
    let debugged = pods(c, "team-a")
        .patch_ephemeral_containers("web", &PatchParams::default(), &debug("debug", GOOD))
        .await
        .expect("ephemeral container admitted");
    let ephemeral = debugged.spec.unwrap().ephemeral_containers.unwrap();
    assert_eq!(
        ephemeral[0].image_pull_policy.as_deref(),
        Some("Always"),
        "the new ephemeral container's pull policy is forced"
    );
    s = expect_calls(
        &install,
        &s,
        "ephemeralcontainers UPDATE",
        &[
            ("mutate", "UPDATE", "patched"),
            ("validate", "UPDATE", "allowed"),
        ],
    )
    .await;
    assert_denied_by_us(
        pods(c, "team-a")
            .patch_ephemeral_containers("web", &PatchParams::default(), &debug("evil", EVIL))
            .await,
        "ephemeral container with a denied image",
    );
    s = expect_calls(
        &install,
        &s,
        "denied ephemeralcontainers UPDATE",
        &[
            ("mutate", "UPDATE", "allowed"),
            ("validate", "UPDATE", "denied"),
        ],
    )
    .await;

    // DELETE: in neither webhook's rules.
    pods(c, "team-a")
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete");
    s = expect_calls(&install, &s, "DELETE", &[]).await;

    // --- namespaceSelector -------------------------------------------------------------
    // The release namespace and kube-system: neither webhook, so a denied image is
    // admitted and nothing is injected.
    for ns in [RELEASE_NS, "kube-system"] {
        for (name, image) in [("good", GOOD), ("evil", EVIL)] {
            let p = create(c, ns, &plain(name, image))
                .await
                .unwrap_or_else(|e| panic!("{name} pod in {ns} admitted: {e}"));
            assert_untouched(&p, &format!("{name} pod in {ns}"));
        }
        s = expect_calls(&install, &s, &format!("CREATEs in {ns}"), &[]).await;
    }

    // Opted out by label, or an exact name in namespaces.exclude: no injection, but the
    // policy still applies.
    for ns in ["optout", "legacy"] {
        let p = create(c, ns, &plain("good", GOOD)).await.unwrap();
        assert_untouched(&p, &format!("good pod in {ns}"));
        s = expect_calls(
            &install,
            &s,
            &format!("good CREATE in {ns}"),
            &[("validate", "CREATE", "allowed")],
        )
        .await;
        assert_denied_by_us(
            create(c, ns, &plain("evil", EVIL)).await,
            &format!("evil pod in {ns}"),
        );
        s = expect_calls(
            &install,
            &s,
            &format!("evil CREATE in {ns}"),
            &[("validate", "CREATE", "denied")],
        )
        .await;
    }

    // A glob in namespaces.exclude cannot be a namespaceSelector value: the API server
    // calls /mutate, which leaves the Pod alone itself.
    let p = create(c, "old-app", &plain("good", GOOD)).await.unwrap();
    assert_untouched(&p, "good pod in old-app");
    s = expect_calls(
        &install,
        &s,
        "good CREATE in old-app",
        &[
            ("mutate", "CREATE", "allowed"),
            ("validate", "CREATE", "allowed"),
        ],
    )
    .await;

    // policy.exemptNamespaces (exact): /validate is not called, /mutate is.
    let p = create(c, "ops", &plain("evil", EVIL))
        .await
        .expect("a denied image is admitted in an exempt namespace");
    assert_untouched(&p, "evil pod in ops");
    let p = create(c, "ops", &plain("good", GOOD)).await.unwrap();
    assert_mutated(&p, "good pod in ops");
    s = expect_calls(
        &install,
        &s,
        "CREATEs in ops",
        &[
            ("mutate", "CREATE", "allowed"),
            ("mutate", "CREATE", "patched"),
        ],
    )
    .await;

    // --- objectSelector ----------------------------------------------------------------
    let opted_out =
        |name: &str, image: &str| pod(name, image, json!({SKIP_LABEL: "yes"}), json!({}));
    let p = create(c, "team-a", &opted_out("labelled", GOOD))
        .await
        .unwrap();
    assert_untouched(&p, "labelled pod");
    s = expect_calls(
        &install,
        &s,
        "labelled pod",
        &[("validate", "CREATE", "allowed")],
    )
    .await;
    assert_denied_by_us(
        create(c, "team-a", &opted_out("labelled-evil", EVIL)).await,
        "labelled pod with a denied image",
    );
    s = expect_calls(
        &install,
        &s,
        "labelled pod with a denied image",
        &[("validate", "CREATE", "denied")],
    )
    .await;
    let p = create(c, "team-a", &plain("unlabelled", GOOD))
        .await
        .unwrap();
    assert_mutated(&p, "unlabelled pod");
    s = expect_calls(&install, &s, "unlabelled pod", &both_created).await;

    // --- matchConditions: mirror Pods --------------------------------------------------
    // As the kubelet makes them: the annotation, and bound to its node (the API server
    // refuses a mirror Pod without spec.nodeName).
    let mirror = |name: &str, image: &str| {
        let mut p = pod(
            name,
            image,
            json!({}),
            json!({"kubernetes.io/config.mirror": "0123456789abcdef"}),
        );
        p.spec.as_mut().unwrap().node_name = Some("node-1".into());
        p
    };
    let p = create(c, "team-a", &mirror("mirror-good", GOOD))
        .await
        .expect("mirror pod admitted");
    assert_untouched(&p, "mirror pod");
    let p = create(c, "team-a", &mirror("mirror-evil", EVIL))
        .await
        .expect("mirror pod with a denied image admitted");
    assert_untouched(&p, "mirror pod with a denied image");
    s = expect_calls(&install, &s, "mirror pod CREATEs", &[]).await;
    // The condition reads the object, so it holds on UPDATE too.
    pods(c, "team-a")
        .patch(
            "mirror-evil",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "x"}}})),
        )
        .await
        .expect("mirror pod label update");
    s = expect_calls(&install, &s, "mirror pod UPDATE", &[]).await;

    // --- matchConditions: node users, against a normal user with the same RBAC ---------
    let p = create(&node, "team-a", &plain("node-good", GOOD))
        .await
        .expect("node user's pod admitted");
    assert_untouched(&p, "node user's pod");
    let p = create(&node, "team-a", &plain("node-evil", EVIL))
        .await
        .expect("node user's pod with a denied image admitted");
    assert_untouched(&p, "node user's pod with a denied image");
    s = expect_calls(&install, &s, "node user's CREATEs", &[]).await;

    let p = create(&alice, "team-a", &plain("alice-good", GOOD))
        .await
        .unwrap();
    assert_mutated(&p, "alice's pod");
    s = expect_calls(&install, &s, "alice's CREATE", &both_created).await;
    assert_denied_by_us(
        create(&alice, "team-a", &plain("alice-evil", EVIL)).await,
        "alice's pod with a denied image",
    );
    s = expect_calls(&install, &s, "alice's denied CREATE", &both_denied).await;

    // The condition is about who asks: alice changing the node's Pod's image reaches
    // /validate, which allows it (the new image is allowed). A label-only UPDATE would
    // not reach it at all (skip-updates-without-new-images).
    pods(&alice, "team-a")
        .patch(
            "node-evil",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "app", "image": GOOD}]}})),
        )
        .await
        .expect("image update of the node's pod");
    expect_calls(
        &install,
        &s,
        "alice relabels the node's pod",
        &[("validate", "UPDATE", "allowed")],
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. failurePolicy, for real

#[tokio::test]
async fn failure_policies_with_the_process_down_and_recovery_when_it_returns() {
    let Some(env) = envtest::start().await else {
        return;
    };
    // Default webhook values; only the registries and a policy (enforce).
    let values = json!({"registries": registries(), "policy": policy()});
    let mut install = Install::new(&env, &values, &[]).await;
    assert_eq!(hook_field(&install.mutating, "failurePolicy"), "Ignore");
    let validating = install.validating.as_ref().expect("validating webhook");
    assert_eq!(
        hook_field(validating, "failurePolicy"),
        "Fail",
        "enforce mode defaults the validating webhook to Fail"
    );
    let timeout = hook_field(validating, "timeoutSeconds")
        .as_u64()
        .expect("timeoutSeconds");

    let c = &env.client;
    namespace(c, "team-a", &[]).await;
    namespace(c, "ops", &[]).await; // policy.exemptNamespaces: only /mutate covers it
    let p = create(c, "team-a", &plain("before", GOOD)).await.unwrap();
    assert_mutated(&p, "while running");

    install.stop();

    // Only the mutating webhook covers ops: Ignore lets the Pod in, unmutated, and the
    // API server records that it failed open.
    let started = Instant::now();
    let p = create(c, "ops", &plain("down", GOOD))
        .await
        .expect("Ignore: the pod is created while the webhook is down");
    assert_untouched(&p, "pod created while the webhook is down");
    let audit = audit_create(&env, "ops", "down");
    let failed_open: Vec<&str> = audit["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| k.starts_with("failed-open.mutation.webhook.admission.k8s.io/"))
                .filter_map(|(_, v)| v.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        failed_open,
        [MUTATE_HOOK],
        "the API server tried /mutate and failed open: {audit}"
    );

    // team-a: the validating webhook (Fail) refuses every Pod, good or bad.
    for (name, image) in [("down-good", GOOD), ("down-evil", EVIL)] {
        let (code, msg) = refusal(
            create(c, "team-a", &plain(name, image)).await,
            "Fail while down",
        );
        assert!(
            msg.contains(&format!("failed calling webhook \"{VALIDATE_HOOK}\"")),
            "{name}: the refusal names the validating webhook: {msg:?}"
        );
        assert!(
            !msg.contains(DENIED_BY_US),
            "{name}: not our denial, a failed call: {msg:?}"
        );
        assert_eq!(code, 500, "{name}: {msg}");
        assert!(
            pods(c, "team-a").get_opt(name).await.unwrap().is_none(),
            "{name} was not created"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3 * timeout),
        "failed calls come back within the webhook timeouts ({:?})",
        started.elapsed()
    );

    install.start();

    // Recovery: same address, same API server; the next calls reach the new process.
    let p = envtest::eventually(
        Duration::from_secs(30),
        "a pod in team-a is admitted and mutated again",
        || async { create(c, "team-a", &plain("after", GOOD)).await.ok() },
    )
    .await;
    assert_mutated(&p, "after the restart");
    let p = create(c, "ops", &plain("after", GOOD)).await.unwrap();
    assert_mutated(&p, "ops after the restart");
    assert_denied_by_us(
        create(c, "team-a", &plain("after-evil", EVIL)).await,
        "a denied image after the restart",
    );
    let s = seen(&install).await;
    assert!(
        s.mutate >= 3.0 && s.validate >= 2.0,
        "the restarted process answered the reviews: {s:?}"
    );
}
