//! A real control plane for end-to-end tests: etcd, kube-apiserver and
//! kube-controller-manager on loopback, built from pinned Go modules by
//! `tests/envtest/install.sh` (which prints the directory to use as `KUBEBUILDER_ASSETS`,
//! the controller-runtime envtest convention; `kubectl` lives there too).
//!
//! Without `KUBEBUILDER_ASSETS`, [`start`] prints why and returns `None`, so `cargo test`
//! stays usable anywhere; under `CI=true` a missing asset is a test failure instead.
//!
//! Each call starts a fresh control plane: free ports on 127.0.0.1, state in a temp dir.
//! The API server authenticates clients by certificate (a fresh CA per run, the admin in
//! `system:masters`) and service-account token, authorises with RBAC, runs the default
//! admission plugins (ServiceAccount included) and writes a JSON audit log of every Pod
//! request on Pods, Secrets and ServiceAccounts at `Metadata` level
//! ([`Envtest::audit_events`]). kube-controller-manager runs
//! the workload, namespace, service-account and garbage-collector controllers, each with
//! its own service-account credentials as on a real cluster. No scheduler or kubelet runs:
//! Pods are created and admitted but never scheduled.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

pub struct Envtest {
    /// Admin client (`system:masters`).
    pub client: Client,
    /// The admin's kubeconfig, for building more clients.
    pub kubeconfig: Kubeconfig,
    /// The admin's kubeconfig as a file (for our binary and `kubectl`).
    pub kubeconfig_path: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// The CA that signed the API server's serving cert and the client certs.
    pub ca_pem: String,
    /// PEM of the CA key, for issuing more client certificates.
    pub ca_key_pem: String,
    /// The API server's audit log (JSON lines; see `AUDIT_POLICY`).
    pub audit_log: PathBuf,
    /// The `KUBEBUILDER_ASSETS` directory (holds `kubectl`).
    pub assets: PathBuf,
    // Field order is drop order: controllers, then the API server, then etcd, then the dir.
    controller_manager: Proc,
    apiserver: Proc,
    /// The API server's arguments, for [`Envtest::restart_apiserver`].
    apiserver_args: Vec<String>,
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

/// `N` distinct free ports on 127.0.0.1: all listeners stay open until every port is
/// chosen, so no two of them can be the same (binding port 0 one at a time can hand out
/// a port just released).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local addr").port())
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

/// True when running under CI (`CI=true`), where an e2e test that would skip fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The assets directory, or `None` (after printing the skip notice) when not configured.
/// Under `CI=true` a missing or incomplete assets directory panics: CI must run every
/// e2e test for real.
pub fn assets() -> Option<PathBuf> {
    let dir = match std::env::var_os("KUBEBUILDER_ASSETS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            assert!(
                !in_ci(),
                "KUBEBUILDER_ASSETS is not set under CI=true; run \
                 `export KUBEBUILDER_ASSETS=$(tests/envtest/install.sh)` (an e2e test that \
                 skips in CI is a failure)"
            );
            eprintln!(
                "skipped: KUBEBUILDER_ASSETS not set (export KUBEBUILDER_ASSETS=$(tests/envtest/install.sh))"
            );
            return None;
        }
    };
    for bin in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        assert!(
            dir.join(bin).is_file(),
            "KUBEBUILDER_ASSETS={} has no {bin}; rebuild with tests/envtest/install.sh",
            dir.display()
        );
    }
    Some(dir)
}

/// A kubeconfig for `server` authenticating with a client certificate.
pub fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Kubeconfig {
    Kubeconfig::from_yaml(&cert_kubeconfig_text(server, ca_pem, cert_pem, key_pem))
        .expect("kubeconfig")
}

fn cert_kubeconfig_text(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    kubeconfig_text(
        server,
        ca_pem,
        serde_json::json!({"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}),
    )
}

/// A kubeconfig (JSON, which is YAML) for `server` trusting `ca_pem`, authenticating with
/// `user` (the fields of `users[].user`: a client certificate, or a `token`).
fn kubeconfig_text(server: &str, ca_pem: &str, user: serde_json::Value) -> String {
    use base64::Engine;
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem)
        }}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
        "current-context": "envtest"
    })
    .to_string()
}

pub async fn client_from(kc: &Kubeconfig) -> Client {
    let cfg = kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(cfg).expect("client")
}

/// What the audit policy records: every request on Pods (and their subresources),
/// Secrets and ServiceAccounts at `Metadata` level (which carries the webhooks'
/// `auditAnnotations`, and never a Secret's data), so tests can order "secret created"
/// before "pod created" by `stageTimestamp`; nothing else.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["pods", "pods/ephemeralcontainers", "secrets", "serviceaccounts"]
  - level: None
"#;

/// The controllers the tests rely on. No node, route or IPAM controllers: there are no
/// nodes. `serviceaccount-token` is left out: tokens come from the TokenRequest API.
const CONTROLLERS: &str = "serviceaccount-controller,namespace-controller,\
garbage-collector-controller,deployment-controller,replicaset-controller,\
statefulset-controller,job-controller,cronjob-controller,ttl-after-finished-controller,\
root-ca-certificate-publisher-controller,clusterrole-aggregation-controller";

impl Envtest {
    /// A client certificate for `user` in `groups`, signed by the run's CA.
    pub async fn client_as(&self, user: &str, group: Option<&str>) -> (Client, Kubeconfig) {
        let (cert, key) = self.cert_for(user, group);
        let kc = kubeconfig(&self.server, &self.ca_pem, &cert, &key);
        (client_from(&kc).await, kc)
    }

    fn cert_for(&self, user: &str, group: Option<&str>) -> (String, String) {
        let bundle = pullsecret_injector::certs::Bundle {
            ca_pem: self.ca_pem.clone(),
            ca_key_pem: self.ca_key_pem.clone(),
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        pullsecret_injector::certs::issue(&bundle, &[], Some((user, group)), 1)
            .expect("client cert")
    }

    /// Runs the built `kubectl` as the admin with `args`, feeding `stdin`; returns
    /// (success, stdout, stderr). `--kubeconfig` is passed for the caller.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use std::io::Write;
        let mut child = Command::new(self.assets.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        drop(input);
        let out = child.wait_with_output().expect("kubectl output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Every audit event written so far (the log is written synchronously: once a request
    /// has returned, its `ResponseComplete` event is in the file).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Kills kube-apiserver and starts it again on the same port, certificates and etcd
    /// (what a control-plane upgrade or crash looks like to clients: every connection and
    /// watch breaks); returns once it serves again.
    pub async fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.start_apiserver().await;
    }

    /// Kills kube-apiserver (SIGKILL) and reaps it: from now on every request and watch
    /// fails until [`Envtest::start_apiserver`]. etcd and its data stay.
    pub fn stop_apiserver(&mut self) {
        let _ = self.apiserver.0.kill();
        let _ = self.apiserver.0.wait();
    }

    /// Starts kube-apiserver again (after [`Envtest::stop_apiserver`]) with the same
    /// arguments, port, certificates and etcd; returns once it serves.
    pub async fn start_apiserver(&mut self) {
        assert!(
            matches!(self.apiserver.0.try_wait(), Ok(Some(_))),
            "kube-apiserver is still running"
        );
        let log = self.dir.path().join("kube-apiserver.restarted.log");
        self.apiserver = Proc(spawn(
            &self.assets.join("kube-apiserver"),
            &self.apiserver_args,
            &log,
        ));
        let ns: Api<Namespace> = Api::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(ns.get_opt("default").await, Ok(Some(_))) {
            if let Ok(Some(st)) = self.apiserver.0.try_wait() {
                panic!(
                    "kube-apiserver exited after restart ({st}):\n{}",
                    tail(&log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not serving 120 s after restart:\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The API server's log so far (for a failing test's message).
    pub fn apiserver_log(&self) -> String {
        tail(&self.dir.path().join("kube-apiserver.log"))
    }

    /// The running kube-apiserver's process id (it changes with every restart).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.0.id()
    }

    /// Freezes kube-apiserver with SIGSTOP: connections stay open and requests hang, as
    /// with a stalled control plane, until the returned guard is dropped (or
    /// [`Frozen::thaw`]ed), which sends SIGCONT, so even a panicking test leaves no
    /// stopped process behind. Make no API request while frozen: it would hang too.
    pub fn freeze_apiserver(&self) -> Frozen {
        let pid = self.apiserver_pid();
        signal(pid, "STOP");
        Frozen { pid }
    }
}

/// A SIGSTOPped kube-apiserver; SIGCONT on drop. See [`Envtest::freeze_apiserver`].
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    /// Lets the API server run again.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.pid, "CONT");
    }
}

/// Sends `sig` (a name: `STOP`, `CONT`, …) to `pid` with the `kill` command (the tests
/// have no libc dependency); panics if it cannot be delivered.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Starts etcd, kube-apiserver and kube-controller-manager, or returns `None` when
/// `KUBEBUILDER_ASSETS` is unset outside CI. Panics (failing the test) when it is set but
/// the servers do not come up.
pub async fn start() -> Option<Envtest> {
    let assets = assets()?;
    // Another process (a parallel test) may still take a chosen port between choosing and
    // binding; such a start is retried with new ports, any other failure panics.
    for attempt in 1.. {
        match start_once(&assets).await {
            Ok(env) => return Some(env),
            Err(e) if attempt < 3 && e.contains("address already in use") => {
                eprintln!("control plane start lost a port race, retrying: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!()
}

async fn start_once(assets: &Path) -> Result<Envtest, String> {
    let assets = assets.to_path_buf();
    let [client_port, peer_port, port, kcm_port] = free_ports::<4>();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |name: &str| dir.path().join(name);
    let s = |path: PathBuf| path.display().to_string();

    // etcd
    let etcd_log = p("etcd.log");
    let mut etcd = Proc(spawn(
        &assets.join("etcd"),
        &[
            format!("--data-dir={}", s(p("etcd"))),
            "--name=envtest".into(),
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=envtest=http://127.0.0.1:{peer_port}"),
            // Test data: no fsync per write (etcd's own integration tests do the same).
            "--unsafe-no-fsync".into(),
        ],
        &etcd_log,
    ));

    // certificates: one CA for serving and clients; a key for service account tokens
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let bundle = pullsecret_injector::certs::generate(&names, 2).expect("certs");
    let issue = |user: &str, group: Option<&str>| {
        pullsecret_injector::certs::issue(&bundle, &[], Some((user, group)), 1)
            .expect("client cert")
    };
    let (admin_cert, admin_key) = issue("envtest-admin", Some("system:masters"));
    // kube-controller-manager's own identity, bound by the bootstrap RBAC policy.
    let (kcm_cert, kcm_key) = issue("system:kube-controller-manager", None);
    // The token signing key; the API server verifies with the public half (it does not
    // derive it from a PKCS#8 private key file).
    let sa_keypair = rcgen::KeyPair::generate().expect("sa key");
    let (sa_key, sa_pub) = (sa_keypair.serialize_pem(), sa_keypair.public_key_pem());
    for (name, text) in [
        ("ca.crt", &bundle.ca_pem),
        ("serving.crt", &bundle.cert_pem),
        ("serving.key", &bundle.key_pem),
        ("sa.key", &sa_key),
        ("sa.pub", &sa_pub),
    ] {
        std::fs::write(p(name), text).expect("write cert");
    }
    std::fs::write(p("audit-policy.yaml"), AUDIT_POLICY).expect("audit policy");

    let server = format!("https://127.0.0.1:{port}");
    let api_log = p("kube-apiserver.log");
    let audit_log = p("audit.log");
    let apiserver_args: Vec<String> = vec![
        format!("--etcd-servers=http://127.0.0.1:{client_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // The `kubernetes` Service endpoints may not be loopback; nothing here needs
        // them (controller-runtime's envtest does the same).
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", s(p("apiserver-certs"))),
        format!("--tls-cert-file={}", s(p("serving.crt"))),
        format!("--tls-private-key-file={}", s(p("serving.key"))),
        format!("--client-ca-file={}", s(p("ca.crt"))),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={server}"),
        format!("--service-account-key-file={}", s(p("sa.pub"))),
        format!("--service-account-signing-key-file={}", s(p("sa.key"))),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--allow-privileged=true".into(),
        format!("--audit-policy-file={}", s(p("audit-policy.yaml"))),
        format!("--audit-log-path={}", s(audit_log.clone())),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
    ];
    let mut apiserver = Proc(spawn(
        &assets.join("kube-apiserver"),
        &apiserver_args,
        &api_log,
    ));

    let kubeconfig_path = p("admin.kubeconfig");
    std::fs::write(
        &kubeconfig_path,
        cert_kubeconfig_text(&server, &bundle.ca_pem, &admin_cert, &admin_key),
    )
    .expect("write kubeconfig");
    std::fs::write(
        p("kcm.kubeconfig"),
        cert_kubeconfig_text(&server, &bundle.ca_pem, &kcm_cert, &kcm_key),
    )
    .expect("write kubeconfig");
    let kubeconfig = kubeconfig(&server, &bundle.ca_pem, &admin_cert, &admin_key);
    let client = client_from(&kubeconfig).await;

    let kcm_log = p("kube-controller-manager.log");
    let mut controller_manager: Option<Proc> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Ready once the bootstrap controllers made `default`, and the service-account
        // controller (so kube-controller-manager is up) gave it its `default` SA.
        let ns: Api<Namespace> = Api::all(client.clone());
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        if let Ok(Some(_)) = ns.get_opt("default").await {
            if controller_manager.is_none() {
                controller_manager = Some(Proc(spawn(
                    &assets.join("kube-controller-manager"),
                    &[
                        format!("--kubeconfig={}", s(p("kcm.kubeconfig"))),
                        "--use-service-account-credentials=true".into(),
                        format!("--service-account-private-key-file={}", s(p("sa.key"))),
                        format!("--root-ca-file={}", s(p("ca.crt"))),
                        format!("--controllers={CONTROLLERS}"),
                        "--leader-elect=false".into(),
                        "--bind-address=127.0.0.1".into(),
                        format!("--secure-port={kcm_port}"),
                        format!("--cert-dir={}", s(p("kcm-certs"))),
                    ],
                    &kcm_log,
                )));
            }
            if let Ok(Some(_)) = sa.get_opt("default").await {
                break;
            }
        }
        let mut procs = vec![
            ("etcd", &mut etcd, &etcd_log),
            ("kube-apiserver", &mut apiserver, &api_log),
        ];
        if let Some(kcm) = controller_manager.as_mut() {
            procs.push(("kube-controller-manager", kcm, &kcm_log));
        }
        for (name, child, log) in procs {
            if let Ok(Some(st)) = child.0.try_wait() {
                return Err(format!("{name} exited ({st}):\n{}", tail(log)));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "control plane not ready after 120s\n--- etcd ---\n{}\n--- kube-apiserver ---\n{}\n--- kube-controller-manager ---\n{}",
                tail(&etcd_log),
                tail(&api_log),
                tail(&kcm_log)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Envtest {
        client,
        kubeconfig,
        kubeconfig_path,
        server,
        ca_pem: bundle.ca_pem.clone(),
        ca_key_pem: bundle.ca_key_pem.clone(),
        audit_log,
        assets,
        controller_manager: controller_manager.expect("started above"),
        apiserver_args,
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

/// The name of the Lease the sync controller elects its writer with, in the release
/// namespace (documented in the README, "One writer").
pub const SYNC_LEASE: &str = "pullsecret-injector-sync";

/// Plants a live sync Lease held by another identity in `namespace`, so a controller
/// started afterwards stays passive: whatever appears then was done at admission time.
pub async fn hold_sync_lease_elsewhere(client: &Client, namespace: &str) {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(SYNC_LEASE.into()),
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

/// Creates a namespace with the given labels and waits for its `default`
/// ServiceAccount (without it the ServiceAccount admission plugin refuses Pods, as on any
/// real cluster in the instant after a namespace is created).
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
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    eventually(
        Duration::from_secs(30),
        &format!("default ServiceAccount in {name}"),
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
}

impl Envtest {
    /// A kubeconfig file authenticating as ServiceAccount `namespace/name` with a bound
    /// token from the TokenRequest API (as a Pod's projected token would), for running our
    /// binary with exactly the permissions the chart grants it.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        let req: TokenRequest =
            serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 3600}}))
                .expect("token request");
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(name, &Default::default(), &req)
            .await
            .expect("token request")
            .status
            .and_then(|s| s.token)
            .expect("token in the TokenRequest status");
        let text = kubeconfig_text(
            &self.server,
            &self.ca_pem,
            serde_json::json!({ "token": token }),
        );
        let path = self
            .dir
            .path()
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// Creates the `kubernetes.io/dockerconfigjson` Secret `namespace/name` that
/// `kubectl create secret docker-registry --docker-server=REGISTRY` makes, with
/// `user_password` (`user:password`) as the credentials.
pub async fn create_pull_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    registry: &str,
    user_password: &str,
) -> k8s_openapi::api::core::v1::Secret {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(user_password);
    let config = serde_json::json!({"auths": {registry: {"auth": auth}}});
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(std::collections::BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            k8s_openapi::ByteString(config.to_string().into_bytes()),
        )])),
        ..Default::default()
    };
    Api::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create pull secret {namespace}/{name}: {e}"))
}

/// Sets (or, with `None`, removes) label `key` on namespace `name`.
pub async fn label_namespace(client: &Client, name: &str, key: &str, value: Option<&str>) {
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("label namespace {name}: {e}"));
}
