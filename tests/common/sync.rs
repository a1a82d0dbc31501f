//! The world the secret-sync end-to-end tests share (`tests/e2e_sync.rs`,
//! `tests/e2e_sync_faults.rs`): a source pull secret `creds/tcr-src`, the registry entry
//! `tcr` that copies it as `tcr-pull` into the namespaces `team-*` labelled
//! `registry-access=tcr`, the chart installed for it (`install.rs`, the real binary as the
//! chart's ServiceAccount), and readers for what the sync did: the copies, the Lease, and
//! our ServiceAccount's requests in the API server's audit log.
//!
//! Needs `#[path = "common/envtest.rs"] mod envtest;`, `#[path = "common/install.rs"] mod
//! install;` and `mod support;` in the test file.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::envtest::{self, Envtest, eventually};
use crate::install::{self, FULLNAME, Install, RELEASE_NS};
use crate::support::Server;

pub const WAIT: Duration = Duration::from_secs(30);
pub const SOURCE_NS: &str = "creds";
pub const SOURCE: &str = "tcr-src";
/// The managed copy's name in target namespaces.
pub const SECRET: &str = "tcr-pull";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// An image the `tcr` entry matches.
pub const IMAGE: &str = "demo.tencentcloudcr.com/x/app:1";

/// The `tcr` registry entry (chart values and config file alike), scoped to `team-*`
/// namespaces labelled `registry-access=tcr`.
pub fn entry() -> Value {
    json!({
        "name": "tcr",
        "match": ["*.tencentcloudcr.com"],
        "secret": SECRET,
        "source": {"namespace": SOURCE_NS, "name": SOURCE},
        "namespaces": {
            "include": ["team-*"],
            "selector": {"matchLabels": {"registry-access": "tcr"}}
        }
    })
}

/// Chart values with `registries` (a JSON list) and the mutating webhook failing closed,
/// so a webhook that is not called fails the Pod instead of passing for "nothing to do".
pub fn values(registries: Value) -> Value {
    json!({"registries": registries, "webhook": {"failurePolicy": "Fail"}})
}

/// `.dockerconfigjson` content for the matched registry with user `user`: each rotation
/// step gets its own user, so the data tells which step a copy holds.
pub fn auths(user: &str) -> Vec<u8> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    format!(r#"{{"auths":{{"*.tencentcloudcr.com":{{"auth":"{auth}"}}}}}}"#).into_bytes()
}

pub fn pull_secret(ns: &str, name: &str, data: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(data),
        )])),
        ..Default::default()
    }
}

/// Creates namespace `name`, labelled into the entry's scope when `in_scope`.
pub async fn create_ns(c: &Client, name: &str, in_scope: bool) {
    let labels =
        in_scope.then(|| BTreeMap::from([("registry-access".to_string(), "tcr".to_string())]));
    envtest::create_namespace(c, name, labels).await;
}

/// Labels `ns` into (or, with `false`, out of) the entry's scope.
pub async fn set_in_scope(c: &Client, ns: &str, in_scope: bool) {
    envtest::label_namespace(c, ns, "registry-access", in_scope.then_some("tcr")).await;
}

/// The source namespace with the source at `auths("v1")`, and the release namespace;
/// with `passive`, a live sync Lease held by another identity there, so the process never
/// reconciles and only the admission-time path writes.
pub async fn prepare(env: &Envtest, passive: bool) {
    let c = &env.client;
    create_ns(c, SOURCE_NS, false).await;
    create_ns(c, RELEASE_NS, false).await;
    Api::<Secret>::namespaced(c.clone(), SOURCE_NS)
        .create(
            &PostParams::default(),
            &pull_secret(SOURCE_NS, SOURCE, auths("v1")),
        )
        .await
        .unwrap();
    if passive {
        envtest::hold_sync_lease_elsewhere(c, RELEASE_NS).await;
    }
}

/// [`prepare`], then the chart installed with `values` and the process running as
/// `identity`; returns once the API server calls it and it reports ready (caches synced).
pub async fn install(env: &Envtest, values: &Value, identity: &str, passive: bool) -> Install {
    prepare(env, passive).await;
    let install = Install::new(env, values, &["--identity", identity]).await;
    wait_ready(&install, install.server(), true, WAIT).await;
    install
}

/// Waits until `server` (a process of `install`) answers `/readyz` with 200 (`true`) or
/// 503 (`false`).
pub async fn wait_ready(install: &Install, server: &Server, ready: bool, within: Duration) {
    let want = if ready { 200 } else { 503 };
    eventually(within, &format!("/readyz answers {want}"), || async {
        (install.readyz(server).await == Some(want)).then_some(())
    })
    .await;
}

/// Waits until `server`'s leader gauge reads `leader`.
pub async fn wait_leader(server: &Server, leader: bool, within: Duration) {
    eventually(
        within,
        &format!("pullsecret_injector_sync_leader = {}", u8::from(leader)),
        || async { (install::is_leader(server).await == Some(leader)).then_some(()) },
    )
    .await;
}

/// The holder of the sync Lease, if any.
pub async fn lease_holder(c: &Client) -> Option<String> {
    Api::<Lease>::namespaced(c.clone(), RELEASE_NS)
        .get_opt(envtest::SYNC_LEASE)
        .await
        .unwrap()?
        .spec?
        .holder_identity
}

pub async fn get_secret(c: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(c.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

pub fn data_of(s: &Secret) -> Vec<u8> {
    s.data.as_ref().unwrap()[".dockerconfigjson"].0.clone()
}

/// Replaces the source's data (a credential rotation).
pub async fn rotate_source(c: &Client, data: Vec<u8>) {
    let mut s = get_secret(c, SOURCE_NS, SOURCE).await.unwrap();
    s.data = pull_secret(SOURCE_NS, SOURCE, data).data;
    Api::<Secret>::namespaced(c.clone(), SOURCE_NS)
        .replace(SOURCE, &PostParams::default(), &s)
        .await
        .unwrap();
}

/// Waits until the copy in `ns` holds `want`, and returns it.
pub async fn wait_copy(c: &Client, ns: &str, want: &[u8]) -> Secret {
    eventually(
        WAIT,
        &format!("copy in {ns} with expected data"),
        || async {
            get_secret(c, ns, SECRET)
                .await
                .filter(|s| data_of(s) == want)
        },
    )
    .await
}

pub async fn wait_gone(c: &Client, ns: &str) {
    eventually(WAIT, &format!("no copy in {ns}"), || async {
        get_secret(c, ns, SECRET).await.is_none().then_some(())
    })
    .await
}

/// Prints a process's log if the test panics while this guard lives (the log is in the
/// process's temp dir, gone with its `Server`: declare the guard after it).
pub struct LogOnPanic {
    what: String,
    log: std::path::PathBuf,
}

impl LogOnPanic {
    pub fn new(what: &str, server: &Server) -> LogOnPanic {
        LogOnPanic {
            what: what.to_string(),
            log: server.dir.path().join("server.log"),
        }
    }
}

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- log of {} ---\n{log}", self.what);
        }
    }
}

/// The user the chart's ServiceAccount authenticates as (every process of the install).
pub fn our_user() -> String {
    format!("system:serviceaccount:{RELEASE_NS}:{FULLNAME}")
}

/// One completed request on a Secret, from the API server's audit log.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: String,
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub code: i64,
    /// `requestReceivedTimestamp`.
    pub received: Timestamp,
    /// `stageTimestamp` of `ResponseComplete`.
    pub completed: Timestamp,
}

impl Request {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A write: create, update, patch, delete or deletecollection.
    pub fn writes(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    pub fn by_us(&self) -> bool {
        self.user == our_user()
    }
}

/// Every completed request on Secrets (not their subresources) so far, in completion
/// order.
pub fn secret_requests(env: &Envtest) -> Vec<Request> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let t = |e: &Value, field: &str| -> Timestamp {
        s(&e[field])
            .parse()
            .unwrap_or_else(|err| panic!("{field} of {e}: {err}"))
    };
    let mut v: Vec<Request> = env
        .audit_events()
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["objectRef"]["resource"] == "secrets")
        .filter(|e| e["objectRef"]["subresource"].is_null())
        .map(|e| Request {
            verb: s(&e["verb"]),
            namespace: s(&e["objectRef"]["namespace"]),
            name: s(&e["objectRef"]["name"]),
            user: s(&e["user"]["username"]),
            code: e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            received: t(e, "requestReceivedTimestamp"),
            completed: t(e, "stageTimestamp"),
        })
        .collect();
    v.sort_by_key(|r| r.completed);
    v
}

/// Every write our ServiceAccount sent on Secrets (successful or not), in completion order.
pub fn our_writes(env: &Envtest) -> Vec<Request> {
    secret_requests(env)
        .into_iter()
        .filter(|r| r.by_us() && r.writes())
        .collect()
}
