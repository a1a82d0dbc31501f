//! The per-entry refresh task: while this replica leads, run the plugin, store a good
//! answer in the cache (the reconciler is notified and delivers it), and sleep until the
//! schedule says to run again.
//!
//! Leadership: only the Lease holder runs plugins (the kubelet runs them per node; here
//! one replica answering for the whole cluster is enough, and it is the one that
//! writes). When leadership lapses, the credentials are forgotten: a replica that leads
//! again later must not write what it fetched back then over the fresher copies the
//! other leader wrote in between. Until its first success the entry's copies are left
//! as they are.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::exec::{self, ExecError, Invocation, STDOUT_LIMIT};
use super::response::{self, Answer, Lifetime, ResponseError};
use super::schedule::{self, Backoff};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

use crate::config::{Config, CredentialProvider, TokenSource};
use crate::metrics::{Metrics, ProviderFailureLabels, RegistryLabels, VerbLabels};
use crate::sync::cache::Cache;
use crate::sync::lease::Leadership;
use crate::sync::report::Reporter;

/// How often a sleeping refresher looks whether it still leads.
const LEADER_POLL: Duration = Duration::from_secs(1);
/// A TokenRequest gets this long (the client has no timeout of its own).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest lifetime the API server grants: the token is only needed while the
/// plugin runs, so it should be useless soon after.
const TOKEN_SECONDS: i64 = 600;

/// One run that produced no usable credentials.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("unusable answer: {0}")]
    Response(#[from] ResponseError),
    #[error("requesting a token of serviceaccount {namespace}/{name}: {reason}")]
    Token {
        namespace: String,
        name: String,
        reason: String,
    },
}

impl FetchError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            FetchError::Exec(e) => e.kind(),
            FetchError::Response(e) => e.kind(),
            FetchError::Token { .. } => "service_account_token",
        }
    }
}

pub(crate) struct Refresher {
    pub(crate) spec: Arc<CredentialProvider>,
    /// For the TokenRequests of `serviceAccountToken` mode.
    pub(crate) client: kube::Client,
    pub(crate) config: Arc<ArcSwap<Config>>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) leadership: Leadership,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) metrics: Arc<Metrics>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Removes an entry's gauges (it left the config, or this replica stopped leading), so
/// only the replica that refreshes exports them and the alert reads the leader's values.
pub(crate) fn forget_metrics(metrics: &Metrics, registry: &str) {
    let l = RegistryLabels {
        registry: registry.to_string(),
    };
    metrics.provider_last_success.remove(&l);
    metrics.provider_expiry.remove(&l);
    metrics.provider_next_refresh.remove(&l);
}

impl Refresher {
    fn labels(&self) -> RegistryLabels {
        RegistryLabels {
            registry: self.spec.registry.clone(),
        }
    }

    /// Runs until aborted (the entry left the config or changed); never returns.
    pub(crate) async fn run(self) {
        let mut gained = self.leadership.subscribe();
        let mut backoff = Backoff::new(self.spec.max_refresh);
        loop {
            self.until_leading(&mut gained).await;
            let delay = match self.fetch().await {
                Ok(answer) => {
                    backoff.reset();
                    self.succeeded(answer)
                }
                Err(e) => self.failed(&e, backoff.failed(schedule::random())),
            };
            self.metrics
                .provider_next_refresh
                .get_or_create(&self.labels())
                .set(unix_now() + delay.as_secs() as i64);
            if !self.sleep_leading(delay).await {
                tracing::info!(registry = %self.spec.registry, "not the sync leader any more; credential provider paused and its credentials forgotten");
                self.cache.forget_provider(&self.spec.registry);
                forget_metrics(&self.metrics, &self.spec.registry);
                backoff.reset();
            }
        }
    }

    async fn until_leading(&self, gained: &mut watch::Receiver<u64>) {
        while !self.leadership.is_leader() {
            tokio::select! {
                r = gained.changed() => if r.is_err() {
                    // The election is gone with the process; the supervisor ends it.
                    std::future::pending::<()>().await;
                },
                _ = tokio::time::sleep(LEADER_POLL) => {}
            }
        }
    }

    /// Sleeps `d` while leading; false as soon as leadership lapsed.
    async fn sleep_leading(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if !self.leadership.is_leader() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            tokio::time::sleep(left.min(LEADER_POLL)).await;
        }
    }

    pub(super) async fn fetch(&self) -> Result<Answer, FetchError> {
        // The entry's current patterns (a reload may change them without changing the
        // plugin, which does not restart this task).
        let patterns = self
            .config
            .load()
            .registries
            .iter()
            .find(|r| r.name == self.spec.registry)
            .map(|r| r.patterns.clone())
            .unwrap_or_default();
        let token = match &self.spec.service_account_token {
            Some(t) => Some(self.token(t).await?),
            None => None,
        };
        let request = response::request(&self.spec.image, token.as_deref());
        let out = exec::run(&Invocation {
            command: &self.spec.command,
            args: &self.spec.args,
            env: &self.spec.env,
            stdin: &request,
            timeout: self.spec.timeout,
            stdout_limit: STDOUT_LIMIT,
        })
        .await?;
        Ok(response::parse(&out, &patterns, token.as_deref())?)
    }

    /// A fresh token of the configured ServiceAccount for the configured audience
    /// (TokenRequest API; the chart grants `serviceaccounts/token` create for exactly
    /// the names configured).
    async fn token(&self, t: &TokenSource) -> Result<String, FetchError> {
        let err = |reason: String| FetchError::Token {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            reason,
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &t.namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![t.audience.clone()]),
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.metrics
            .sync_api_requests
            .get_or_create(&VerbLabels { verb: "create" })
            .inc();
        let pp = PostParams::default();
        let call = api.create_token_request(&t.name, &pp, &req);
        match tokio::time::timeout(TOKEN_TIMEOUT, call).await {
            Ok(Ok(r)) => r
                .status
                .and_then(|s| s.token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| err("the answer holds no token".into())),
            Ok(Err(e)) => Err(err(e.to_string())),
            Err(_) => Err(err(format!("no answer within {TOKEN_TIMEOUT:?}"))),
        }
    }

    fn succeeded(&self, answer: Answer) -> Duration {
        let s = &self.spec;
        let delay = schedule::after_success(answer.lifetime, s.min_refresh, s.max_refresh);
        let now = unix_now();
        let l = self.labels();
        self.metrics
            .provider_last_success
            .get_or_create(&l)
            .set(now);
        match answer.lifetime {
            Lifetime::For(d) => {
                self.metrics
                    .provider_expiry
                    .get_or_create(&l)
                    .set(now + d.as_secs() as i64);
                if delay > d {
                    tracing::warn!(registry = %s.registry, lifetime = %crate::duration::format(d), min_refresh = %crate::duration::format(s.min_refresh),
                        "the credentials expire before minRefresh allows the next refresh; lower minRefresh");
                }
            }
            // Unknown expiry: no gauge, rather than a made-up one.
            Lifetime::Unspecified | Lifetime::DoNotCache => {
                self.metrics.provider_expiry.remove(&l);
            }
        }
        let changed = self.cache.set_provider(&self.spec, answer.source);
        tracing::info!(
            registry = %s.registry,
            changed,
            cache_key_type = %answer.cache_key_type,
            next_refresh = %crate::duration::format(delay),
            "credential provider answered"
        );
        self.reporter.provider_recovered(&s.registry);
        delay
    }

    fn failed(&self, e: &FetchError, delay: Duration) -> Duration {
        let reason = e.kind();
        self.metrics
            .provider_failures
            .get_or_create(&ProviderFailureLabels {
                registry: self.spec.registry.clone(),
                reason,
            })
            .inc();
        let kept = self.cache.has_provider(&self.spec);
        self.reporter
            .provider_failed(&self.spec.registry, reason, &e.to_string(), kept);
        tracing::debug!(registry = %self.spec.registry, retry_in = %crate::duration::format(delay), "credential provider retry scheduled");
        delay
    }
}
