//! Credential-provider sources against a real API server (envtest convention, see
//! `tests/common/envtest.rs`): the chart installed and the real binary running as its
//! ServiceAccount (`tests/common/install.rs`), with an ECR-style entry whose `source` is
//! the protocol-conformant test plugin (`tests/plugins/credential_provider.rs`, built
//! here with `rustc`) answering with `cacheDuration` shortened to seconds.
//!
//! Proves: copies appear in every namespace in scope (and in a new one) holding the
//! plugin's credentials; they rotate across several refresh cycles as its answer
//! changes; a failing plugin (non-zero exit, partial `auth`, garbage) leaves them
//! byte-for-byte as they were, is counted and reported as an Event on the leader's Pod;
//! the copies recover with the plugin; an unowned same-name secret is never touched.
//! In service-account-token mode the plugin gets a token the process requested through
//! the TokenRequest API with exactly the chart's RBAC, and an answer echoing it is
//! refused.
//! Run with `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test
//! e2e_credential_provider`; without it the test prints `skipped: KUBEBUILDER_ASSETS not
//! set` and passes (under `CI=true` it fails instead).

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;
#[path = "common/sync.rs"]
mod sync;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envtest::eventually;
use install::{RELEASE_NS, metric};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const SECRET: &str = "ecr-pull";
const WAIT: Duration = Duration::from_secs(20);

/// Builds the test plugin into this test binary's scratch directory, once per process
/// (the tests run in parallel threads and must not write the file twice).
fn build_plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("psi-test-credential-provider");
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
            let st = std::process::Command::new(rustc)
                .args(["--edition", "2024", "-o"])
                .arg(&out)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/plugins/credential_provider.rs"
                ))
                .status()
                .expect("rustc runs");
            assert!(st.success(), "building the test plugin failed");
            out
        })
        .clone()
}

/// The test plugin's control directory (see the plugin's docs).
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn mode(&self, m: &str) {
        let tmp = self.dir.path().join("mode.tmp");
        std::fs::write(&tmp, m).unwrap();
        std::fs::rename(tmp, self.dir.path().join("mode")).unwrap();
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .unwrap_or_default()
            .len()
    }
}

fn entry(plugin: &Path, dir: &Path) -> Value {
    json!({
        "name": "ecr",
        "match": [HOST],
        "secret": SECRET,
        "source": {"credentialProvider": {
            "command": plugin.display().to_string(),
            "env": [{"name": "PSI_TEST_PLUGIN_DIR", "value": dir.display().to_string()}],
            "image": format!("{HOST}/any"),
            "timeout": "3s",
            "minRefresh": "1s",
            "maxRefresh": "1m"
        }},
        "namespaces": {"include": ["team-*"]}
    })
}

/// The username in a copy's `.dockerconfigjson`, after checking the layout the kubelet
/// reads (`auth` = base64 of `user:password`).
fn user_of(s: &Secret) -> String {
    use base64::Engine;
    let doc: Value = serde_json::from_slice(&sync::data_of(s)).unwrap();
    let e = &doc["auths"][HOST];
    let user = e["username"].as_str().unwrap().to_string();
    let auth = base64::engine::general_purpose::STANDARD
        .decode(e["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(auth, format!("{user}:pw-{user}").into_bytes());
    user
}

async fn wait_user(c: &Client, ns: &str, user: &str) -> Secret {
    eventually(WAIT, &format!("copy in {ns} holds {user}"), || async {
        sync::get_secret(c, ns, SECRET)
            .await
            .filter(|s| user_of(s) == user)
    })
    .await
}

#[tokio::test]
async fn an_ecr_style_entry_keeps_working_copies_across_refreshes_and_plugin_failures() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let t0 = Instant::now();
    let c = env.client.clone();
    let plugin = Plugin {
        dir: tempfile::tempdir().unwrap(),
    };
    plugin.mode("ok v1 3s");
    let binary = build_plugin();
    for ns in ["team-a", "team-b", "team-d", "other"] {
        sync::create_ns(&c, ns, false).await;
    }
    // An unowned secret with the managed name: never touched.
    let theirs = Api::<Secret>::namespaced(c.clone(), "team-d")
        .create(
            &PostParams::default(),
            &sync::pull_secret("team-d", SECRET, sync::auths("theirs")),
        )
        .await
        .unwrap();

    let install = sync::install(
        &env,
        &sync::values(json!([entry(&binary, plugin.dir.path())])),
        "replica-0",
        false,
    )
    .await;
    let _log = sync::LogOnPanic::new("replica-0", install.server());

    let a = wait_user(&c, "team-a", "v1").await;
    wait_user(&c, "team-b", "v1").await;
    assert_eq!(a.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(
        a.metadata.labels.as_ref().unwrap()[sync::MANAGED_BY],
        "pullsecret-injector"
    );
    assert_eq!(
        a.metadata.annotations.as_ref().unwrap()["pullsecret-injector.io/source"],
        "credential-provider:ecr"
    );
    assert!(sync::get_secret(&c, "other", SECRET).await.is_none());

    // Several refresh cycles, each answer different: every copy follows. With a 3 s
    // cacheDuration the plugin runs every 2.4 s.
    for user in ["v2", "v3", "v4"] {
        plugin.mode(&format!("ok {user} 3s"));
        for ns in ["team-a", "team-b"] {
            wait_user(&c, ns, user).await;
        }
    }
    let text = install.metrics().await;
    let last = metric(
        &text,
        "pullsecret_injector_credential_provider_last_success_timestamp_seconds",
        &[("registry", "ecr")],
    )
    .expect("last success gauge");
    let expiry = metric(
        &text,
        "pullsecret_injector_credential_provider_expiry_timestamp_seconds",
        &[("registry", "ecr")],
    )
    .expect("expiry gauge");
    assert_eq!(expiry - last, 3.0, "expiry is success + cacheDuration");
    // A new namespace gets the current credentials.
    sync::create_ns(&c, "team-c", false).await;
    wait_user(&c, "team-c", "v4").await;

    // The plugin fails in three ways in turn; the copies stay exactly as they are.
    let before: Vec<Secret> = futures_util::future::join_all(
        ["team-a", "team-b", "team-c"].map(|ns| sync::get_secret(&c, ns, SECRET)),
    )
    .await
    .into_iter()
    .map(Option::unwrap)
    .collect();
    let runs = plugin.runs();
    for (mode, reason) in [
        ("fail", "exit"),
        ("partial v9", "partial_auth"),
        ("garbage", "malformed"),
    ] {
        plugin.mode(mode);
        eventually(WAIT, &format!("a failure counted as {reason}"), || async {
            let text = install.metrics().await;
            let n = metric(
                &text,
                "pullsecret_injector_credential_provider_refresh_failures_total",
                &[("registry", "ecr"), ("reason", reason)],
            );
            (n >= Some(1.0)).then_some(())
        })
        .await;
    }
    assert!(plugin.runs() >= runs + 3);
    for old in &before {
        let ns = old.metadata.namespace.as_deref().unwrap();
        let now = sync::get_secret(&c, ns, SECRET).await.expect("copy kept");
        assert_eq!(
            now.metadata.resource_version, old.metadata.resource_version,
            "the copy in {ns} was not written while the plugin failed"
        );
        assert_eq!(user_of(&now), "v4");
    }
    eventually(
        WAIT,
        "a CredentialProviderFailed Event on the leader's Pod",
        || async {
            let evs = Api::<Event>::namespaced(c.clone(), RELEASE_NS)
                .list(&ListParams::default())
                .await
                .unwrap();
            evs.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("CredentialProviderFailed")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("replica-0")
                })
                .map(drop)
        },
    )
    .await;

    // Back to working: every copy gets the new answer.
    plugin.mode("ok v5 3s");
    for ns in ["team-a", "team-b", "team-c"] {
        wait_user(&c, ns, "v5").await;
    }
    let now = sync::get_secret(&c, "team-d", SECRET).await.unwrap();
    assert_eq!(
        (
            now.metadata.resource_version.clone(),
            now.metadata.labels.clone(),
            sync::data_of(&now)
        ),
        (
            theirs.metadata.resource_version.clone(),
            theirs.metadata.labels.clone(),
            sync::data_of(&theirs)
        ),
        "the unowned secret is untouched"
    );
    eprintln!(
        "e2e_credential_provider: {:?} after the control plane started",
        t0.elapsed()
    );
}

#[tokio::test]
async fn service_account_token_mode_passes_a_token_requested_with_the_charts_rbac() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let plugin = Plugin {
        dir: tempfile::tempdir().unwrap(),
    };
    plugin.mode("token t1");
    let binary = build_plugin();
    sync::create_ns(&c, "team-a", false).await;
    sync::create_ns(&c, "identity", false).await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "ecr-puller"}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), "identity")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let mut e = entry(&binary, plugin.dir.path());
    e["source"]["credentialProvider"]["serviceAccountToken"] =
        json!({"namespace": "identity", "name": "ecr-puller", "audience": "sts.amazonaws.com"});
    let install = sync::install(&env, &sync::values(json!([e])), "replica-0", false).await;
    let _log = sync::LogOnPanic::new("replica-0", install.server());

    let copy = wait_user(&c, "team-a", "t1").await;
    // The token is the API server's, for that ServiceAccount and audience, short-lived.
    let token = std::fs::read_to_string(plugin.dir.path().join("token")).unwrap();
    let claims = token.split('.').nth(1).expect("a JWT");
    let claims: Value = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims.trim_end_matches('='))
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    };
    assert_eq!(claims["sub"], "system:serviceaccount:identity:ecr-puller");
    assert_eq!(claims["aud"], json!(["sts.amazonaws.com"]));
    let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(life <= 600, "token lifetime {life} s");

    // An answer that hands the token back as the password is refused; the copy stays.
    plugin.mode("echo-token");
    eventually(WAIT, "the echoed token refused", || async {
        let text = install.metrics().await;
        let n = metric(
            &text,
            "pullsecret_injector_credential_provider_refresh_failures_total",
            &[("registry", "ecr"), ("reason", "malformed")],
        );
        (n >= Some(1.0)).then_some(())
    })
    .await;
    let now = sync::get_secret(&c, "team-a", SECRET).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        copy.metadata.resource_version
    );
    assert!(!String::from_utf8_lossy(&sync::data_of(&now)).contains(&token));
}
