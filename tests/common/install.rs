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

/// `server`'s `/metrics` as text, or `None` when it does not answer within 5 s (stopped,
/// killed).
pub async fn scrape(server: &Server) -> Option<String> {
    let get = reqwest::get(format!("http://{}/metrics", server.metrics_addr));
    let resp = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .ok()?
        .ok()
}

/// The sum of the samples of metric `name` (the full sample name, e.g.
/// `pullsecret_injector_sync_copies_total`) in the OpenMetrics `text` whose labels include
/// every `labels` pair; `None` when no sample matches. Label values must not contain `,`
/// or `"` (ours do not).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (sample, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if sample != name {
            continue;
        }
        let have: Vec<&str> = label_text.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
            && let Ok(v) = value.parse::<f64>()
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Whether `server` reports itself the sync leader (`pullsecret_injector_sync_leader` is
/// 1); `None` when it does not answer or does not export the gauge.
pub async fn is_leader(server: &Server) -> Option<bool> {
    let text = scrape(server).await?;
    metric(&text, "pullsecret_injector_sync_leader", &[]).map(|v| v == 1.0)
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
    // The object's own namespace wins (the chart puts the `helm test` Role in
    // `tests.namespace`); `namespace` is the default.
    let ns = dynamic.metadata.namespace.as_deref().unwrap_or(namespace);
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
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
        let mut args = self.common_args();
        args.extend(["--listen".to_string(), self.addr.clone()]);
        args.extend(self.extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server = Some(Server::start_with(&self.config, &args, false));
    }

    /// What every process of this install runs with: certificate, ServiceAccount
    /// kubeconfig, release namespace.
    fn common_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.to_str().expect("utf-8 path").to_string();
        vec![
            "--tls-cert".into(),
            path(self.tls.path().join("tls.crt")),
            "--tls-key".into(),
            path(self.tls.path().join("tls.key")),
            "--kubeconfig".into(),
            path(self.kubeconfig.clone()),
            "--release-namespace".into(),
            RELEASE_NS.into(),
        ]
    }

    /// Another replica of the Deployment: a second process with the same config (its own
    /// copy of the file), certificate and ServiceAccount, on its own random ports, with
    /// leader-election identity `identity` (the API server does not call it: the webhook
    /// configurations point at [`Install::server`]).
    pub fn start_replica(&self, identity: &str) -> Server {
        let mut args = self.common_args();
        args.extend(["--identity".to_string(), identity.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Server::start_with(&self.config, &args, false)
    }

    /// What `helm upgrade` with `values` does to the running process's config: renders the
    /// chart and replaces the process's config file with the new `config.yaml` (written
    /// beside it and renamed over it, atomically as a ConfigMap volume update is); returns
    /// once the process counts a successful reload (so `values` must change the config).
    /// RBAC and webhook configurations are not re-applied: keep to values that need no
    /// other permissions.
    pub async fn reconfigure(&mut self, values: &Value) {
        let config = of_kind(&support::render_chart(values), "ConfigMap")
            .first()
            .and_then(|cm| cm["data"]["config.yaml"].as_str())
            .expect("the chart renders config.yaml")
            .to_string();
        let reloads = |text: &str| {
            metric(
                text,
                "pullsecret_injector_config_reloads_total",
                &[("result", "success")],
            )
            .unwrap_or(0.0)
        };
        let before = reloads(&self.metrics().await);
        let path = &self.server().config_path;
        let tmp = path.with_extension("yaml.new");
        std::fs::write(&tmp, &config).expect("write config");
        std::fs::rename(&tmp, path).expect("replace config");
        self.config = config;
        envtest::eventually(Duration::from_secs(10), "the config reload", || async {
            (reloads(&scrape(self.server()).await?) > before).then_some(())
        })
        .await;
    }

    /// `GET /readyz` on `server`'s webhook port (a process of this install): the status
    /// code, or `None` when it does not answer within 5 s.
    pub async fn readyz(&self, server: &Server) -> Option<u16> {
        let client = support::client_trusting(&self.tls.path().join("ca.crt"));
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(server.url("/readyz")).send(),
        )
        .await
        .ok()?
        .ok()?;
        Some(resp.status().as_u16())
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
