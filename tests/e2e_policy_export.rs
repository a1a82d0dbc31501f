//! `export-policies` proven equal to the webhook through real API servers: for each
//! config, two control planes — one with the chart's webhooks (our process), one with
//! only the exported MutatingAdmissionPolicy and ValidatingAdmissionPolicies — receive
//! the same corpus of Pods, each in a fresh namespace of the same name and labels. The
//! stored Pods must be equal field for field, and the denials and warnings equal in
//! text once the API server's own prefixes (which name the webhook or the policy) are
//! removed. Run with `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test
//! e2e_policy_export`.

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use envtest::Envtest;
use futures_util::StreamExt;
use install::Install;
use kube::Client;
use kube::discovery::Discovery;
use serde_json::{Value, json};

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Registries exercising every matching rule: globs, ports, path boundaries, Docker Hub
/// short names, IPv6, namespace include/exclude and label selectors, `alwaysPull`, and
/// two entries sharing a secret.
fn registries() -> Value {
    json!([
        {"name": "tcr", "match": ["*.tencentcloudcr.com"], "secret": "tcr-pull",
         "namespaces": {"include": ["team-*", "warn-*", "audit-*", "exempt-*", "labelled-*"],
                        "exclude": ["team-legacy*"]}},
        {"name": "ghcr", "match": ["ghcr.io/acme"], "secret": "ghcr-acme", "alwaysPull": true},
        {"name": "hub", "match": ["docker.io/myorg"], "secret": "hub-pull"},
        {"name": "local", "match": ["localhost:5000", "[::1]:5000"], "secret": "local-pull"},
        {"name": "corp", "match": ["registry.corp.example:8443/team"], "secret": "corp-pull",
         "namespaces": {"selector": {"matchLabels": {"registry-access": "granted"},
                                     "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["frozen"]}]}}},
        {"name": "quay", "match": ["quay.io/acme"], "secret": "ghcr-acme"},
        {"name": "glob", "match": ["reg-*.example.com"], "secret": "glob-pull"}
    ])
}

fn policy(allow: bool, require: &str) -> Value {
    let mut p = json!({
        "mode": "enforce",
        "deny": ["ghcr.io/evil", "quay.io/acme/bad"],
        "requireAlwaysPull": require,
        "exemptNamespaces": ["exempt-*"],
        "overrides": [
            {"namespaces": ["warn-*"], "mode": "warn"},
            {"namespaces": ["audit-*"], "mode": "audit"}
        ]
    });
    if allow {
        p["allow"] = json!([
            "*.tencentcloudcr.com",
            "ghcr.io",
            "docker.io/library",
            "docker.io/myorg",
            "localhost:5000",
            "[::1]:5000",
            "registry.corp.example:8443",
            "quay.io",
            "reg-*.example.com",
            "registry.k8s.io"
        ]);
    }
    p
}

fn values(always_pull: &str, policy: Value) -> Value {
    json!({
        "registries": registries(),
        "namespaces": {"exclude": ["kube-system", "excluded-*"]},
        "alwaysPullImages": always_pull,
        "policy": policy,
        "webhook": {"failurePolicy": "Fail"},
        "validatingWebhook": {"failurePolicy": "Fail"}
    })
}

/// Images covering the reference grammar and every pattern kind, valid and not.
fn images() -> Vec<String> {
    let mut v: Vec<String> = [
        "demo.tencentcloudcr.com/app:1",
        "DEMO.TencentCloudCR.com/app:1",
        "x.y.tencentcloudcr.com/app",
        "tencentcloudcr.com/app",
        "ghcr.io/acme/app:1.2",
        "ghcr.io/acme",
        "ghcr.io/acme-other/app",
        "ghcr.io:443/acme/app",
        "ghcr.io/evil/x",
        "nginx",
        "nginx:latest",
        "library/nginx:1.27",
        "docker.io/nginx",
        "index.docker.io/library/nginx",
        "myorg/app:2",
        "docker.io/myorg/app",
        "registry-1.docker.io/myorg/app",
        "localhost:5000/app",
        "localhost/app",
        "[::1]:5000/app",
        "[::1]/app",
        "localhost:5001/app",
        "registry.corp.example:8443/team/app",
        "registry.corp.example:8443/teams/app",
        "registry.corp.example/team/app",
        "quay.io/acme/app",
        "quay.io/acme/bad/x",
        "reg-eu.example.com/x",
        "reg.example.com/x",
        "registry.k8s.io/pause:3.10",
        "evil.io/x",
        "registry.io.evil.com/x",
        // invalid references: each of `image::parse`'s errors
        "Nginx",
        "MyUser/app",
        "ghcr.io/acme/App",
        "my_reg.io/app",
        "ghcr.io/acme/app:-bad",
        "ghcr.io/acme//app",
        "ghcr.io/acme/app@sha256:abc",
        "ghcr.io/acme/app@md5:0123456789abcdef0123456789abcdef",
        "ghcr.io/acme/a\"b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("ghcr.io/acme/app@sha256:{HEX}"));
    v.push(format!("ghcr.io/acme/app:1@sha256:{HEX}"));
    v.push(HEX.to_string());
    v.push(format!("docker.io/{}", "a".repeat(250)));
    v
}

struct Case {
    /// Namespace prefix (which decides scopes and rule sets) and its labels.
    kind: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    pod: Value,
    /// An ephemeral container added after creation (`pods/ephemeralcontainers`).
    ephemeral: Option<Value>,
}

fn container(name: &str, image: &str, policy: Option<&str>) -> Value {
    let mut c = json!({"name": name, "image": image});
    if let Some(p) = policy {
        c["imagePullPolicy"] = json!(p);
    }
    c
}

fn pod_of(spec: Value, annotations: Option<Value>) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": spec,
    });
    // No token volume: its name has a random suffix the comparison would trip on.
    p["spec"]["automountServiceAccountToken"] = json!(false);
    if let Some(a) = annotations {
        p["metadata"]["annotations"] = a;
    }
    p
}

fn simple(image: &str, policy: Option<&str>) -> Value {
    pod_of(
        json!({"containers": [container("app", image, policy)]}),
        None,
    )
}

fn corpus(full: bool) -> Vec<Case> {
    let mut cases = Vec::new();
    let kinds: &[&str] = if full {
        &["team", "warn", "audit"]
    } else {
        &["team"]
    };
    for kind in kinds {
        for img in images() {
            cases.push(Case {
                kind,
                labels: vec![],
                pod: simple(&img, None),
                ephemeral: None,
            });
        }
    }
    let shaped = |kind: &'static str, pod: Value| Case {
        kind,
        labels: vec![],
        pod,
        ephemeral: None,
    };
    // Every site kind in one pod, existing secrets kept and not repeated.
    cases.push(shaped(
        "team",
        pod_of(
            json!({
                "initContainers": [container("init", "ghcr.io/acme/init:1", Some("IfNotPresent"))],
                "containers": [
                    container("a", "demo.tencentcloudcr.com/a:1", Some("Always")),
                    container("b", "quay.io/acme/b:1", Some("Never")),
                    container("c", "myorg/c", None),
                ],
                "imagePullSecrets": [{"name": "tcr-pull"}, {"name": "unrelated"}],
                "volumes": [
                    {"name": "data", "image": {"reference": "ghcr.io/acme/data:1", "pullPolicy": "IfNotPresent"}},
                    {"name": "models", "image": {"reference": "evil.io/models:1"}},
                    {"name": "tmp", "emptyDir": {}}
                ]
            }),
            Some(json!({"pullsecret-injector.io/injected": "old,tcr-pull", "team": "a"})),
        ),
    ));
    // Opted out, a mirror-pod annotation, an excluded namespace, an exempt one.
    let opt_out = json!({"pullsecret-injector.io/inject": "false"});
    cases.push(shaped(
        "team",
        pod_of(
            json!({"containers": [container("app", "ghcr.io/acme/app", None)]}),
            Some(opt_out),
        ),
    ));
    cases.push(shaped(
        "team",
        pod_of(
            json!({"containers": [container("app", "ghcr.io/acme/app", None)]}),
            Some(json!({"pullsecret-injector.io/inject": "true"})),
        ),
    ));
    for kind in ["excluded", "exempt", "team-legacy", "other"] {
        for img in [
            "ghcr.io/acme/app",
            "demo.tencentcloudcr.com/app",
            "evil.io/x",
            "Nginx",
        ] {
            cases.push(shaped(kind, simple(img, None)));
        }
    }
    // A namespace label selector, held and not.
    for labels in [
        vec![("registry-access", "granted")],
        vec![("registry-access", "granted"), ("tier", "frozen")],
        vec![("registry-access", "denied")],
        vec![],
    ] {
        cases.push(Case {
            kind: "labelled",
            labels,
            pod: simple("registry.corp.example:8443/team/app", None),
            ephemeral: None,
        });
    }
    // Many offences and warnings: the caps on both.
    let many: Vec<Value> = (0..14)
        .map(|i| container(&format!("c{i}"), &format!("evil{i}.io/x"), None))
        .collect();
    for kind in ["team", "warn"] {
        cases.push(shaped(kind, pod_of(json!({"containers": many}), None)));
    }
    let bad: Vec<Value> = (0..13)
        .map(|i| container(&format!("c{i}"), &format!("Bad{i}"), None))
        .collect();
    cases.push(shaped("team", pod_of(json!({"containers": bad}), None)));
    // Ephemeral containers added later: forced to Always, warned about missing secrets.
    for (kind, img) in [
        ("team", "ghcr.io/acme/debug:1"),
        ("team", "docker.io/myorg/debug"),
        ("warn", "evil.io/debug"),
        ("team", "Debug"),
    ] {
        cases.push(Case {
            kind,
            labels: vec![],
            pod: simple("registry.k8s.io/pause:3.10", Some("Always")),
            ephemeral: Some(json!({
                "name": "debugger", "image": img, "targetContainerName": "app"
            })),
        });
    }
    cases
}

/// The stored object, or the refusal's status code and (unframed) message.
type Answer = Result<Value, (u16, String)>;

/// What the API server answered and stored for one case.
#[derive(Debug)]
struct Outcome {
    created: Answer,
    warnings: Warnings,
    ephemeral: Option<(Answer, Warnings)>,
}

/// Warnings without the API server's framing, sorted (webhooks and policies are called in
/// different orders), and whether the API server cut them.
#[derive(Debug, PartialEq)]
struct Warnings {
    texts: Vec<String>,
    /// The API server keeps 4,096 characters of warnings per response and, past that,
    /// cuts each to 256 and drops the rest (`endpoints/filters/warning.go`). A policy's
    /// warnings carry its name, so fewer of them fit.
    cut: bool,
}

impl Warnings {
    /// Equal; or, where the policy side was cut, each of its warnings the start of one of
    /// the webhook's (the framing took the rest).
    fn same(webhook: &Warnings, policy: &Warnings) -> bool {
        webhook.texts == policy.texts
            || (policy.cut
                && policy
                    .texts
                    .iter()
                    .all(|p| webhook.texts.iter().any(|w| w.starts_with(p.as_str()))))
    }
}

impl Outcome {
    fn same(webhook: &Outcome, policy: &Outcome) -> bool {
        webhook.created == policy.created
            && Warnings::same(&webhook.warnings, &policy.warnings)
            && match (&webhook.ephemeral, &policy.ephemeral) {
                (None, None) => true,
                (Some((a, wa)), Some((b, wb))) => a == b && Warnings::same(wa, wb),
                _ => false,
            }
    }
}

/// The API server's `Warning: 299 - "text"` header values, unquoted.
fn warning_texts(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("warning")
        .iter()
        // `to_str` refuses anything but visible ASCII; warnings are UTF-8 (`…`).
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|v| {
            let v = v.strip_prefix("299 - \"").unwrap_or(&v);
            let v = v.strip_suffix('"').unwrap_or(v);
            v.replace("\\\"", "\"").replace("\\\\", "\\")
        })
        .collect()
}

/// Removes the API server's framing, which names the webhook or the policy.
fn unframe(text: &str) -> String {
    // A policy's denial starts `pods "p" is forbidden: `.
    let text = match text.find("ValidatingAdmissionPolicy '") {
        Some(i) if !text.starts_with("Validation failed") => &text[i..],
        _ => text,
    };
    for (start, sep) in [
        ("admission webhook \"", "\" denied the request: "),
        ("ValidatingAdmissionPolicy '", " denied request: "),
        ("Validation failed for ValidatingAdmissionPolicy '", "': "),
    ] {
        if let Some(rest) = text.strip_prefix(start)
            && let Some((_, msg)) = rest.split_once(sep)
        {
            return msg.to_string();
        }
    }
    text.to_string()
}

async fn send(c: &Client, method: &str, uri: &str, body: &Value) -> (Answer, Warnings) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .unwrap();
    let res = c.send(req).await.expect("request");
    let status = res.status().as_u16();
    let framed = warning_texts(res.headers());
    let runes: Vec<usize> = framed.iter().map(|w| w.chars().count()).collect();
    let cut = runes.iter().sum::<usize>() > 4096 - 256 || runes.contains(&256);
    let mut texts: Vec<String> = framed.iter().map(|w| unframe(w)).collect();
    texts.sort();
    let warnings = Warnings { texts, cut };
    let bytes = res.into_body().collect_bytes().await.expect("body");
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status < 300 {
        (Ok(v), warnings)
    } else {
        let msg = v["message"].as_str().unwrap_or_default();
        (Err((status, unframe(msg))), warnings)
    }
}

/// The stored Pod without what the API server makes up per object.
fn comparable(mut pod: Value) -> Value {
    if let Some(m) = pod["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            m.remove(k);
        }
    }
    pod
}

fn namespace_name(i: usize, case: &Case) -> String {
    format!("{}-c{i}", case.kind)
}

async fn prepare_namespaces(c: &Client, cases: &[Case]) {
    futures_util::stream::iter(cases.iter().enumerate())
        .for_each_concurrent(8, |(i, case)| async move {
            let labels: BTreeMap<String, String> = case
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            envtest::create_namespace(c, &namespace_name(i, case), Some(labels)).await;
        })
        .await;
}

async fn run_case(c: &Client, i: usize, case: &Case) -> Outcome {
    let ns = namespace_name(i, case);
    let (created, warnings) = send(
        c,
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods"),
        &case.pod,
    )
    .await;
    let ephemeral = match (&case.ephemeral, &created) {
        (Some(e), Ok(pod)) => {
            let mut pod = pod.clone();
            pod["spec"]["ephemeralContainers"] = json!([e]);
            let (r, w) = send(
                c,
                "PUT",
                &format!("/api/v1/namespaces/{ns}/pods/p/ephemeralcontainers"),
                &pod,
            )
            .await;
            Some((r.map(comparable), w))
        }
        _ => None,
    };
    Outcome {
        created: created.map(comparable),
        warnings,
        ephemeral,
    }
}

async fn run_corpus(c: &Client, cases: &[Case]) -> Vec<Outcome> {
    futures_util::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| run_case(c, i, case))
        .buffered(8)
        .collect()
        .await
}

fn export(config: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let (code, out, err) = support::run_cli(
        &[
            "export-policies",
            "--config",
            path.to_str().unwrap(),
            "-o",
            "json",
        ],
        b"",
    );
    assert_eq!(code, 0, "export-policies failed: {err}");
    let list: Value = serde_json::from_str(&out).expect("a JSON List");
    list["items"].as_array().expect("items").clone()
}

/// Applies the exported objects and waits until the API server enforces them: a probe
/// that each kind of policy changes (injection, an invalid-image warning, a denial, a
/// `warn`-mode warning) in a namespace of its own.
async fn apply_policies(env: &Envtest, objects: &[Value], probes: &Probes) {
    let c = &env.client;
    let discovery = Discovery::new(c.clone()).run().await.expect("discovery");
    for o in objects {
        install::create_object(c, &discovery, "default", o).await;
    }
    envtest::create_namespace(c, "team-probe", None).await;
    envtest::create_namespace(c, "warn-probe", None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let probe = |ns: &str, img: &str| {
            let c = c.clone();
            let ns = ns.to_string();
            let pod = simple(img, None);
            async move {
                send(
                    &c,
                    "POST",
                    &format!("/api/v1/namespaces/{ns}/pods?dryRun=All"),
                    &pod,
                )
                .await
            }
        };
        let (mutated, _) = probe("team-probe", probes.injected).await;
        let injected = mutated
            .as_ref()
            .is_ok_and(|p| p["spec"]["imagePullSecrets"].is_array());
        let (denied, _) = probe("team-probe", probes.denied).await;
        let (warn_result, warned) = probe("warn-probe", "Probe").await;
        let last =
            format!("mutated: {mutated:?}\ndenied: {denied:?}\nwarned: {warned:?} {warn_result:?}");
        if injected && denied.is_err() && warned.texts.len() >= 2 {
            // The remaining policies were created in the same instant.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the exported policies did not take effect within 30 s:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The webhook reads namespace labels from its watch, and counts a selector as held for
/// a namespace it has not seen yet: wait until it has seen every labelled namespace whose
/// labels fail the `corp` entry's selector (dry-run pods there get no `corp-pull`).
async fn wait_namespaces_seen(c: &Client, cases: &[Case]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (i, case) in cases.iter().enumerate() {
        let granted = case.labels.contains(&("registry-access", "granted"))
            && !case.labels.contains(&("tier", "frozen"));
        if case.kind != "labelled" || granted {
            continue;
        }
        let ns = namespace_name(i, case);
        loop {
            let (r, _) = send(
                c,
                "POST",
                &format!("/api/v1/namespaces/{ns}/pods?dryRun=All"),
                &simple("registry.corp.example:8443/team/probe", None),
            )
            .await;
            let secrets = r
                .map(|p| p["spec"]["imagePullSecrets"].clone())
                .unwrap_or_default();
            if !secrets.to_string().contains("corp-pull") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the webhook did not see namespace {ns}'s labels within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Images the config injects a secret for, and denies, in a `team-*` namespace.
struct Probes {
    injected: &'static str,
    denied: &'static str,
}

const PROBES: Probes = Probes {
    injected: "ghcr.io/acme/probe",
    denied: "ghcr.io/evil/probe",
};

async fn equivalence(values: Value, cases: Vec<Case>, probes: &Probes) {
    let (a, b) = tokio::join!(envtest::start(), envtest::start());
    let (Some(webhook_env), Some(policy_env)) = (a, b) else {
        println!("skipped: KUBEBUILDER_ASSETS not set");
        return;
    };
    let install = Install::new(&webhook_env, &values, &[]).await;
    let objects = export(&install.config);
    apply_policies(&policy_env, &objects, probes).await;

    tokio::join!(
        prepare_namespaces(&webhook_env.client, &cases),
        prepare_namespaces(&policy_env.client, &cases)
    );
    wait_namespaces_seen(&webhook_env.client, &cases).await;

    let (by_webhook, by_policy) = tokio::join!(
        run_corpus(&webhook_env.client, &cases),
        run_corpus(&policy_env.client, &cases)
    );
    let mut differences = Vec::new();
    for (i, (w, p)) in by_webhook.iter().zip(&by_policy).enumerate() {
        if !Outcome::same(w, p) {
            differences.push(format!(
                "case {i} ({} {}):\n  webhook: {}\n  policy:  {}",
                namespace_name(i, &cases[i]),
                cases[i].pod["spec"],
                serde_json::to_string(&summary(w)).unwrap(),
                serde_json::to_string(&summary(p)).unwrap(),
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} cases differ:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
    // The corpus must exercise what it claims: injections, denials and warnings happened.
    let injected = by_webhook
        .iter()
        .filter(|o| {
            o.created.as_ref().is_ok_and(|p| {
                p["metadata"]["annotations"]["pullsecret-injector.io/injected"].is_string()
            })
        })
        .count();
    let denied = by_webhook.iter().filter(|o| o.created.is_err()).count();
    let warned = by_webhook
        .iter()
        .filter(|o| !o.warnings.texts.is_empty())
        .count();
    println!(
        "{} cases: {injected} injected, {denied} denied, {warned} warned",
        cases.len()
    );
    assert!(
        injected > 0 && denied > 0 && warned > 0,
        "the corpus no longer exercises injection, denial and warnings: {injected} {denied} {warned}"
    );
}

fn summary(o: &Outcome) -> Value {
    let side = |r: &Answer| match r {
        Ok(p) => json!({"stored": {"metadata": p["metadata"], "spec": p["spec"]}}),
        Err((code, msg)) => json!({"denied": code, "message": msg}),
    };
    json!({
        "created": side(&o.created),
        "warnings": o.warnings.texts,
        "ephemeral": o.ephemeral.as_ref().map(|(r, w)| json!({"result": side(r), "warnings": w.texts})),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exported_policies_equal_the_webhook_with_no_forced_pulls() {
    equivalence(
        values("none", policy(true, "private")),
        corpus(true),
        &PROBES,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exported_policies_equal_the_webhook_forcing_private_pulls() {
    equivalence(
        values("private", policy(true, "private")),
        corpus(false),
        &PROBES,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exported_policies_equal_the_webhook_forcing_all_pulls() {
    equivalence(values("all", policy(false, "all")), corpus(false), &PROBES).await;
}

/// The sizes the CEL is kept affordable for (`policy_export::limits`): 200 registry
/// entries and Pods of 50 images. Past the API server's cost limits a policy fails
/// (here: injects nothing), which the comparison would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exported_policies_equal_the_webhook_at_200_entries_and_50_images() {
    let kinds = [
        |i: usize| format!("reg{i}.example.com"),
        |i: usize| format!("*.zone{i}.example.net"),
        |i: usize| format!("ghcr.io/org{i}"),
        |i: usize| format!("registry.corp{i}.example:5000/team"),
    ];
    let n: usize = std::env::var("PE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let registries: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("r{i}"), "match": [kinds[i % 4](i)], "secret": format!("s{}", i % 60)}))
        .collect();
    let allow: Vec<String> = (0..n.min(200))
        .step_by(4)
        .map(|i| kinds[i % 4](i))
        .collect();
    let values = json!({
        "registries": registries,
        "namespaces": {"exclude": ["kube-system"]},
        "alwaysPullImages": "private",
        "policy": {"mode": "enforce", "allow": allow, "deny": ["ghcr.io/org2/bad"],
                   "overrides": [{"namespaces": ["warn-*"], "mode": "warn"}]},
        "webhook": {"failurePolicy": "Fail"},
        "validatingWebhook": {"failurePolicy": "Fail"}
    });
    // 50 images, the last ones matching the last entries (the longest scans).
    let image = |i: usize| -> String {
        let e = n - 1 - i;
        match e % 4 {
            0 => format!("reg{e}.example.com/app:{i}"),
            1 => format!("a.zone{e}.example.net/app:{i}"),
            2 => format!("ghcr.io/org{e}/app:{i}"),
            _ => format!("registry.corp{e}.example:5000/team/app:{i}"),
        }
    };
    let big = |f: &dyn Fn(usize) -> String| {
        let containers: Vec<Value> = (0..45)
            .map(|i| container(&format!("c{i}"), &f(i), None))
            .collect();
        let init: Vec<Value> = (45..50)
            .map(|i| container(&format!("i{i}"), &f(i), None))
            .collect();
        pod_of(
            json!({"initContainers": init, "containers": containers}),
            None,
        )
    };
    let mut cases = Vec::new();
    for kind in ["team", "warn"] {
        cases.push(Case {
            kind,
            labels: vec![],
            pod: big(&image),
            ephemeral: None,
        });
        cases.push(Case {
            kind,
            labels: vec![],
            pod: big(&|i| format!("reg{}.example.com/app", i * 4)),
            ephemeral: None,
        });
        cases.push(Case {
            kind,
            labels: vec![],
            pod: big(&|i| format!("Bad{i}/x")),
            ephemeral: None,
        });
    }
    let probes = Probes {
        injected: "reg0.example.com/probe",
        denied: "ghcr.io/org2/bad/probe",
    };
    equivalence(values, cases, &probes).await;
}
