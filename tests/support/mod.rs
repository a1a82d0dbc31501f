//! Shared test support: runs the real binary on 127.0.0.1 with a generated certificate,
//! talks to it over HTTPS trusting only that CA, and applies returned patches with the
//! json-patch crate the way the API server would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_pullsecret-injector");

/// The config most tests use.
pub const CONFIG: &str = r#"
registries:
  - name: tcr
    match: [demo-tcr.tencentcloudcr.com, "*.tencentcloudcr.com"]
    secret: tcr-pull
    namespaces: {include: ["team-*"], exclude: [team-legacy]}
  - name: ghcr-acme
    match: [ghcr.io/acme]
    secret: ghcr-acme
  - name: hub
    match: [docker.io/library]
    secret: hub-library
  - name: local
    match: ["localhost:5000"]
    secret: local-registry
    alwaysPull: true
  - name: quay-all
    match: [quay.io]
    secret: quay-all
  - name: quay-team
    match: [quay.io/team]
    secret: quay-team
namespaces:
  exclude: [kube-system]
alwaysPullImages: none
"#;

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Server {
    /// Starts `serve --no-sync` with `config` and extra args; waits for its "listening on" line.
    /// `--listen` and `--metrics-listen` default to random ports on 127.0.0.1.
    pub fn start(config: &str, extra: &[&str]) -> Server {
        Server::start_with(config, extra, true)
    }

    /// As `start`; `no_sync: false` lets the server use cluster access (`--kubeconfig`).
    pub fn start_with(config: &str, extra: &[&str], no_sync: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).unwrap();
        let certs = dir.path().join("certs");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve");
        // Random loopback ports unless the caller names its own (a restart on the same
        // address, for instance).
        for flag in ["--listen", "--metrics-listen"] {
            if !extra.contains(&flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        // Tests stop servers at once unless they test the delay itself.
        if !extra.contains(&"--shutdown-delay") {
            cmd.args(["--shutdown-delay", "0"]);
        }
        cmd.arg("--config").arg(&config_path);
        if no_sync {
            // Hermetic: never the developer's own cluster from ~/.kube/config.
            cmd.arg("--no-cluster-access");
        }
        if !extra.contains(&"--tls-cert") && !extra.contains(&"--managed-certs") {
            cmd.arg("--self-signed-dir").arg(&certs);
        }
        // The server's log (tracing writes to stderr), for a failing test to show.
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        // The server stops when its stdin closes. We hold the write end (in `child.stdin`)
        // and never write to it; the kernel closes it when this test process ends, however
        // it ends. `Drop` alone is not enough: a `Server` in a `static` is never dropped.
        cmd.arg("--exit-on-stdin-eof").stdin(Stdio::piped());
        cmd.args(extra).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().expect("spawn server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut metrics_addr) = (String::new(), String::new());
        for line in lines.by_ref().take(5) {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("listening on https://") {
                let (a, m) = rest.split_once(" (metrics on http://").unwrap();
                addr = a.to_string();
                metrics_addr = m.trim_end_matches("/metrics)").to_string();
                break;
            }
        }
        assert!(!addr.is_empty(), "server did not report its address");
        // keep draining stdout so the child never blocks on a full pipe
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            metrics_addr,
            dir,
            config_path,
        }
    }

    /// `serve` with a given certificate and key (and further args).
    pub fn start_tls(config: &str, cert: &Path, key: &Path, extra: &[&str]) -> Server {
        let mut args = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Server::start(config, &args)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    pub fn client(&self) -> reqwest::Client {
        client_trusting(&self.ca_path())
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        wait_with_deadline(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the `kill` command (no libc dependency in tests).
pub fn unsafe_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .https_only(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A minimal, API-server-shaped Pod with the given containers `(name, image)`.
pub fn pod(containers: &[(&str, &str)]) -> Value {
    let cs: Vec<Value> = containers
        .iter()
        .map(|(n, i)| json!({"name": n, "image": i, "imagePullPolicy": "IfNotPresent", "resources": {}}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a", "labels": {"app": "web"}},
        "spec": {"containers": cs, "restartPolicy": "Always", "serviceAccountName": "default"}
    })
}

pub fn review_for(object: Value, namespace: &str, operation: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// POSTs a review and returns the parsed AdmissionReview response, checking the envelope.
pub async fn post_review(server: &Server, path: &str, review: &Value) -> Value {
    let resp = server
        .client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(review).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    check_envelope(review, &body);
    body
}

pub fn check_envelope(review: &Value, body: &Value) {
    assert_eq!(body["apiVersion"], review["apiVersion"]);
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    assert!(body["response"]["allowed"].is_boolean());
    let has_patch = body["response"].get("patch").is_some();
    assert_eq!(
        has_patch,
        body["response"].get("patchType").is_some(),
        "patch and patchType go together"
    );
    if has_patch {
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        assert!(
            body["response"]["patch"].is_string(),
            "patch must be a base64 string"
        );
    }
}

/// The decoded RFC 6902 operations of a response, or an empty list.
pub fn patch_ops(body: &Value) -> Vec<Value> {
    match body["response"].get("patch").and_then(Value::as_str) {
        None => Vec::new(),
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
    }
}

/// Applies the response's patch to `object` with the json-patch crate.
pub fn apply(object: &Value, body: &Value) -> Value {
    let mut doc = object.clone();
    let ops = patch_ops(body);
    if !ops.is_empty() {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut doc, &patch).expect("patch applies to the original object");
    }
    doc
}

/// Applies and reads the result as a typed Pod, as the API server decodes it.
pub fn apply_pod(object: &Value, body: &Value) -> Pod {
    serde_json::from_value(apply(object, body)).expect("patched object is a valid Pod")
}

pub fn secret_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .map(|l| l.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

/// Runs the binary with stdin, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Registry rules used by the policy tests; `{mode}` is replaced per file.
pub const POLICY_CONFIG: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
  - name: local
    match: ["localhost:5000"]
    secret: local-registry
policy:
  mode: {mode}
  allow: ["*.tencentcloudcr.com", "docker.io/library", "registry.k8s.io", "localhost:5000"]
  deny: ["docker.io/library/evil", "docker.io/evilcorp"]
  requireAlwaysPull: private
  exemptNamespaces: [kube-system]
  overrides:
    - namespaces: ["sandbox-*"]
      mode: warn
      allow: ["*"]
"#;

pub fn policy_server(mode: &str) -> Server {
    Server::start(&POLICY_CONFIG.replace("{mode}", mode), &[])
}

/// A pod update review: `old` stored, `new` requested, optional subresource.
pub fn update_review(old: Value, new: Value, ns: &str, sub: Option<&str>) -> Value {
    let mut r = review_for(new, ns, "UPDATE");
    r["request"]["oldObject"] = old;
    if let Some(s) = sub {
        r["request"]["subResource"] = json!(s);
    }
    r
}

/// Every object the chart renders with `values` (real Helm v4 through
/// `tests/chart/render.py`), in file order.
pub fn render_chart(values: &Value) -> Vec<Value> {
    let out = Command::new("python3")
        .args(["tests/chart/render.py", "--values"])
        .arg(values.to_string())
        .output()
        .expect("python3 with tests/chart/requirements.txt installed");
    assert!(
        out.status.success(),
        "helm render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("render.py prints JSON")
}
