//! Self-managed certificates (`serve --managed-certs`) against a real API server: the
//! process makes its CA and serving certificate, stores them in a Secret it owns, writes
//! the CA bundle into its webhook configurations, and rotates the serving certificate and
//! the CA (with an overlap) under a stream of Pod creates without one failed admission.
//! Lifetimes are shortened with the same flags an operator would use.

#[path = "common/envtest.rs"]
mod envtest;
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::*;

const NS: &str = "psi-system";
const TENANT: &str = "team-a";
const SECRET: &str = "psi-webhook-tls";
const HOOKS: &str = "psi-managed";

const CONFIG: &str = r#"
registries:
  - name: ghcr-acme
    match: ["ghcr.io/acme"]
    secret: ghcr-acme
"#;

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Webhook configurations pointing at `addr`, with no caBundle (the process writes it),
/// failing closed, for Pods in namespaces labelled `psi-test: on`.
async fn create_hooks(c: &kube::Client, addr: &str) {
    let hook = |path: &str| {
        json!({
            "name": format!("{}.pullsecret-injector.io", &path[1..]),
            "clientConfig": {"url": format!("https://{addr}{path}")},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
            "namespaceSelector": {"matchLabels": {"psi-test": "on"}}
        })
    };
    let m: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": HOOKS}, "webhooks": [hook("/mutate")]
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(c.clone())
        .create(&PostParams::default(), &m)
        .await
        .unwrap();
    let v: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": HOOKS}, "webhooks": [hook("/validate")]
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(c.clone())
        .create(&PostParams::default(), &v)
        .await
        .unwrap();
}

async fn ca_bundles(c: &kube::Client) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let m = Api::<MutatingWebhookConfiguration>::all(c.clone())
        .get(HOOKS)
        .await
        .unwrap();
    let v = Api::<ValidatingWebhookConfiguration>::all(c.clone())
        .get(HOOKS)
        .await
        .unwrap();
    (
        m.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
            .map(|b| b.0),
        v.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
            .map(|b| b.0),
    )
}

fn key_of(s: &Secret, k: &str) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(k))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

fn serve(env: &envtest::Envtest, addr: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--listen",
        addr,
        "--managed-certs",
        SECRET,
        "--managed-certs-dns",
        "127.0.0.1",
        "--mutating-webhook-configuration",
        HOOKS,
        "--validating-webhook-configuration",
        HOOKS,
        "--kubeconfig",
        env.kubeconfig_path.to_str().unwrap(),
        "--release-namespace",
        NS,
        "--no-sync",
    ];
    args.extend_from_slice(extra);
    Server::start_with(CONFIG, &args, false)
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_admission() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    envtest::create_namespace(&c, NS, None).await;
    let on = std::collections::BTreeMap::from([("psi-test".to_string(), "on".to_string())]);
    envtest::create_namespace(&c, TENANT, Some(on)).await;
    let addr = format!("127.0.0.1:{}", port());
    create_hooks(&c, &addr).await;
    // Short lives: the serving certificate is re-issued every few seconds and the CA is
    // replaced about 30 s in.
    let _server = serve(
        &env,
        &addr,
        &[
            "--ca-validity",
            "45s",
            "--cert-validity",
            "12s",
            "--ca-propagation",
            "3s",
        ],
    );
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let first = secrets.get(SECRET).await.expect("the certificate secret");
    assert_eq!(
        first.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    let bundle = key_of(&first, "ca.crt");
    envtest::eventually(Duration::from_secs(20), "caBundle written", || {
        let c = c.clone();
        let bundle = bundle.clone();
        async move {
            let (m, v) = ca_bundles(&c).await;
            (m.as_ref() == Some(&bundle) && v.as_ref() == Some(&bundle)).then_some(())
        }
    })
    .await;

    // A stream of Pod creates (dry run: admitted, mutated, not stored) for 40 s.
    let pods: Api<Pod> = Api::namespaced(c.clone(), TENANT);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "load-"},
        "spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}]}
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let (mut admitted, mut failed) = (0u32, Vec::new());
    let mut signing_cas = vec![key_of(&first, "ca-signing.crt")];
    let mut serving = vec![key_of(&first, "tls.crt")];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        match pods.create(&dry, &pod).await {
            Ok(p) => {
                let names: Vec<String> = p
                    .spec
                    .and_then(|s| s.image_pull_secrets)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                assert_eq!(names, ["ghcr-acme"], "admitted without the mutation");
                admitted += 1;
            }
            Err(e) => failed.push(format!("{:?}: {e}", start.elapsed())),
        }
        if let Ok(s) = secrets.get(SECRET).await {
            let ca = key_of(&s, "ca-signing.crt");
            if signing_cas.last() != Some(&ca) {
                signing_cas.push(ca);
            }
            let cert = key_of(&s, "tls.crt");
            if serving.last() != Some(&cert) {
                serving.push(cert);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        failed.is_empty(),
        "{} failed admissions: {failed:#?}",
        failed.len()
    );
    assert!(admitted > 100, "only {admitted} admissions");
    assert!(signing_cas.len() >= 2, "the CA was never replaced in 40 s");
    assert!(
        serving.len() >= 4,
        "the serving certificate was re-issued only {} times",
        serving.len() - 1
    );
    // The bundle the API server uses is what the Secret says, old CA still included.
    let s = secrets.get(SECRET).await.unwrap();
    let (m, v) = ca_bundles(&c).await;
    assert_eq!(m.as_deref(), Some(key_of(&s, "ca.crt").as_slice()));
    assert_eq!(v.as_deref(), Some(key_of(&s, "ca.crt").as_slice()));
}

#[tokio::test]
async fn a_secret_we_did_not_make_is_never_taken_over() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    envtest::create_namespace(&c, NS, None).await;
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "dGhlaXJz", "tls.key": "dGhlaXJz"}
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let before = secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--managed-certs", SECRET, "--no-cluster-access"])
        .output()
        .unwrap();
    // Without cluster access the flag is refused outright.
    assert!(!out.status.success());
    let addr = format!("127.0.0.1:{}", port());
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &addr,
            "--metrics-listen",
            "127.0.0.1:0",
            "--no-sync",
        ])
        .args(["--managed-certs", SECRET, "--release-namespace", NS])
        .arg("--kubeconfig")
        .arg(&env.kubeconfig_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "started on a foreign secret");
    assert!(err.contains("not taking it over"), "{err}");
    let after = secrets.get(SECRET).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.data, before.data);
}
