//! `serve --no-sync` against a real API server: the process reads the cluster (namespace
//! labels, which pull secrets exist) so `selector` scopes and `injectOnlyIfPresent` are
//! decided on facts, and writes nothing (no copies, no Lease).

#[path = "common/envtest.rs"]
mod envtest;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use support::*;

const RELEASE_NS: &str = "psi-system";

const CONFIG: &str = r#"
injectOnlyIfPresent: true
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    source: {namespace: creds, name: tcr-src}
    namespaces:
      selector: {matchLabels: {registry-access: tcr}}
  - name: quay
    match: ["quay.io/acme"]
    secret: quay-pull
"#;

async fn secrets_for(server: &Server, ns: &str, image: &str) -> Vec<String> {
    let mut p = pod(&[("app", image)]);
    p["metadata"]["namespace"] = ns.into();
    let body = post_review(server, "/mutate", &review_for(p.clone(), ns, "CREATE")).await;
    secret_names(&apply_pod(&p, &body))
}

#[tokio::test]
async fn no_sync_decides_on_cluster_facts_and_writes_nothing() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let access = BTreeMap::from([("registry-access".to_string(), "tcr".to_string())]);
    for (ns, labels) in [
        ("creds", None),
        (RELEASE_NS, None),
        ("team-a", Some(access)),
        ("team-b", None),
    ] {
        envtest::create_namespace(&c, ns, labels).await;
    }
    envtest::create_pull_secret(&c, "creds", "tcr-src", "*.tencentcloudcr.com", "u:p").await;
    envtest::create_pull_secret(&c, "team-a", "quay-pull", "quay.io", "u:p").await;

    let kubeconfig = env.kubeconfig_path.to_str().unwrap();
    let server = Server::start_with(
        CONFIG,
        &[
            "--no-sync",
            "--kubeconfig",
            kubeconfig,
            "--release-namespace",
            RELEASE_NS,
        ],
        false,
    );
    let ready = format!("http://{}/readyz", server.metrics_addr);
    envtest::eventually(
        Duration::from_secs(30),
        "the read-only caches synced",
        || {
            let ready = ready.clone();
            async move {
                let r = reqwest::get(&ready).await.ok()?;
                (r.status() == 200).then_some(())
            }
        },
    )
    .await;

    // The selector is evaluated on the namespace's labels, not "unknown, so satisfied".
    let tcr = "demo.tencentcloudcr.com/app:1";
    assert_eq!(secrets_for(&server, "team-a", tcr).await, ["tcr-pull"]);
    assert!(secrets_for(&server, "team-b", tcr).await.is_empty());
    // injectOnlyIfPresent sees which secrets exist.
    let quay = "quay.io/acme/app:1";
    assert_eq!(secrets_for(&server, "team-a", quay).await, ["quay-pull"]);
    assert!(secrets_for(&server, "team-b", quay).await.is_empty());

    // Nothing written: a writing controller would have copied tcr-src into team-a (and
    // the admission above would have created it) and taken the Lease by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let copy = Api::<Secret>::namespaced(c.clone(), "team-a")
        .get_opt("tcr-pull")
        .await
        .unwrap();
    assert!(copy.is_none(), "--no-sync wrote a copy");
    let lease = Api::<Lease>::namespaced(c.clone(), RELEASE_NS)
        .get_opt("pullsecret-injector-sync")
        .await
        .unwrap();
    assert!(lease.is_none(), "--no-sync took the Lease");
    let m = reqwest::get(format!("http://{}/metrics", server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !m.lines()
            .any(|l| l.starts_with("pullsecret_injector_sync_api_requests_total{")),
        "requests were sent: {m}"
    );
    assert!(m.contains("pullsecret_injector_sync_leader 0"), "{m}");
}
