//! The chart's `mode: admissionPolicy` against a real API server: the chart is rendered
//! with the manifest our binary exports from the same values (`export-policies
//! --values`), everything it renders is applied, and no webhook configuration exists.
//! Pods in a tenant namespace must then get their pull secret and `Always` from the
//! policies alone, a denied registry must be refused, the chart's namespace scope (the
//! opt-out label) must hold on the bindings, and, when the sync controller has work, the
//! rendered Deployment's `serve` flags must run it as the controller only, with the
//! chart's RBAC. Run with `export KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) && cargo
//! test --test e2e_chart_policy_mode`.

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use install::{FULLNAME, RELEASE_NS, create_object, ensure_namespace, of_kind};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::discovery::Discovery;
use kube::{Api, Client};
use serde_json::{Value, json};

const POLICY_KINDS: [&str; 4] = [
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// The chart values with `mode: admissionPolicy` and the manifest `export-policies
/// --values` prints for `values` (as `--set-file admissionPolicies.manifest=<(…)` does).
fn policy_values(values: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, serde_json::to_string(values).unwrap()).unwrap();
    let (code, manifest, err) = support::run_cli(
        &["export-policies", "--values", path.to_str().unwrap()],
        b"",
    );
    assert_eq!(code, 0, "export-policies --values failed: {err}");
    let mut v = values.clone();
    v["mode"] = json!("admissionPolicy");
    v["admissionPolicies"] = json!({ "manifest": manifest });
    v
}

fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}]}
    })
}

fn secrets_of(p: &Pod) -> Vec<String> {
    support::secret_names(p)
}

fn pull_policy(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.containers[0].image_pull_policy.clone()
}

/// Applies every rendered object but the Deployment and its PodDisruptionBudget (the
/// tests run the binary themselves, outside the cluster).
async fn apply(c: &Client, rendered: &[Value]) {
    ensure_namespace(c, RELEASE_NS).await;
    let discovery = Discovery::new(c.clone()).run().await.expect("discovery");
    for obj in rendered {
        if obj["kind"] != "Deployment" && obj["kind"] != "PodDisruptionBudget" {
            create_object(c, &discovery, RELEASE_NS, obj).await;
        }
    }
}

/// The API server loads policies asynchronously: dry-run creates until a Pod of
/// `injected` in `ns` gets a pull secret and one of `denied` (if any) is refused (30 s at
/// most).
async fn wait_enforced(c: &Client, ns: &str, injected: &str, denied: Option<&str>) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe = |image: &str| serde_json::from_value::<Pod>(pod("probe", image)).unwrap();
    envtest::eventually(
        Duration::from_secs(30),
        "the chart's admission policies in force",
        || async {
            let mutated = pods.create(&dry, &probe(injected)).await.ok()?;
            let refused = match denied {
                Some(image) => pods.create(&dry, &probe(image)).await.is_err(),
                None => true,
            };
            (!secrets_of(&mutated).is_empty() && refused).then_some(())
        },
    )
    .await;
    // The bindings were created in the same instant as the ones just seen working.
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// No webhook configuration at all exists in the cluster: what admits Pods is the
/// policies.
async fn assert_no_webhooks(c: &Client) {
    let m = Api::<MutatingWebhookConfiguration>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let v = Api::<ValidatingWebhookConfiguration>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        m.items.is_empty() && v.items.is_empty(),
        "webhook configurations exist: {:?} {:?}",
        m.items.iter().map(|x| &x.metadata.name).collect::<Vec<_>>(),
        v.items.iter().map(|x| &x.metadata.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_charts_policies_inject_and_deny_with_no_webhook_and_no_deployment() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    // No `source`, no `serviceAccounts`: the controller has no work, so nothing of ours runs.
    let values = json!({
        "registries": [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull",
                        "alwaysPull": true}],
        "policy": {"mode": "enforce", "deny": ["docker.io/evilcorp"]}
    });
    let rendered = support::render_chart(&policy_values(&values));
    let kinds: Vec<&str> = rendered.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(
        kinds.iter().all(|k| POLICY_KINDS.contains(k)),
        "only policies and bindings rendered: {kinds:?}"
    );
    assert!(
        of_kind(&rendered, "MutatingAdmissionPolicy").len() == 1,
        "{kinds:?}"
    );
    apply(&c, &rendered).await;
    envtest::create_namespace(&c, "team-a", None).await;
    let off = BTreeMap::from([(
        "pullsecret-injector.io/inject".to_string(),
        "disabled".to_string(),
    )]);
    envtest::create_namespace(&c, "team-off", Some(off)).await;
    wait_enforced(
        &c,
        "team-a",
        "ghcr.io/acme/app:1",
        Some("docker.io/evilcorp/x:1"),
    )
    .await;
    assert_no_webhooks(&c).await;

    let pods: Api<Pod> = Api::namespaced(c.clone(), "team-a");
    let created = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("app", "ghcr.io/acme/app:1")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        secrets_of(&created),
        ["acme-pull"],
        "injected by the policy"
    );
    assert_eq!(
        pull_policy(&created).as_deref(),
        Some("Always"),
        "alwaysPull forced by the policy"
    );
    let untouched = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("other", "registry.k8s.io/pause:3.10")).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        secrets_of(&untouched).is_empty(),
        "unmatched image untouched"
    );
    assert_eq!(pull_policy(&untouched).as_deref(), Some("IfNotPresent"));
    let err = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("evil", "docker.io/evilcorp/x:1")).unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pullsecret-injector-policy") && err.contains("docker.io/evilcorp"),
        "denied by the exported ValidatingAdmissionPolicy, naming the registry: {err}"
    );
    assert!(pods.get_opt("evil").await.unwrap().is_none(), "not stored");

    // The chart scopes the bindings as it scopes the webhooks: the opt-out label keeps a
    // namespace out of injection (the exported CEL alone knows nothing of it), but not out
    // of the registry policy.
    let off: Api<Pod> = Api::namespaced(c.clone(), "team-off");
    let p = off
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("app", "ghcr.io/acme/app:1")).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        secrets_of(&p).is_empty(),
        "opted-out namespace: no injection"
    );
    assert_eq!(pull_policy(&p).as_deref(), Some("IfNotPresent"));
    assert!(
        off.create(
            &PostParams::default(),
            &serde_json::from_value(pod("evil", "docker.io/evilcorp/x:1")).unwrap()
        )
        .await
        .is_err(),
        "the registry policy still applies in an opted-out namespace"
    );
}

#[tokio::test]
async fn the_controller_alone_runs_for_secret_sync_with_the_charts_flags_and_rbac() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let values = json!({
        "registries": [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull",
                        "alwaysPull": true, "namespaces": {"include": ["team-*"]},
                        "source": {"namespace": "registry-creds", "name": "acme-source"}}]
    });
    let rendered = support::render_chart(&policy_values(&values));
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Service",
        "Secret",
    ] {
        assert!(of_kind(&rendered, kind).is_empty(), "{kind} rendered");
    }
    let deployment = of_kind(&rendered, "Deployment");
    assert_eq!(deployment.len(), 1, "the controller has work: a Deployment");
    let container = &deployment[0]["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(
        !args
            .iter()
            .any(|a| a == "--tls-cert" || a == "--managed-certs"),
        "no certificate: {args:?}"
    );
    let config = of_kind(&rendered, "ConfigMap")[0]["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();

    apply(&c, &rendered).await;
    envtest::create_namespace(&c, "registry-creds", None).await;
    envtest::create_pull_secret(&c, "registry-creds", "acme-source", "ghcr.io", "u:p").await;
    envtest::create_namespace(&c, "team-a", None).await;

    // The Deployment's own flags (its `--listen localhost:0` included), but the config
    // file written by the harness and the metrics on a free loopback port; run as the
    // chart's ServiceAccount, so with exactly the chart's RBAC.
    let mut flags: Vec<String> = Vec::new();
    let mut it = args.iter().skip(1); // `serve`
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "--metrics-listen" => {
                it.next();
            }
            _ => flags.push(a.clone()),
        }
    }
    let kubeconfig = env.service_account_kubeconfig(RELEASE_NS, FULLNAME).await;
    flags.extend([
        "--kubeconfig".to_string(),
        kubeconfig.to_str().unwrap().to_string(),
        "--release-namespace".to_string(),
        RELEASE_NS.to_string(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = support::Server::start_with(&config, &flags, false);
    assert!(
        server.addr.starts_with("127.0.0.1:"),
        "the unused HTTPS listener is on loopback only: {}",
        server.addr
    );

    let copies: Api<Secret> = Api::namespaced(c.clone(), "team-a");
    envtest::eventually(
        Duration::from_secs(60),
        "the controller copies acme-pull into team-a",
        || async { copies.get_opt("acme-pull").await.ok().flatten() },
    )
    .await;
    wait_enforced(&c, "team-a", "ghcr.io/acme/app:1", None).await;
    assert_no_webhooks(&c).await;
    let p = Api::<Pod>::namespaced(c.clone(), "team-a")
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod("app", "ghcr.io/acme/app:1")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(secrets_of(&p), ["acme-pull"]);
    assert_eq!(pull_policy(&p).as_deref(), Some("Always"));
    let log = server.log();
    let lower = log.to_lowercase();
    assert!(
        // "code: 403" as kube prints a Status: a bare "403" also matches microseconds.
        !lower.contains("forbidden") && !lower.contains("code: 403"),
        "the chart's RBAC is not enough:\n{log}"
    );
    drop(server);
}
