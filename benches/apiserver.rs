//! Pod-create latency through a real kube-apiserver: no webhook, our mutating webhook,
//! and mutating + validating, measured side by side in one run.
//!
//! The control plane is the pinned one from `tests/envtest/install.sh` (set
//! `KUBEBUILDER_ASSETS`). The chart is installed as in the e2e tests
//! (`tests/common/install.rs`): its own webhook configurations, our release binary as
//! its ServiceAccount. Three namespaces select the three configurations through the
//! chart's own exclusion values, so the runs interleave round by round in one process
//! tree against one API server:
//! * `bench-none`: excluded from both webhooks (`webhook.excludeNamespaces`,
//!   `validatingWebhook.excludeNamespaces`): the API server calls no webhook;
//! * `bench-floor`: only a null mutating webhook (reads the uid, allows, no patch) with
//!   the chart's webhook settings: what any webhook costs the API server;
//! * `bench-patch`: the same null webhook returning, fixed, the very patch ours returns
//!   for this Pod: what applying our patch costs the API server;
//! * `bench-mutate`: the mutating webhook only;
//! * `bench-both`: mutating and validating (policy in enforce mode);
//! * `bench-policy-mutate`: no webhook, the config's exported MutatingAdmissionPolicy
//!   (and its warnings policy) instead (`export-policies`);
//! * `bench-policy-both`: no webhook, every exported policy (injection and the rules).
//!
//! One client (a kube `Client`, one keep-alive connection pool), sequential creates,
//! `generateName` Pods with one container of a matched registry. Knobs: `APISERVER_BENCH_N`
//! creates per configuration (default 600, at least 500), `APISERVER_BENCH_ROUNDS`
//! (default 6).
//!
//! Run: `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo bench --bench apiserver`.

#[path = "../tests/common/envtest.rs"]
mod envtest;
#[path = "../tests/common/install.rs"]
mod install;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

const CONFIGS: [(&str, &str); 7] = [
    ("bench-none", "no webhook"),
    ("bench-floor", "floor: a null mutating webhook"),
    ("bench-patch", "floor returning our exact patch"),
    ("bench-mutate", "ours: mutating"),
    ("bench-both", "ours: mutating + validating"),
    (
        "bench-policy-mutate",
        "ours as admission policies: mutating",
    ),
    (
        "bench-policy-both",
        "ours as admission policies: mutating + validating",
    ),
];

/// Namespaces where the webhooks are not called.
const NO_WEBHOOK: [&str; 5] = [
    "bench-none",
    "bench-floor",
    "bench-patch",
    "bench-policy-mutate",
    "bench-policy-both",
];

/// `export-policies` on the chart's config, each binding limited to the namespaces that
/// measure it: the injection policies to both policy namespaces, the rules to one.
fn exported_policies(config: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::BIN)
        .args([
            "export-policies",
            "--config",
            path.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut objects = list["items"].as_array().unwrap().clone();
    for o in &mut objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        if !kind.ends_with("Binding") {
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let namespaces = if name.contains("-inject") {
            json!(["bench-policy-mutate", "bench-policy-both"])
        } else {
            json!(["bench-policy-both"])
        };
        o["spec"]["matchResources"] = json!({"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
        ]}});
    }
    objects
}

/// The least any mutating webhook costs the API server: a TLS server (the crate's own
/// `serve_tls` and TLS config, as ours) that reads the review's uid and allows it, at
/// `/mutate` with no patch, at `/patch` with the fixed base64 `patch` (computing nothing).
/// Returns its address, CA and call counter; runs until the bench ends.
async fn start_floor(
    dir: &std::path::Path,
    patch: String,
) -> (String, String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::post;
    use pullsecret_injector::server::{self, Limits, tls};
    use std::sync::atomic::{AtomicU64, Ordering};
    #[derive(serde::Deserialize)]
    struct Review {
        request: Req,
    }
    #[derive(serde::Deserialize)]
    struct Req {
        uid: String,
    }
    let bundle = pullsecret_injector::certs::generate(&["127.0.0.1".to_string()], 1).unwrap();
    std::fs::write(dir.join("tls.crt"), &bundle.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &bundle.key_pem).unwrap();
    let resolver = std::sync::Arc::new(
        tls::ReloadingResolver::new(dir.join("tls.crt"), dir.join("tls.key")).unwrap(),
    );
    let config = std::sync::Arc::new(tls::server_config(resolver, None).unwrap());
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let (c1, c2) = (calls.clone(), calls.clone());
    let app = Router::new()
        .route(
            "/mutate",
            post(move |body: Bytes| async move {
                c1.fetch_add(1, Ordering::Relaxed);
                let r: Review = serde_json::from_slice(&body).expect("an AdmissionReview");
                axum::Json(
                    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": {"uid": r.request.uid, "allowed": true}}),
                )
            }),
        )
        .route(
            "/patch",
            post(move |body: Bytes| async move {
                c2.fetch_add(1, Ordering::Relaxed);
                let r: Review = serde_json::from_slice(&body).expect("an AdmissionReview");
                axum::Json(
                    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": {"uid": r.request.uid, "allowed": true,
                                               "patchType": "JSONPatch", "patch": patch}}),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        server::serve_tls(
            listener,
            config,
            app,
            Limits::default(),
            std::future::pending(),
        )
        .await
        .expect("floor server")
    });
    (addr, bundle.ca_pem, calls)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "web-", "labels": {"app": "web", "i": i.to_string()}},
        "spec": {"containers": [
            {"name": "web", "image": "demo-tcr.tencentcloudcr.com/docker/getting-started:latest",
             "imagePullPolicy": "IfNotPresent"},
            {"name": "sidecar", "image": "registry.k8s.io/pause:3.10"}
        ]}
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than ours means "not us".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "apiserver")
    {
        return;
    }
    if std::env::var_os("KUBEBUILDER_ASSETS").is_none() {
        eprintln!("apiserver bench: set KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) to run it");
        return;
    }
    let n = env_usize("APISERVER_BENCH_N", 600).max(500);
    let rounds = env_usize("APISERVER_BENCH_ROUNDS", 6).max(1);
    let per_round = n.div_ceil(rounds);

    let env = envtest::start().await.expect("control plane");
    let c = env.client.clone();
    envtest::create_namespace(&c, "registry-creds", None).await;
    envtest::create_pull_secret(
        &c,
        "registry-creds",
        "tcr-pull",
        "demo-tcr.tencentcloudcr.com",
        "robot:pw",
    )
    .await;
    let validating_excluded = [NO_WEBHOOK.as_slice(), &["bench-mutate", "registry-creds"]].concat();
    let values = json!({
        "registries": [{
            "name": "tcr", "match": ["demo-tcr.tencentcloudcr.com"], "secret": "tcr-pull",
            "alwaysPull": true,
            "source": {"namespace": "registry-creds", "name": "tcr-pull"}
        }],
        "policy": {"mode": "enforce", "allow": ["*.tencentcloudcr.com", "registry.k8s.io"]},
        "webhook": {"excludeNamespaces": NO_WEBHOOK},
        "validatingWebhook": {"excludeNamespaces": validating_excluded},
        "logFormat": "json"
    });
    for (ns, _) in CONFIGS {
        envtest::create_namespace(&c, ns, None).await;
    }
    let install = install::Install::new(&env, &values, &["--identity", "bench-0"]).await;

    // The floors: the chart's mutating webhook configuration (same timeouts, policies,
    // rules and match conditions), renamed, pointed at the null webhook for bench-floor
    // and at the fixed-patch one for bench-patch. The fixed patch is what our decision
    // makes of this Pod in that namespace (the same bytes our process returns).
    let cfg = pullsecret_injector::config::Config::parse(&install.config, "chart").unwrap();
    let review = support::review_for(
        serde_json::to_value(pod(0)).unwrap(),
        "bench-patch",
        "CREATE",
    );
    let answer = pullsecret_injector::admission::review(
        pullsecret_injector::admission::Endpoint::Mutate,
        review.to_string().as_bytes(),
        &cfg,
        &Default::default(),
    )
    .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let patch = answer["response"]["patch"]
        .as_str()
        .expect("a patch")
        .to_string();
    let floor_dir = tempfile::tempdir().unwrap();
    let (floor_addr, floor_ca, floor_calls) = start_floor(floor_dir.path(), patch).await;
    let mut floor = install.mutating.clone();
    floor["metadata"] = json!({"name": "bench-floor"});
    let hook = floor["webhooks"][0].clone();
    let mut hooks = vec![];
    for (ns, path) in [("bench-floor", "/mutate"), ("bench-patch", "/patch")] {
        let mut h = hook.clone();
        h["name"] = json!(format!("{}.floor.bench.example.com", &path[1..]));
        h["clientConfig"] = json!({
            "url": format!("https://{floor_addr}{path}"),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&floor_ca)
        });
        h["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
        hooks.push(h);
    }
    floor["webhooks"] = json!(hooks);
    let floor: MutatingWebhookConfiguration = serde_json::from_value(floor).unwrap();
    Api::<MutatingWebhookConfiguration>::all(c.clone())
        .create(&PostParams::default(), &floor)
        .await
        .unwrap();

    // The exported policies, picked up asynchronously too: wait until they mutate.
    let discovery = kube::discovery::Discovery::new(c.clone())
        .run()
        .await
        .unwrap();
    for o in exported_policies(&install.config) {
        install::create_object(&c, &discovery, "default", &o).await;
    }
    for ns in ["bench-policy-mutate", "bench-policy-both"] {
        let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while pods
            .create(&dry, &pod(0))
            .await
            .unwrap()
            .spec
            .unwrap()
            .image_pull_secrets
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "{ns}: the exported policies did not take effect"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Warm up every path (connections, the managed secret's first creation, caches), and
    // check each namespace gets the configuration it is meant to (the floor's is picked
    // up asynchronously, like any webhook configuration).
    for (ns, _) in CONFIGS {
        let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
        for i in 0..30 {
            let p = pods.create(&PostParams::default(), &pod(i)).await.unwrap();
            let injected = p.spec.unwrap().image_pull_secrets.is_some();
            let patched = ns != "bench-none" && ns != "bench-floor";
            assert_eq!(injected, patched, "{ns}: unexpected mutation");
        }
    }
    assert_eq!(
        floor_calls.load(std::sync::atomic::Ordering::Relaxed),
        2 * 30,
        "the floors were called for their namespaces' warm-up pods"
    );
    let before = (
        install.requests("mutate").await,
        install.requests("validate").await,
    );

    let mut samples: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for round in 0..rounds {
        // Rotate the order each round so no configuration always runs first.
        for k in 0..CONFIGS.len() {
            let (ns, _) = CONFIGS[(round + k) % CONFIGS.len()];
            let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
            let out = samples.entry(ns).or_default();
            for i in 0..per_round {
                let p = pod(i);
                let t = Instant::now();
                pods.create(&PostParams::default(), &p).await.unwrap();
                out.push(t.elapsed());
            }
        }
    }
    let after = (
        install.requests("mutate").await,
        install.requests("validate").await,
    );
    let total = (per_round * rounds) as f64;
    let server_ms = |text: &str, endpoint: &str| -> f64 {
        let get = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(&format!("endpoint=\"{endpoint}\"")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        1e3 * get("pullsecret_injector_admission_duration_seconds_sum")
            / get("pullsecret_injector_admission_duration_seconds_count")
    };
    let metrics = install.metrics().await;
    assert_eq!(after.0 - before.0, 2.0 * total, "mutating calls");
    assert_eq!(after.1 - before.1, total, "validating calls");

    let version = c.apiserver_version().await.unwrap().git_version;
    println!(
        "Pod create through kube-apiserver {version}: {} creates per configuration, {rounds} interleaved rounds, one client",
        per_round * rounds
    );
    println!();
    println!("| configuration | p50 ms | p99 ms | mean ms | p50 / none | p99 / none |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut base = (Duration::ZERO, Duration::ZERO);
    for (ns, label) in CONFIGS {
        let mut v = samples.remove(ns).unwrap();
        v.sort();
        let (p50, p99) = (percentile(&v, 0.50), percentile(&v, 0.99));
        let mean = v.iter().sum::<Duration>() / v.len() as u32;
        if ns == "bench-none" {
            base = (p50, p99);
        }
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} |",
            ms(p50),
            ms(p99),
            ms(mean),
            p50.as_secs_f64() / base.0.as_secs_f64(),
            p99.as_secs_f64() / base.1.as_secs_f64()
        );
    }
    println!();
    println!(
        "our server's own time per review (its admission_duration histogram, whole run): /mutate {:.3} ms, /validate {:.3} ms",
        server_ms(&metrics, "mutate"),
        server_ms(&metrics, "validate")
    );
    drop(install);
}
