//! The background audit at scale against a real kube-apiserver: `AUDIT_BENCH_PODS` Pods
//! (default 2,000) in `AUDIT_BENCH_NAMESPACES` namespaces (default 100), one in ten
//! running a denied image, created before the chart is installed with `audit.enabled`.
//!
//! The control plane is the pinned one from `tests/envtest/install.sh` (set
//! `KUBEBUILDER_ASSETS`), with the chart's report CRDs. The chart is installed as in the
//! e2e tests (`tests/common/install.rs`): our release binary runs as the chart's
//! ServiceAccount and leads. Measured:
//! 1. **first audit**: from the process's start until every namespace's report holds its
//!    expected summary; the audit's own duration (`…_audit_duration_seconds`), its
//!    requests by verb (`…_audit_api_requests_total`) and the Pod LISTs it sent (the API
//!    server's audit log, our ServiceAccount, `list` on pods);
//! 2. **idle** (`AUDIT_BENCH_IDLE_SECS`, default 20): requests sent while nothing changes;
//! 3. **churn**: every offending Pod deleted, until every report says so; requests.
//!
//! The budget an audit that does only what it must keeps: one write per namespace whose
//! report changes plus the cluster report, ⌈pods / 500⌉ Pod LIST pages, nothing while
//! idle. Deviations are printed under "Anomalies".
//!
//! Run: `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo bench --bench audit`.

#[path = "../tests/common/envtest.rs"]
mod envtest;
#[path = "../tests/common/install.rs"]
mod install;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};

const PARALLEL: usize = 16;
const EVIL: &str = "docker.io/evilcorp/miner:1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn values() -> Value {
    json!({
        "registries": [],
        "policy": {"mode": "audit", "deny": ["docker.io/evilcorp"]},
        "audit": {"enabled": true, "maxResultsPerReport": 100},
    })
}

fn reports(c: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        "policyreports",
    );
    Api::all_with(c.clone(), &ar)
}

/// `(pass, fail)` of each of our namespace reports.
async fn summaries(c: &Client) -> BTreeMap<String, (i64, i64)> {
    let Ok(list) = reports(c).list(&ListParams::default()).await else {
        return BTreeMap::new();
    };
    list.items
        .into_iter()
        .filter_map(|r| {
            let s = &r.data["summary"];
            Some((
                r.metadata.namespace?,
                (s["pass"].as_i64()?, s["fail"].as_i64().unwrap_or(0)),
            ))
        })
        .collect()
}

async fn wait_for(c: &Client, want: &BTreeMap<String, (i64, i64)>, limit: Duration) -> Duration {
    let t = Instant::now();
    while summaries(c).await != *want {
        assert!(
            t.elapsed() < limit,
            "reports did not converge within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.elapsed()
}

/// Our requests by verb, from the process's metrics.
async fn requests(install: &install::Install) -> BTreeMap<String, f64> {
    let text = install.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("pullsecret_injector_audit_api_requests_total{"))
        .filter_map(|l| {
            let verb = l.split("verb=\"").nth(1)?.split('"').next()?.to_string();
            Some((verb, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Pod LIST requests by our ServiceAccount, from the API server's audit log.
fn pod_lists(env: &envtest::Envtest) -> usize {
    let user = format!(
        "system:serviceaccount:{}:{}",
        install::RELEASE_NS,
        install::FULLNAME
    );
    env.audit_events()
        .iter()
        .filter(|e| {
            e["user"]["username"] == user.as_str()
                && e["verb"] == "list"
                && e["objectRef"]["resource"] == "pods"
                && e["stage"] == "ResponseComplete"
        })
        .count()
}

#[tokio::main]
async fn main() {
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "audit")
    {
        return;
    }
    if std::env::var_os("KUBEBUILDER_ASSETS").is_none() {
        eprintln!("audit bench: set KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) to run it");
        return;
    }
    let n_pods = env_usize("AUDIT_BENCH_PODS", 2000).max(10);
    let n_ns = env_usize("AUDIT_BENCH_NAMESPACES", 100).clamp(1, n_pods);
    let idle = Duration::from_secs(env_usize("AUDIT_BENCH_IDLE_SECS", 20) as u64);
    let env = envtest::start().await.expect("control plane");
    let c = env.client.clone();

    for crd in install::of_kind(
        &support::render_chart(&values()),
        "CustomResourceDefinition",
    ) {
        let crd: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
        Api::<CustomResourceDefinition>::all(c.clone())
            .create(&PostParams::default(), &crd)
            .await
            .unwrap();
    }
    let names: Vec<String> = (0..n_ns).map(|i| format!("bench-{i:03}")).collect();
    for ns in &names {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(c.clone())
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }
    let t = Instant::now();
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut evil = Vec::new();
    let mut specs = Vec::new();
    for i in 0..n_pods {
        // Consecutive pods share a namespace, so every namespace has some offending
        // pods and some that pass.
        let ns = names[i * n_ns / n_pods].clone();
        let bad = i % 10 == 0;
        let e = want.entry(ns.clone()).or_default();
        if bad {
            e.1 += 1;
            evil.push((ns.clone(), format!("p{i}")));
        } else {
            e.0 += 1;
        }
        specs.push((ns, format!("p{i}"), if bad { EVIL } else { "nginx:1.27" }));
    }
    futures_util::StreamExt::for_each_concurrent(
        futures_util::stream::iter(specs),
        PARALLEL,
        |(ns, name, image)| {
            let api = Api::<Pod>::namespaced(c.clone(), &ns);
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"containers": [
                        {"name": "main", "image": image},
                        {"name": "sidecar", "image": "registry.k8s.io/pause:3.10"}]}
                }))
                .unwrap();
                api.create(&PostParams::default(), &p).await.unwrap();
            }
        },
    )
    .await;
    eprintln!(
        "created {n_pods} pods in {n_ns} namespaces in {:?}",
        t.elapsed()
    );

    let start = Instant::now();
    let install = install::Install::new(&env, &values(), &["--identity", "bench-0"]).await;
    wait_for(&c, &want, Duration::from_secs(300)).await;
    let first_total = start.elapsed();
    let metrics = install.metrics().await;
    let audit_secs = install::metric(&metrics, "pullsecret_injector_audit_duration_seconds", &[]);
    let judged = install::metric(&metrics, "pullsecret_injector_audit_pods", &[]);
    let after_fill = requests(&install).await;
    let lists = pod_lists(&env);

    tokio::time::sleep(idle).await;
    let after_idle = requests(&install).await;

    // Deleted PARALLEL at a time: well within the audit's 2 s debounce, so one audit
    // sees them all.
    let t = Instant::now();
    futures_util::StreamExt::for_each_concurrent(
        futures_util::stream::iter(evil.iter()),
        PARALLEL,
        |(ns, name)| {
            let api = Api::<Pod>::namespaced(c.clone(), ns);
            async move {
                api.delete(name, &DeleteParams::default().grace_period(0))
                    .await
                    .unwrap();
            }
        },
    )
    .await;
    let deletes = t.elapsed();
    // A namespace left with no pods has no report.
    want.retain(|_, v| v.0 > 0);
    for v in want.values_mut() {
        v.1 = 0;
    }
    let churn = wait_for(&c, &want, Duration::from_secs(300)).await;
    let churn_total = t.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_churn = requests(&install).await;

    let fill = diff(&BTreeMap::new(), &after_fill);
    let quiet = diff(&after_fill, &after_idle);
    let churned = diff(&after_idle, &after_churn);
    println!(
        "# audit bench: {n_pods} pods, {n_ns} namespaces, {} offending",
        evil.len()
    );
    println!();
    println!("| phase | wall time | audit requests by verb | budget |");
    println!("|---|---|---|---|");
    println!(
        "| first audit (process start → every report right) | {:.1} s (last audit pass {:.3} s, {} pods judged) | {fill:?}, pod LIST pages {lists} | {} writes + {} pages |",
        first_total.as_secs_f64(),
        audit_secs.unwrap_or(f64::NAN),
        judged.unwrap_or(f64::NAN),
        n_ns + 1,
        n_pods.div_ceil(500),
    );
    println!("| idle {} s | | {quiet:?} | 0 |", idle.as_secs());
    println!(
        "| delete {} offending pods (in {:.1} s) → reports right | {:.1} s (after the last delete {:.1} s) | {churned:?} | {} writes |",
        evil.len(),
        deletes.as_secs_f64(),
        churn_total.as_secs_f64(),
        churn.as_secs_f64(),
        n_ns + 1
    );
    let mut anomalies = Vec::new();
    if total(&quiet) != 0.0 {
        anomalies.push(format!("requests while idle: {quiet:?}"));
    }
    let writes = |m: &BTreeMap<String, f64>| {
        m.iter()
            .filter(|(k, _)| matches!(k.as_str(), "create" | "update" | "delete"))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    if writes(&fill) > (n_ns + 1) as f64 {
        anomalies.push(format!(
            "first audit wrote {} times for {} reports",
            writes(&fill),
            n_ns + 1
        ));
    }
    if writes(&churned) > (n_ns + 1) as f64 {
        anomalies.push(format!(
            "churn wrote {} times for {} reports",
            writes(&churned),
            n_ns + 1
        ));
    }
    for l in install.server().log().lines() {
        if l.contains("WARN")
            || l.contains("ERROR")
            || l.contains("DEBUG") && l.contains("not created")
        {
            anomalies.push(format!("server log: {l}"));
        }
    }
    if lists > n_pods.div_ceil(500) + 1 {
        anomalies.push(format!("{lists} pod LIST requests"));
    }
    println!();
    println!(
        "Anomalies: {}",
        if anomalies.is_empty() {
            "none".into()
        } else {
            anomalies.join("; ")
        }
    );
}
