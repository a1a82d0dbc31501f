//! The chart installed into a real control plane, as far as a process on loopback can be:
//! its ServiceAccount, RBAC and config are applied as rendered; our binary runs outside
//! the cluster as that ServiceAccount (a bound token, so exactly the chart's permissions)
//! on the rendered `config.yaml`; the chart's own webhook configurations are applied
//! unchanged except for `clientConfig`, which points at the process's 127.0.0.1 URL and CA.
//!
//! Needs `#[path = "common/envtest.rs"] mod envtest;` and `mod support;` in the test file.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use kube::api::{DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::envtest::{self, Envtest};
use crate::support::{self, Server};

/// The release as the tests install it (`helm install psi … -n pullsecret-injector`).
pub const RELEASE: &str = "psi";
pub const RELEASE_NS: &str = "pullsecret-injector";
/// `<release>-<chart>`: the name of every namespaced and cluster object the chart makes.
pub const FULLNAME: &str = "psi-pullsecret-injector";
/// A namespace the tests create only to see that the API server calls us.
const PROBE_NS: &str = "psi-probe";

pub struct Install {
    /// Every object the chart rendered, in file order.
    pub rendered: Vec<Value>,
    /// The rendered `config.yaml` the process runs on.
    pub config: String,
    /// The webhook configurations as applied (clientConfig rewritten).
    pub mutating: Value,
    pub validating: Option<Value>,
    /// The running webhook process (None while stopped).
    pub server: Option<Server>,
    /// Where the process listens (kept across restarts: the API server's URL).
    pub addr: String,
    tls: tempfile::TempDir,
    kubeconfig: PathBuf,
    extra_args: Vec<String>,
}

/// Chart values several tests install: one registry (`ghcr.io/acme`, secret `ghcr-acme`)
/// with a source in `registry-creds` and `alwaysPull`, tenants (`team-*`) only, and the
/// mutating webhook failing closed (so an unreachable webhook cannot pass for "nothing to
/// do").
pub fn ghcr_values() -> Value {
    json!({
        "registries": [{
            "name": "ghcr-acme",
            "match": ["ghcr.io/acme"],
            "secret": "ghcr-acme",
            "alwaysPull": true,
            "namespaces": {"include": ["team-*"]},
            "source": {"namespace": "registry-creds", "name": "ghcr-acme-source"}
        }],
        "namespaces": {"exclude": ["kube-system", "registry-creds"]},
        "webhook": {"failurePolicy": "Fail"}
    })
}

/// Rendered objects of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Creates `obj` through discovery (any kind, either scope), in `namespace` when
/// namespaced.
pub async fn create_object(client: &Client, discovery: &Discovery, namespace: &str, obj: &Value) {
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
    let tm = dynamic.types.clone().expect("apiVersion and kind");
    let (group, version) = tm
        .api_version
        .split_once('/')
        .unwrap_or(("", &tm.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &tm.kind);
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("unknown kind {gvk:?}"));
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &ar),
        Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &dynamic)
        .await
        .unwrap_or_else(|e| panic!("{} {:?} rejected: {e}", tm.kind, dynamic.metadata.name));
}

/// Creates namespace `name` unless it exists (a test may have prepared it, with a Lease,
/// say).
pub async fn ensure_namespace(client: &Client, name: &str) {
    let exists = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get namespace")
        .is_some();
    if !exists {
        envtest::create_namespace(client, name, None).await;
    }
}

impl Install {
    /// Renders the chart with `values`, applies its ServiceAccount, RBAC and webhook
    /// configurations, starts the binary as that ServiceAccount, and returns once the API
    /// server calls it. `extra_args` go to `serve` (e.g. `--identity`).
    pub async fn new(env: &Envtest, values: &Value, extra_args: &[&str]) -> Install {
        let rendered = support::render_chart(values);
        let c = &env.client;
        ensure_namespace(c, RELEASE_NS).await;
        let discovery = Discovery::new(c.clone()).run().await.expect("discovery");
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ] {
            for obj in of_kind(&rendered, kind) {
                create_object(c, &discovery, RELEASE_NS, obj).await;
            }
        }
        let config = of_kind(&rendered, "ConfigMap")
            .first()
            .and_then(|cm| cm["data"]["config.yaml"].as_str())
            .expect("the chart renders config.yaml")
            .to_string();
        let sa = of_kind(&rendered, "ServiceAccount")
            .first()
            .and_then(|sa| sa["metadata"]["name"].as_str())
            .unwrap_or(FULLNAME)
            .to_string();
        let kubeconfig = env.service_account_kubeconfig(RELEASE_NS, &sa).await;

        // A serving certificate for 127.0.0.1 that survives restarts of the process.
        let tls = tempfile::tempdir().unwrap();
        let bundle =
            pullsecret_injector::certs::generate(&["127.0.0.1".to_string()], 2).expect("certs");
        std::fs::write(tls.path().join("ca.crt"), &bundle.ca_pem).unwrap();
        std::fs::write(tls.path().join("tls.crt"), &bundle.cert_pem).unwrap();
        std::fs::write(tls.path().join("tls.key"), &bundle.key_pem).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");

        let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&bundle.ca_pem);
        let point = |hook_conf: &Value, path: &str| -> Value {
            let mut conf = hook_conf.clone();
            for hook in conf["webhooks"].as_array_mut().expect("webhooks") {
                hook["clientConfig"] =
                    json!({"url": format!("https://{addr}{path}"), "caBundle": ca_b64});
            }
            conf
        };
        let mutating = point(
            of_kind(&rendered, "MutatingWebhookConfiguration")
                .first()
                .expect("the chart renders a MutatingWebhookConfiguration"),
            "/mutate",
        );
        let validating = of_kind(&rendered, "ValidatingWebhookConfiguration")
            .first()
            .map(|v| point(v, "/validate"));

        let mut install = Install {
            rendered,
            config,
            mutating,
            validating,
            server: None,
            addr,
            tls,
            kubeconfig,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        install.start();
        create_object(c, &discovery, RELEASE_NS, &install.mutating).await;
        if let Some(v) = &install.validating {
            create_object(c, &discovery, RELEASE_NS, v).await;
        }
        install.wait_called(env).await;
        install
    }

    /// Starts (or restarts) the process on the same address and certificate.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "already running");
        let cert = self.tls.path().join("tls.crt");
        let key = self.tls.path().join("tls.key");
        let mut args: Vec<&str> = vec![
            "--listen",
            &self.addr,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--release-namespace",
            RELEASE_NS,
        ];
        args.extend(self.extra_args.iter().map(String::as_str));
        self.server = Some(Server::start_with(&self.config, &args, false));
    }

    /// Kills the process (the API server now finds nothing listening).
    pub fn stop(&mut self) {
        drop(self.server.take());
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the webhook is running")
    }

    /// The running process's Prometheus metrics, as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.server().metrics_addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Total admission requests the process has answered on `endpoint` (`mutate` or
    /// `validate`), from its own metrics.
    pub async fn requests(&self, endpoint: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| {
                l.starts_with("pullsecret_injector_admission_requests_total{")
                    && l.contains(&format!("endpoint=\"{endpoint}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the API server has picked up the webhook configurations and calls the
    /// process (they are loaded asynchronously): dry-run Pods in a probe namespace until
    /// every configured endpoint has seen a request.
    pub async fn wait_called(&self, env: &Envtest) {
        let c = env.client.clone();
        ensure_namespace(&c, PROBE_NS).await;
        let endpoints: &[&str] = if self.validating.is_some() {
            &["mutate", "validate"]
        } else {
            &["mutate"]
        };
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c, PROBE_NS);
        let probe: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"generateName": "probe-"},
            "spec": {"containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10"}]}
        }))
        .unwrap();
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            if let Err(e) = pods.create(&dry, &probe).await {
                last = e.to_string();
            }
            let mut called = true;
            for e in endpoints {
                called &= self.requests(e).await >= 1.0;
            }
            if called {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the API server did not call the webhooks within 30 s (last probe error: \
                 {last:?})\n--- webhook log ---\n{}",
                self.server().log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
