//! The chart's install modes against a real API server, each run as the chart's own
//! ServiceAccount (so with exactly the RBAC the chart renders): `sync.enabled: false`
//! (`--no-sync`, read-only RBAC), `clusterAccess: false` (`--no-cluster-access`, no RBAC),
//! `certs.mode: self` (`--managed-certs`, RBAC limited to its own Secret and webhook
//! configurations), and the `helm test` Pod's script with its own Role.

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use install::{FULLNAME, Install, RELEASE_NS, create_object, ensure_namespace, of_kind};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use kube::discovery::Discovery;
use serde_json::{Value, json};

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]}
    }))
    .unwrap()
}

fn secrets_of(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .map(|l| l.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

async fn readyz(server: &support::Server) -> Option<u16> {
    let r = reqwest::get(format!("http://{}/readyz", server.metrics_addr))
        .await
        .ok()?;
    Some(r.status().as_u16())
}

#[tokio::test]
async fn read_only_rbac_is_enough_for_no_sync() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let values = json!({
        "sync": {"enabled": false},
        "injectOnlyIfPresent": true,
        "registries": [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull",
                        "namespaces": {"selector": {"matchLabels": {"access": "acme"}}}}],
        "webhook": {"failurePolicy": "Fail"}
    });
    let lab = BTreeMap::from([("access".to_string(), "acme".to_string())]);
    envtest::create_namespace(&c, "team-in", Some(lab)).await;
    envtest::create_namespace(&c, "team-out", None).await;
    envtest::create_pull_secret(&c, "team-in", "acme-pull", "ghcr.io", "u:p").await;
    envtest::create_pull_secret(&c, "team-out", "acme-pull", "ghcr.io", "u:p").await;
    let install = Install::new(&env, &values, &["--no-sync"]).await;
    let roles = of_kind(&install.rendered, "Role").len();
    assert_eq!(roles, 0, "no Role with sync off");
    envtest::eventually(
        Duration::from_secs(30),
        "ready with read-only RBAC",
        || async { (readyz(install.server()).await == Some(200)).then_some(()) },
    )
    .await;
    let p = Api::<Pod>::namespaced(c.clone(), "team-in")
        .create(&PostParams::default(), &pod("a", "ghcr.io/acme/app:1"))
        .await
        .unwrap();
    assert_eq!(
        secrets_of(&p),
        ["acme-pull"],
        "selector matched on real labels"
    );
    let p = Api::<Pod>::namespaced(c.clone(), "team-out")
        .create(&PostParams::default(), &pod("a", "ghcr.io/acme/app:1"))
        .await
        .unwrap();
    assert!(
        secrets_of(&p).is_empty(),
        "unlabelled namespace is out of scope"
    );
    let log = install.server().log();
    assert!(!log.contains("forbidden"), "forbidden in log:\n{log}");
}

#[tokio::test]
async fn no_cluster_access_needs_no_rbac() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let values = json!({
        "clusterAccess": false,
        "sync": {"enabled": false},
        "registries": [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull"}],
        "webhook": {"failurePolicy": "Fail"}
    });
    envtest::create_namespace(&c, "team-a", None).await;
    let install = Install::new(&env, &values, &["--no-cluster-access"]).await;
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(of_kind(&install.rendered, kind).is_empty(), "{kind}");
    }
    envtest::eventually(Duration::from_secs(30), "ready", || async {
        (readyz(install.server()).await == Some(200)).then_some(())
    })
    .await;
    let p = Api::<Pod>::namespaced(c.clone(), "team-a")
        .create(&PostParams::default(), &pod("a", "ghcr.io/acme/app:1"))
        .await
        .unwrap();
    assert_eq!(secrets_of(&p), ["acme-pull"]);
}

fn arg_after(args: &[Value], flag: &str) -> String {
    let i = args.iter().rposition(|a| a == flag).expect(flag);
    args[i + 1].as_str().unwrap().to_string()
}

#[tokio::test]
async fn self_managed_certs_work_with_the_charts_rbac() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let values = json!({
        "certs": {"mode": "self"},
        "sync": {"enabled": false},
        "registries": [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull"}],
        "policy": {"mode": "enforce", "deny": ["docker.io/evilcorp"]},
        "webhook": {"failurePolicy": "Fail"}
    });
    let rendered = support::render_chart(&values);
    ensure_namespace(&c, RELEASE_NS).await;
    envtest::create_namespace(&c, "team-a", None).await;
    let discovery = Discovery::new(c.clone()).run().await.unwrap();
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        for obj in of_kind(&rendered, kind) {
            create_object(&c, &discovery, RELEASE_NS, obj).await;
        }
    }
    let config = of_kind(&rendered, "ConfigMap")[0]["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let args =
        of_kind(&rendered, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .clone();
    let secret = arg_after(&args, "--managed-certs");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // The chart's webhook configurations, pointed at the process, without caBundle.
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let mut conf = of_kind(&rendered, kind)[0].clone();
        let path = if kind.starts_with("Mutating") {
            "/mutate"
        } else {
            "/validate"
        };
        for hook in conf["webhooks"].as_array_mut().unwrap() {
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "no caBundle rendered"
            );
            hook["clientConfig"] = json!({"url": format!("https://{addr}{path}")});
        }
        create_object(&c, &discovery, RELEASE_NS, &conf).await;
    }
    let kubeconfig = env.service_account_kubeconfig(RELEASE_NS, FULLNAME).await;
    let server = support::Server::start_with(
        &config,
        &[
            "--listen",
            &addr,
            "--managed-certs",
            &secret,
            "--managed-certs-service",
            &arg_after(&args, "--managed-certs-service"),
            "--managed-certs-dns",
            "127.0.0.1",
            "--mutating-webhook-configuration",
            &arg_after(&args, "--mutating-webhook-configuration"),
            "--validating-webhook-configuration",
            &arg_after(&args, "--validating-webhook-configuration"),
            "--ca-propagation",
            "1s",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--release-namespace",
            RELEASE_NS,
            "--no-sync",
        ],
        false,
    );
    let m: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    let v: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
    envtest::eventually(Duration::from_secs(60), "caBundle published", || async {
        let mb = m.get(FULLNAME).await.ok()?.webhooks?[0]
            .client_config
            .ca_bundle
            .clone()?;
        let vb = v.get(FULLNAME).await.ok()?.webhooks?[0]
            .client_config
            .ca_bundle
            .clone()?;
        (mb == vb).then_some(())
    })
    .await;
    let s: Secret = Api::namespaced(c.clone(), RELEASE_NS)
        .get(&secret)
        .await
        .unwrap();
    assert_eq!(
        s.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), "team-a");
    let p = envtest::eventually(
        Duration::from_secs(30),
        "Pod admitted through TLS",
        || async {
            pods.create(&PostParams::default(), &pod("a", "ghcr.io/acme/app:1"))
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(secrets_of(&p), ["acme-pull"]);
    let err = pods
        .create(&PostParams::default(), &pod("b", "docker.io/evilcorp/x:1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    let log = server.log();
    let lower = log.to_lowercase();
    assert!(
        // "code: 403" as kube prints a Status: a bare "403" also matches microseconds
        // in the log's timestamps.
        !lower.contains("forbidden") && !lower.contains("code: 403"),
        "forbidden in log:\n{log}"
    );
}

#[tokio::test]
async fn the_helm_test_script_passes_against_the_real_api_server() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    envtest::create_namespace(&c, "team-a", None).await;
    let install = Install::new(&env, &install::ghcr_values(), &[]).await;
    let mut with_test = install::ghcr_values();
    with_test["tests"] = json!({"enabled": true, "namespace": "team-a", "registry": "ghcr-acme"});
    let rendered = support::render_chart(&with_test);
    let hooks: Vec<&Value> = rendered
        .iter()
        .filter(|d| d["metadata"]["annotations"]["helm.sh/hook"] == "test")
        .collect();
    assert_eq!(hooks.len(), 4);
    let discovery = Discovery::new(c.clone()).run().await.unwrap();
    for kind in ["ServiceAccount", "Role", "RoleBinding"] {
        for h in hooks.iter().filter(|d| d["kind"] == kind) {
            let ns = h["metadata"]["namespace"].as_str().unwrap();
            create_object(&c, &discovery, ns, h).await;
        }
    }
    let pod = hooks.iter().find(|d| d["kind"] == "Pod").unwrap();
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap();
    let kc = env.service_account_kubeconfig(RELEASE_NS, sa).await;
    let container = &pod["spec"]["containers"][0];
    let script = container["args"][0].as_str().unwrap();
    let assets = envtest::assets().unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    for e in container["env"].as_array().unwrap() {
        cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
    }
    let tmp = tempfile::tempdir().unwrap();
    cmd.env("HOME", tmp.path()).env("KUBECONFIG", &kc).env(
        "PATH",
        format!("{}:{}", assets.display(), std::env::var("PATH").unwrap()),
    );
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "test script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok: ghcr-acme was injected"), "{stdout}");
    // A dry run created nothing.
    assert!(
        Api::<Pod>::namespaced(c.clone(), "team-a")
            .get_opt("pullsecret-injector-test")
            .await
            .unwrap()
            .is_none()
    );
    // Its Role is for tests.namespace only.
    envtest::create_namespace(&c, "other", None).await;
    let elsewhere = cmd.env("NAMESPACE", "other").output().unwrap();
    assert!(
        !elsewhere.status.success(),
        "no rights outside tests.namespace"
    );
    drop(install);
}
