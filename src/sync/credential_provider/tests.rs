//! The whole fetch-and-refresh path against a protocol-conformant plugin
//! (`tests/plugins/credential_provider.rs`, built here with one `rustc` call): success,
//! expiry and refresh, malformed output, timeout, non-zero exit, partial `auth`, and
//! that a failure keeps the last good credentials. The delivery of those credentials to
//! a real API server is `tests/e2e_credential_provider.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::refresh::{FetchError, Refresher};
use crate::config::{Config, CredentialProvider, Source};
use crate::metrics::{Metrics, ProviderFailureLabels, RegistryLabels};
use crate::sync::cache::Cache;
use crate::sync::lease::Leadership;
use crate::sync::report::Reporter;

const HOST: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

/// The test plugin, compiled once per test process.
fn plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("psi-test-plugin")
            .tempdir()
            .unwrap()
            .keep();
        let out = dir.join("credential-provider");
        let src = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/plugins/credential_provider.rs"
        );
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let st = std::process::Command::new(rustc)
            .args(["--edition", "2024", "-o"])
            .arg(&out)
            .arg(src)
            .status()
            .expect("rustc runs");
        assert!(st.success(), "building the test plugin failed");
        out
    })
}

struct World {
    dir: tempfile::TempDir,
    spec: Arc<CredentialProvider>,
    config: Arc<ArcSwap<Config>>,
    reporter: Arc<Reporter>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    events: tokio::sync::mpsc::Receiver<crate::sync::report::Queued>,
}

impl World {
    fn new(timeout: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            &format!(
                r#"
registries:
  - name: ecr
    match: ["{HOST}"]
    secret: ecr-pull
    source:
      credentialProvider:
        command: {}
        env: [{{name: PSI_TEST_PLUGIN_DIR, value: "{}"}}]
        image: {HOST}/any
        timeout: {timeout}
        minRefresh: 1s
        maxRefresh: 1m
"#,
                plugin().display(),
                dir.path().display()
            ),
            "t.yaml",
        )
        .unwrap();
        let Some(Source::CredentialProvider(spec)) = cfg.registries[0].source.clone() else {
            unreachable!()
        };
        let metrics = Arc::new(Metrics::new());
        let (reporter, events) = Reporter::new(metrics.clone(), Default::default());
        let cache = Arc::new(Cache::default());
        let leadership = Leadership::default();
        World {
            dir,
            spec,
            config: Arc::new(ArcSwap::from_pointee(cfg)),
            reporter: Arc::new(reporter),
            cache,
            metrics,
            leadership,
            events,
        }
    }

    fn mode(&self, m: &str) {
        let tmp = self.dir.path().join("mode.tmp");
        std::fs::write(&tmp, m).unwrap();
        std::fs::rename(tmp, self.dir.path().join("mode")).unwrap();
    }

    fn refresher(&self) -> Refresher {
        // No test here uses serviceAccountToken mode; a request would fail the run.
        let (svc, _) = tower_test::mock::pair::<
            hyper::Request<kube::client::Body>,
            hyper::Response<kube::client::Body>,
        >();
        Refresher {
            spec: self.spec.clone(),
            client: kube::Client::new(svc, "default"),
            config: self.config.clone(),
            cache: self.cache.clone(),
            leadership: self.leadership.clone(),
            reporter: self.reporter.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The username the cache holds for the entry, if any.
    fn user(&self) -> Option<String> {
        let v = self.cache.provider(&self.spec)?;
        let doc: serde_json::Value =
            serde_json::from_slice(&v.data[".dockerconfigjson"].0).unwrap();
        doc["auths"][HOST]["username"].as_str().map(str::to_string)
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("runs"))
            .unwrap_or_default()
            .len()
    }

    fn failures(&self, reason: &'static str) -> u64 {
        self.metrics
            .provider_failures
            .get_or_create(&ProviderFailureLabels {
                registry: "ecr".into(),
                reason,
            })
            .get()
    }
}

fn labels() -> RegistryLabels {
    RegistryLabels {
        registry: "ecr".into(),
    }
}

async fn fetch_err(w: &World, mode: &str) -> FetchError {
    w.mode(mode);
    match w.refresher().fetch().await {
        Ok(_) => panic!("{mode}: accepted"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn one_run_of_the_plugin_for_each_kind_of_answer() {
    let w = World::new("2s");
    w.mode("ok AWS 12h0m0s");
    let a = w.refresher().fetch().await.unwrap();
    assert_eq!(
        a.lifetime,
        super::response::Lifetime::For(Duration::from_secs(43200))
    );
    assert_eq!(a.source.auth_keys, vec![HOST.to_string()]);
    // The request the plugin got is the kubelet's, for the configured image.
    let req = std::fs::read_to_string(w.dir.path().join("requests")).unwrap();
    let req: serde_json::Value = serde_json::from_str(req.lines().next().unwrap()).unwrap();
    assert_eq!(
        req,
        serde_json::json!({
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "kind": "CredentialProviderRequest",
            "image": format!("{HOST}/any"),
        })
    );

    let cases = [
        ("garbage", "malformed", "not JSON"),
        (
            "wrongversion",
            "malformed",
            "apiVersion is \"credentialprovider.kubelet.k8s.io/v1alpha1\"",
        ),
        ("partial u", "partial_auth", HOST),
        (
            "fail",
            "exit",
            "exited with exit status: 1; stderr: test plugin: simulated failure",
        ),
        ("huge", "output_too_large", "wrote more than 1048576 bytes"),
    ];
    for (mode, kind, text) in cases {
        let e = fetch_err(&w, mode).await;
        assert_eq!(e.kind(), kind, "{mode}: {e}");
        assert!(e.to_string().contains(text), "{mode}: {e}");
        assert!(!e.to_string().contains("pw-"), "{mode}: {e}");
    }
    let t = Instant::now();
    let e = fetch_err(&w, "hang").await;
    assert_eq!(e.kind(), "timeout", "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn refreshes_before_expiry_keeps_the_last_good_answer_and_stops_without_the_lease() {
    let mut w = World::new("5s");
    w.mode("ok u1 2s");
    // Not leading: the plugin is not run.
    let task = tokio::spawn(w.refresher().run());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.runs(), 0, "a standby runs no plugin");

    w.leadership.set_for_test(true);
    wait(&w, "u1", Duration::from_secs(3)).await;
    let m = &w.metrics;
    let last = m.provider_last_success.get_or_create(&labels()).get();
    let expiry = m.provider_expiry.get_or_create(&labels()).get();
    assert_eq!(expiry - last, 2, "expiry = success + cacheDuration");
    // Refreshed at 80% of the 2 s lifetime, before the credentials expire.
    w.mode("ok u2 2s");
    let t = Instant::now();
    wait(&w, "u2", Duration::from_secs(3)).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refreshed after {:?}",
        t.elapsed()
    );

    // Failing: the credentials stay, failures are counted, an Event is queued once.
    // (Waits for the failures to be counted, not for the runs to start: a run is
    // counted when the plugin starts, its failure only once it has exited.)
    w.mode("fail");
    eventually(Duration::from_secs(6), "two failed runs counted", || {
        w.failures("exit") >= 2
    })
    .await;
    assert_eq!(
        w.user().as_deref(),
        Some("u2"),
        "a failure keeps the last good answer"
    );
    let mut failed_events = 0;
    while let Ok((_, ev)) = w.events.try_recv() {
        if ev.reason == "CredentialProviderFailed" {
            failed_events += 1;
            assert!(ev.note.unwrap().contains("keep the last good credentials"));
        }
    }
    assert_eq!(failed_events, 1, "one Event per kind of failure");
    // Recovered within the backoff.
    w.leadership.set_for_test(true);
    w.mode("ok u3 2s");
    wait(&w, "u3", Duration::from_secs(5)).await;
    assert!(
        std::iter::from_fn(|| w.events.try_recv().ok())
            .any(|(_, ev)| ev.reason == "CredentialProviderRecovered")
    );

    // Leadership lost: the answer is forgotten (a later leader term must not write it
    // over fresher copies) and the gauges go.
    w.leadership.set_for_test(false);
    eventually(Duration::from_secs(3), "credentials forgotten", || {
        w.user().is_none()
    })
    .await;
    assert!(
        !w.metrics
            .encode()
            .contains("credential_provider_last_success_timestamp_seconds{")
    );
    let runs = w.runs();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(w.runs(), runs, "no runs without the Lease");
    assert!(!task.is_finished());
    task.abort();
}

async fn eventually(within: Duration, what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait(w: &World, user: &str, within: Duration) {
    eventually(within, &format!("the cache holds {user}"), || {
        w.user().as_deref() == Some(user)
    })
    .await;
}
