//! A real etcd + kube-apiserver for end-to-end tests, following the controller-runtime
//! envtest convention: `KUBEBUILDER_ASSETS` names a directory holding `etcd` and
//! `kube-apiserver` (e.g. from `setup-envtest use -p path`). Without it, [`start`] prints
//! why and returns `None`, so the tests pass as skipped where the binaries do not exist.
//!
//! Everything listens on 127.0.0.1 on free ports with state in a temp dir; the API server
//! authenticates clients by certificate only (a fresh CA per run, the admin in
//! `system:masters`) and authorises with RBAC, like a real cluster. No controller-manager
//! or scheduler runs: namespaces never finish terminating, pods are never scheduled,
//! ServiceAccounts are not created automatically.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

pub struct Envtest {
    /// Admin client (`system:masters`).
    pub client: Client,
    /// The admin's kubeconfig, for building more clients (or writing to a file).
    pub kubeconfig: Kubeconfig,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The CA that signed the API server's serving cert and the client certs.
    pub ca_pem: String,
    /// PEM of the CA key, for issuing more client certificates.
    pub ca_key_pem: String,
    // Field order is drop order: the API server stops before etcd, both before the dir goes.
    apiserver: Proc,
    etcd: Proc,
    pub dir: tempfile::TempDir,
}

/// A child process killed on drop, so a panicking test (or a failed start) leaves nothing
/// running behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The assets directory, or `None` (after printing the skip notice) when not configured.
pub fn assets() -> Option<PathBuf> {
    match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!("skipped: KUBEBUILDER_ASSETS not set");
            None
        }
    }
}

/// A kubeconfig for `server` authenticating with a client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Kubeconfig {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: user
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: envtest
  context: {{cluster: envtest, user: user}}
current-context: envtest
"#,
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    );
    Kubeconfig::from_yaml(&yaml).expect("kubeconfig")
}

pub async fn client_from(kc: &Kubeconfig) -> Client {
    let cfg = kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(cfg).expect("client")
}

impl Envtest {
    /// A client certificate for `user` in `groups`, signed by the run's CA.
    pub async fn client_as(&self, user: &str, group: Option<&str>) -> (Client, Kubeconfig) {
        let bundle = pullsecret_injector::certs::Bundle {
            ca_pem: self.ca_pem.clone(),
            ca_key_pem: self.ca_key_pem.clone(),
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        let (cert, key) = pullsecret_injector::certs::issue(&bundle, &[], Some((user, group)), 1)
            .expect("client cert");
        let kc = kubeconfig(&self.server, &self.ca_pem, &cert, &key);
        (client_from(&kc).await, kc)
    }
}

/// Starts etcd and kube-apiserver, or returns `None` when `KUBEBUILDER_ASSETS` is unset.
/// Panics (failing the test) when it is set but the servers do not come up.
pub async fn start() -> Option<Envtest> {
    let assets = assets()?;
    let etcd_bin = std::env::var_os("TEST_ASSET_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| assets.join("etcd"));
    let apiserver_bin = std::env::var_os("TEST_ASSET_KUBE_APISERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| assets.join("kube-apiserver"));
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: PathBuf| path.display().to_string();

    // etcd
    let (client_port, peer_port) = (free_port(), free_port());
    let etcd_log = p("etcd.log");
    let mut etcd = Proc(spawn(
        &etcd_bin,
        &[
            format!("--data-dir={}", s(p("etcd"))),
            "--name=envtest".into(),
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=envtest=http://127.0.0.1:{peer_port}"),
        ],
        &etcd_log,
    ));

    // certificates: one CA for serving and clients; a key for service account tokens
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let bundle = pullsecret_injector::certs::generate(&names, 2).expect("certs");
    let (admin_cert, admin_key) = pullsecret_injector::certs::issue(
        &bundle,
        &[],
        Some(("envtest-admin", Some("system:masters"))),
        1,
    )
    .expect("admin cert");
    let sa_key = rcgen::KeyPair::generate().expect("sa key").serialize_pem();
    for (name, text) in [
        ("ca.crt", &bundle.ca_pem),
        ("serving.crt", &bundle.cert_pem),
        ("serving.key", &bundle.key_pem),
        ("sa.key", &sa_key),
    ] {
        std::fs::write(p(name), text).expect("write cert");
    }

    let port = free_port();
    let server = format!("https://127.0.0.1:{port}");
    let api_log = p("kube-apiserver.log");
    let mut apiserver = Proc(spawn(
        &apiserver_bin,
        &[
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", s(p("apiserver-certs"))),
            format!("--tls-cert-file={}", s(p("serving.crt"))),
            format!("--tls-private-key-file={}", s(p("serving.key"))),
            format!("--client-ca-file={}", s(p("ca.crt"))),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", s(p("sa.key"))),
            format!("--service-account-signing-key-file={}", s(p("sa.key"))),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            // No controller-manager creates `default` ServiceAccounts here.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ],
        &api_log,
    ));

    let kubeconfig = kubeconfig(&server, &bundle.ca_pem, &admin_cert, &admin_key);
    let client = client_from(&kubeconfig).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // The `default` namespace exists once the bootstrap controllers have run.
        let ns: Api<Namespace> = Api::all(client.clone());
        if let Ok(Some(_)) = ns.get_opt("default").await {
            break;
        }
        for (name, child, log) in [
            ("etcd", &mut etcd, &etcd_log),
            ("kube-apiserver", &mut apiserver, &api_log),
        ] {
            if let Ok(Some(st)) = child.0.try_wait() {
                panic!("{name} exited ({st}):\n{}", tail(log));
            }
        }
        if Instant::now() > deadline {
            panic!(
                "kube-apiserver not ready after 90s\n--- etcd ---\n{}\n--- kube-apiserver ---\n{}",
                tail(&etcd_log),
                tail(&api_log)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Some(Envtest {
        client,
        kubeconfig,
        server,
        ca_pem: bundle.ca_pem.clone(),
        ca_key_pem: bundle.ca_key_pem.clone(),
        dir,
        etcd,
        apiserver,
    })
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plants a live sync Lease held by another identity in `namespace`, so a controller
/// started afterwards stays passive: whatever appears then was done at admission time.
pub async fn hold_sync_lease_elsewhere(client: &Client, namespace: &str) {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(pullsecret_injector::sync::lease::LEASE_NAME.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("someone-else".into()),
            lease_duration_seconds: Some(3600),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &lease)
        .await
        .expect("create lease");
}

/// Creates a namespace with the given labels.
pub async fn create_namespace(
    client: &Client,
    name: &str,
    labels: Option<std::collections::BTreeMap<String, String>>,
) {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels,
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&kube::api::PostParams::default(), &ns)
        .await
        .expect("create namespace");
}
