//! The background audit against a real API server (envtest convention, see
//! `tests/common/envtest.rs`): Pods running before a registry rule existed, the rule
//! added by a config reload, the `PolicyReport` and `ClusterPolicyReport` the leader
//! writes (with the chart's own CRDs and RBAC, as its ServiceAccount), results leaving
//! with their Pods, a foreign report of our name left alone; without the CRDs the audit
//! says so and still counts; and the `audit` command run from a laptop.

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;
#[path = "common/sync.rs"]
mod sync;

use std::time::Duration;

use envtest::{Envtest, eventually};
use install::{Install, metric, of_kind};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::run_cli;

const WAIT: Duration = Duration::from_secs(40);
const EVIL: &str = "docker.io/evilcorp/miner:1";
const REPORT: &str = "pullsecret-injector";
/// Offending pods in one namespace: more than the 100 results a report keeps (and more
/// than the 100 response headers the HTTP client accepts, should each result earn a
/// Warning).
const MANY: usize = 110;

fn values(deny: &[&str]) -> Value {
    json!({
        "registries": [],
        "policy": {"mode": "audit", "deny": deny},
        "audit": {"enabled": true, "maxResultsPerReport": 100},
    })
}

fn report_api(c: &Client, ns: Option<&str>) -> Api<DynamicObject> {
    let (kind, plural) = match ns {
        Some(_) => ("PolicyReport", "policyreports"),
        None => ("ClusterPolicyReport", "clusterpolicyreports"),
    };
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind),
        plural,
    );
    match ns {
        Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
        None => Api::all_with(c.clone(), &ar),
    }
}

async fn report(c: &Client, ns: Option<&str>) -> Option<Value> {
    let r = report_api(c, ns).get_opt(REPORT).await.ok()??;
    Some(serde_json::to_value(r).unwrap())
}

/// Applies the CRDs the chart renders with the audit on, and waits until they serve.
async fn install_crds(c: &Client) {
    let rendered = support::render_chart(&values(&[]));
    let crds = of_kind(&rendered, "CustomResourceDefinition");
    assert_eq!(crds.len(), 2, "the chart ships both report CRDs");
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in crds {
        let crd: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
    eventually(WAIT, "the report CRDs serve", || async {
        report_api(c, Some("default"))
            .list(&Default::default())
            .await
            .ok()?;
        report_api(c, None).list(&Default::default()).await.ok()
    })
    .await;
}

async fn create_pod(c: &Client, ns: &str, name: &str, image: &str) -> Pod {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": image}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"))
}

fn summary(r: &Value) -> (i64, i64, i64) {
    let s = &r["summary"];
    (
        s["pass"].as_i64().unwrap_or(0),
        s["fail"].as_i64().unwrap_or(0),
        s["warn"].as_i64().unwrap_or(0),
    )
}

async fn wait_report<F>(c: &Client, ns: Option<&str>, what: &str, pred: F) -> Value
where
    F: Fn(&Value) -> bool,
{
    eventually(WAIT, what, || async {
        let r = report(c, ns).await?;
        pred(&r).then_some(r)
    })
    .await
}

async fn offences_metric(install: &Install, ns: &str, rule: &str) -> f64 {
    metric(
        &install.metrics().await,
        "pullsecret_injector_audit_offences",
        &[("namespace", ns), ("rule", rule)],
    )
    .unwrap_or(0.0)
}

async fn start() -> Option<Envtest> {
    let env = envtest::start().await?;
    for ns in ["team-a", "team-b"] {
        envtest::create_namespace(&env.client, ns, None).await;
    }
    Some(env)
}

#[tokio::test]
async fn a_new_rule_reports_the_pods_already_running_and_results_leave_with_their_pods() {
    let Some(env) = start().await else {
        return;
    };
    let c = env.client.clone();
    install_crds(&c).await;
    // Running before any rule (and before the webhook) existed.
    let miner = create_pod(&c, "team-a", "miner", EVIL).await;
    create_pod(&c, "team-a", "web", "nginx:1.27").await;
    create_pod(&c, "team-b", "web", "nginx:1.27").await;
    // A report of our name that is not ours, in team-b.
    let foreign = report_api(&c, Some("team-b"))
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
                "metadata": {"name": REPORT, "namespace": "team-b"},
                "summary": {"pass": 7},
                "results": [],
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let mut install = Install::new(
        &env,
        &values(&["quay.io/nothing-here"]),
        &["--identity", "audit-0"],
    )
    .await;
    let _log = sync::LogOnPanic::new("the server", install.server());
    let r = wait_report(&c, Some("team-a"), "team-a's report: both pods pass", |r| {
        summary(r) == (2, 0, 0)
    })
    .await;
    assert_eq!(
        r["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    assert_eq!(r["results"], json!([]));

    // The security team adds a rule: a config reload, no restart.
    install.reconfigure(&values(&["docker.io/evilcorp"])).await;
    let r = wait_report(
        &c,
        Some("team-a"),
        "team-a's report: the miner fails",
        |r| summary(r) == (1, 1, 0),
    )
    .await;
    let res = &r["results"][0];
    assert_eq!(res["policy"], "pullsecret-injector");
    assert_eq!(res["rule"], "deny");
    assert_eq!(res["result"], "fail");
    assert_eq!(
        res["message"],
        "container \"main\" image \"docker.io/evilcorp/miner:1\" (registry docker.io) is denied by policy.deny pattern \"docker.io/evilcorp\""
    );
    assert_eq!(
        res["resources"][0],
        json!({"apiVersion": "v1", "kind": "Pod", "namespace": "team-a", "name": "miner",
               "uid": miner.metadata.uid.clone().unwrap()})
    );
    assert_eq!(res["properties"]["container"], "main");
    assert_eq!(res["properties"]["mode"], "audit");
    assert!(res["timestamp"]["seconds"].as_i64().unwrap() > 0);
    let cluster = wait_report(&c, None, "the cluster report names team-a", |r| {
        summary(r) == (1, 1, 0)
    })
    .await;
    assert_eq!(cluster["results"][0]["resources"][0]["name"], "team-a");
    assert_eq!(cluster["results"][0]["result"], "fail");
    assert_eq!(offences_metric(&install, "team-a", "deny").await, 1.0);

    // What an admin sees.
    let (ok, out, err) = env.kubectl(&["get", "policyreport", "-A"], None);
    assert!(ok, "{err}");
    eprintln!("kubectl get policyreport -A:\n{out}");
    assert!(out.contains("team-a") && out.contains(REPORT), "{out}");

    // Nothing changes, nothing is written.
    let rv = r["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = report(&c, Some("team-a")).await.unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"], rv,
        "an unchanged audit rewrote the report"
    );

    // The offending Pod goes; its result goes with it.
    Api::<Pod>::namespaced(c.clone(), "team-a")
        .delete("miner", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let r = wait_report(
        &c,
        Some("team-a"),
        "team-a's report: the miner's result gone",
        |r| summary(r) == (1, 0, 0),
    )
    .await;
    assert_eq!(r["results"], json!([]));
    wait_report(&c, None, "the cluster report: all pass", |r| {
        summary(r) == (2, 0, 0)
    })
    .await;
    assert_eq!(offences_metric(&install, "team-a", "deny").await, 0.0);

    // The foreign report was never touched.
    let now = report_api(&c, Some("team-b")).get(REPORT).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        foreign.metadata.resource_version
    );
    assert!(
        install
            .server()
            .log()
            .contains("without our app.kubernetes.io/managed-by label")
    );

    // Audit switched off: the reports go (they would go stale).
    install.reconfigure(&json!({"registries": [], "policy": {"mode": "audit", "deny": ["docker.io/evilcorp"]}, "audit": {"enabled": false}})).await;
    eventually(WAIT, "our reports deleted", || async {
        (report(&c, Some("team-a")).await.is_none() && report(&c, None).await.is_none())
            .then_some(())
    })
    .await;
    assert!(
        report(&c, Some("team-b")).await.is_some(),
        "the foreign report stays"
    );
}

#[tokio::test]
async fn without_the_crds_the_audit_still_counts_and_the_cli_audits_from_a_laptop() {
    let Some(env) = start().await else {
        return;
    };
    let c = env.client.clone();
    create_pod(&c, "team-a", "miner", EVIL).await;
    create_pod(&c, "team-a", "web", "nginx:1.27").await;
    // More offences in one namespace than a report keeps.
    futures_util::future::join_all((0..MANY).map(|i| {
        let c = c.clone();
        async move { create_pod(&c, "team-b", &format!("m{i:03}"), EVIL).await }
    }))
    .await;
    let install = Install::new(
        &env,
        &values(&["docker.io/evilcorp"]),
        &["--identity", "audit-0"],
    )
    .await;
    let _log = sync::LogOnPanic::new("the server", install.server());
    eventually(WAIT, "the audit counts the miner", || async {
        (offences_metric(&install, "team-a", "deny").await == 1.0).then_some(())
    })
    .await;
    eventually(WAIT, "the log says the reports are not written", || async {
        install
            .server()
            .log()
            .contains("the PolicyReport CRDs (wgpolicyk8s.io/v1alpha2) are not installed")
            .then_some(())
    })
    .await;
    assert_eq!(install.readyz(install.server()).await, Some(200));

    // The CRDs arrive later: the audit finds them and writes.
    install_crds(&c).await;
    wait_report(
        &c,
        Some("team-a"),
        "team-a's report once the CRDs exist",
        |r| summary(r) == (1, 1, 0),
    )
    .await;
    // Bounded: 100 results kept, all counted, the cut said.
    let big = wait_report(&c, Some("team-b"), "team-b's bounded report", |r| {
        summary(r) == (0, MANY as i64, 0)
    })
    .await;
    assert_eq!(big["results"].as_array().unwrap().len(), 100);
    assert_eq!(
        big["metadata"]["annotations"]["pullsecret-injector.io/results-truncated"],
        format!("100 of {MANY} results shown; the summary counts all")
    );

    // From a laptop: the same verdicts, nothing written.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "registries: []\npolicy: {mode: enforce, deny: [docker.io/evilcorp], exemptNamespaces: [team-b]}\n",
    )
    .unwrap();
    let kc = env.kubeconfig_path.to_str().unwrap();
    let cfg = config.to_str().unwrap();
    let before = env.audit_events().len();
    let (code, out, err) = run_cli(
        &["audit", "--kubeconfig", kc, "--config", cfg, "-o", "json"],
        b"",
    );
    assert_eq!(code, 1, "an enforce-rule offence exits 1: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let findings = v["findings"].as_array().unwrap();
    let ours: Vec<_> = findings
        .iter()
        .filter(|f| f["namespace"] == "team-a")
        .collect();
    assert_eq!(ours.len(), 1, "{out}");
    assert_eq!(ours[0]["pod"], "miner");
    assert_eq!(ours[0]["rule"], "deny");
    assert_eq!(ours[0]["result"], "fail");
    assert_eq!(ours[0]["registry"], "docker.io");
    let (code, out, _) = run_cli(
        &["audit", "--kubeconfig", kc, "--config", cfg, "-n", "team-a"],
        b"",
    );
    assert_eq!(code, 1);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(out.contains("miner") && out.contains("deny"), "{out}");
    assert!(
        out.ends_with("2 pods judged: 1 pass, 1 fail, 0 warn, 0 error\n"),
        "{out}"
    );
    // It wrote nothing: no create, update, patch or delete from the admin in the audit log since.
    let writes: Vec<_> = env.audit_events()[before..]
        .iter()
        .filter(|e| {
            e["user"]["username"] == "envtest-admin"
                && matches!(
                    e["verb"].as_str(),
                    Some("create" | "update" | "patch" | "delete")
                )
        })
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // A pass: exit 0.
    std::fs::write(
        &config,
        "registries: []\npolicy: {mode: enforce, deny: [quay.io/x]}\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(&["audit", "--kubeconfig", kc, "--config", cfg], b"");
    assert_eq!(code, 0, "{out}{err}");
    // No policy: a clear error.
    std::fs::write(&config, "registries: []\n").unwrap();
    let (code, _, err) = run_cli(&["audit", "--kubeconfig", kc, "--config", cfg], b"");
    assert_eq!(code, 2, "an input error: {err}");
    assert!(
        err.contains("no `policy` section; nothing to audit"),
        "{err}"
    );
}
