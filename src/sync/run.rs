//! Task wiring and supervision. Every task the controller needs is started here into one
//! `JoinSet`, and [`Running::failed`] resolves the moment any of them ends: none is meant
//! to end while the process runs, so an ending (a panic included) is a fault the caller
//! turns into a non-zero exit. Nothing is spawned detached.
//!
//! Tasks: the namespace watch, one secret watch per pull-secret type, the config
//! follower (which owns the per-source watches, the credential-provider refreshers and
//! the ServiceAccount watch, started and stopped as the config changes), the election,
//! the reconciler, the background audit and the Event publisher.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use super::cache::{Cache, WATCHED_TYPES};
use super::credential_provider::{self, Refresher};
use super::desired::source_string;
use super::ensure;
use super::error::{EnsureError, SyncError};
use super::lease::{Election, Leadership};
use super::reconcile::Reconciler;
use super::repair::Repair;
use super::report::{self, Reporter};
use super::writes::Writer;
use crate::admission::NamespaceFacts;
use crate::cluster::{BoxFuture, Cluster};
use crate::config::{Config, CredentialProvider, SecretRef, Source};
use crate::metrics::Metrics;

/// The webhook's view of the cluster, backed by the caches.
pub(crate) struct KubeCluster {
    cache: Arc<Cache>,
    writer: Arc<Writer>,
    leadership: Leadership,
    access: Access,
}

/// What the controller may do with the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Watch namespaces and pull secrets for the webhook's facts; write nothing (no
    /// copies, no Lease, no admission-time create).
    ReadOnly,
    /// Also deliver copies: the election, the reconciler and the admission-time create.
    ReadWrite,
}

impl Cluster for KubeCluster {
    fn facts(&self, namespace: &str) -> NamespaceFacts {
        self.cache.facts(namespace)
    }

    fn ensure_secrets<'a>(
        &'a self,
        config: &'a Config,
        namespace: &'a str,
        secrets: &'a [&'a str],
    ) -> BoxFuture<'a, Result<(), EnsureError>> {
        if self.access == Access::ReadOnly {
            return Box::pin(async { Ok(()) });
        }
        Box::pin(ensure::ensure(
            &self.cache,
            &self.writer,
            config,
            namespace,
            secrets,
        ))
    }

    /// Caches listed, and (when it writes) the API server answered a Lease round within
    /// the renew deadline: a replica that cannot reach the API server says so.
    fn ready(&self) -> bool {
        self.cache.ready()
            && self.cache.watches_healthy()
            && (self.access == Access::ReadOnly || self.leadership.reachable())
    }
}

/// The supervised tasks, by name.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, f: impl Future<Output = ()> + Send + 'static) {
        let h = self.set.spawn(f);
        self.names.insert(h.id(), name);
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unknown")
    }
}

/// The running controller.
pub struct Running {
    cluster: Arc<KubeCluster>,
    tasks: Tasks,
    client: Client,
    namespace: String,
    identity: String,
}

impl Running {
    pub fn cluster(&self) -> Arc<dyn Cluster> {
        self.cluster.clone()
    }

    /// Resolves when a task ends, which is always a fault.
    pub async fn failed(&mut self) -> SyncError {
        match self.tasks.set.join_next_with_id().await {
            Some(Ok((id, ()))) => SyncError::TaskEnded {
                task: self.tasks.name(id),
            },
            Some(Err(e)) => {
                let task = self.tasks.name(e.id());
                let message = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-text panic".into()),
                    Err(e) => e.to_string(),
                };
                SyncError::TaskPanicked { task, message }
            }
            None => SyncError::TaskEnded { task: "all" },
        }
    }

    /// Stops every task and, if this replica leads, gives the Lease up so a standby takes
    /// over at once.
    pub async fn shutdown(mut self) {
        self.tasks.set.shutdown().await;
        if self.cluster.access == Access::ReadOnly {
            return;
        }
        if let Err(e) = Election::release(
            self.client.clone(),
            &self.namespace,
            &self.identity,
            &self.cluster.leadership,
        )
        .await
        {
            tracing::warn!(error = %e, "could not release the sync lease; a standby takes over when it expires");
        }
    }
}

pub(crate) async fn start(
    client: Client,
    config: Arc<ArcSwap<Config>>,
    config_changed: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    identity: String,
    release_namespace: String,
    access: Access,
) -> Result<Running, SyncError> {
    if identity.is_empty() {
        return Err(SyncError::NoIdentity);
    }
    let cache = Arc::new(Cache::default());
    let own_pod = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(release_namespace.clone()),
        name: Some(identity.clone()),
        ..Default::default()
    };
    let (reporter, events) = Reporter::new(metrics.clone(), own_pod);
    let reporter = Arc::new(reporter);
    let writer = Arc::new(Writer::new(
        client.clone(),
        metrics.clone(),
        reporter.clone(),
    ));
    let leadership = Leadership::default();
    let mut tasks = Tasks::default();

    {
        let cache = cache.clone();
        let api = Api::<Namespace>::all(client.clone());
        tasks.spawn(
            "namespace watch",
            watch_into(
                api,
                watcher::Config::default(),
                "namespaces",
                cache.clone(),
                move |ev| cache.apply_namespace(ev),
            ),
        );
    }
    for (slot, type_) in WATCHED_TYPES.iter().enumerate() {
        let cache = cache.clone();
        let api = Api::<Secret>::all(client.clone());
        let cfg = watcher::Config::default().fields(&format!("type={type_}"));
        tasks.spawn(
            "secret watch",
            watch_into(api, cfg, WATCHED_TYPES[slot], cache.clone(), move |ev| {
                cache.apply_secret(slot, ev)
            }),
        );
    }
    let cluster = Arc::new(KubeCluster {
        cache: cache.clone(),
        writer: writer.clone(),
        leadership: leadership.clone(),
        access,
    });
    if access == Access::ReadOnly {
        return Ok(Running {
            cluster,
            tasks,
            client,
            namespace: release_namespace,
            identity,
        });
    }
    tasks.spawn(
        "config follower",
        follow_config(
            Follower {
                client: client.clone(),
                cache: cache.clone(),
                config: config.clone(),
                leadership: leadership.clone(),
                reporter: reporter.clone(),
                metrics: metrics.clone(),
            },
            config_changed.clone(),
        ),
    );
    {
        let election = Election::new(
            client.clone(),
            &release_namespace,
            identity.clone(),
            leadership.clone(),
            metrics.clone(),
        );
        tasks.spawn("leader election", election.run());
    }
    let (audit_config, audit_changed) = (config.clone(), config_changed.clone());
    {
        let reconciler = Reconciler {
            config,
            cache: cache.clone(),
            writer: writer.clone(),
            reporter,
            leadership: leadership.clone(),
            metrics: metrics.clone(),
            repair: Repair::default(),
        };
        tasks.spawn("reconciler", reconciler.run(config_changed));
    }
    tasks.spawn(
        "audit",
        super::audit::Auditor {
            client: client.clone(),
            config: audit_config,
            changed: audit_changed,
            cache: cache.clone(),
            leadership: leadership.clone(),
            metrics: metrics.clone(),
        }
        .run(),
    );
    {
        let recorder = Recorder::new(
            client.clone(),
            EventReporter {
                controller: super::FIELD_MANAGER.into(),
                instance: Some(identity.clone()),
            },
        );
        tasks.spawn(
            "event publisher",
            report::publish(recorder, events, metrics.clone()),
        );
    }
    Ok(Running {
        cluster,
        tasks,
        client,
        namespace: release_namespace,
        identity,
    })
}

/// Watch retry delays: 250 ms doubling to 5 s, back to 250 ms after any successful
/// event. Not kube-runtime's default (800 ms doubling to 30 s, reset only after 120 s
/// without an error): after an API-server restart that left relists waiting up to 30 s
/// while the caches were stale. A handful of watches retrying at most every 5 s is no
/// burden on a struggling API server.
pub(super) struct WatchBackoff {
    next: Duration,
}

const WATCH_RETRY_FIRST: Duration = Duration::from_millis(250);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_RETRY_FIRST,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_FIRST;
    }
}

/// Feeds one watch into `f` forever; errors are logged, recorded for readiness and
/// retried with [`WatchBackoff`] (the stream never ends by itself).
async fn watch_into<K, F>(
    api: Api<K>,
    cfg: watcher::Config,
    what: &'static str,
    cache: Arc<Cache>,
    mut f: F,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: FnMut(watcher::Event<K>) + Send + 'static,
{
    let mut s = watcher(api, cfg).backoff(WatchBackoff::default()).boxed();
    while let Some(ev) = s.next().await {
        match ev {
            Ok(ev) => {
                cache.watch_result(what, true);
                f(ev)
            }
            Err(e) => {
                cache.watch_result(what, false);
                tracing::warn!(error = %e, watch = what, "watch failed; retrying with backoff")
            }
        }
    }
}

fn source_watch_name(r: &SecretRef) -> String {
    format!("source {}", source_string(r))
}

/// What the config follower starts its tasks with.
struct Follower {
    client: Client,
    cache: Arc<Cache>,
    config: Arc<ArcSwap<Config>>,
    leadership: super::lease::Leadership,
    reporter: Arc<Reporter>,
    metrics: Arc<Metrics>,
}

/// Keeps one watch per configured Secret source and one refresher per credential
/// provider (started and stopped as the config changes; a changed plugin config is a
/// new refresher), and starts the ServiceAccount watch the first time any entry names
/// service accounts (so clusters not using the option need no RBAC for it). Ends only if
/// one of its own tasks ends, which the supervisor treats as a fault.
async fn follow_config(f: Follower, mut changed: watch::Receiver<u64>) {
    let Follower {
        client,
        cache,
        config,
        leadership,
        reporter,
        metrics,
    } = f;
    let mut watches: JoinSet<()> = JoinSet::new();
    let mut sources: HashMap<SecretRef, AbortHandle> = HashMap::new();
    let mut providers: HashMap<Arc<CredentialProvider>, AbortHandle> = HashMap::new();
    let mut config_open = true;
    loop {
        let cfg = config.load_full();
        let wanted_providers: HashSet<Arc<CredentialProvider>> = cfg
            .registries
            .iter()
            .filter_map(|r| match &r.source {
                Some(Source::CredentialProvider(p)) => Some(p.clone()),
                _ => None,
            })
            .collect();
        providers.retain(|p, h| {
            let keep = wanted_providers.contains(p);
            if !keep {
                h.abort();
                cache.forget_provider(&p.registry);
                credential_provider::forget_metrics(&metrics, &p.registry);
            }
            keep
        });
        for p in wanted_providers {
            if providers.contains_key(&p) {
                continue;
            }
            let refresher = Refresher {
                spec: p.clone(),
                client: client.clone(),
                config: config.clone(),
                cache: cache.clone(),
                leadership: leadership.clone(),
                reporter: reporter.clone(),
                metrics: metrics.clone(),
            };
            providers.insert(p, watches.spawn(refresher.run()));
        }
        let wanted: HashSet<SecretRef> = cfg
            .registries
            .iter()
            .filter_map(|r| r.source.as_ref()?.secret().cloned())
            .collect();
        sources.retain(|r, h| {
            let keep = wanted.contains(r);
            if !keep {
                h.abort();
                cache.forget_watch(&source_watch_name(r));
            }
            keep
        });
        cache.forget_sources_except(&wanted);
        for r in wanted {
            if sources.contains_key(&r) {
                continue;
            }
            let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
            let cache = cache.clone();
            let key = r.clone();
            let h = watches.spawn(async move {
                let name = source_watch_name(&key);
                let mut s = watcher::watch_object(api, &key.name)
                    .backoff(WatchBackoff::default())
                    .boxed();
                while let Some(item) = s.next().await {
                    match item {
                        Ok(obj) => {
                            cache.watch_result(&name, true);
                            cache.set_source(&key, obj)
                        }
                        Err(e) => {
                            cache.watch_result(&name, false);
                            tracing::warn!(error = %e, source = %source_string(&key), "source watch failed; retrying")
                        }
                    }
                }
            });
            sources.insert(r, h);
        }
        let needs_accounts = cfg
            .registries
            .iter()
            .any(|r| !r.service_accounts.is_empty());
        if needs_accounts && cache.start_watching_accounts() {
            let api = Api::<ServiceAccount>::all(client.clone());
            let cache = cache.clone();
            watches.spawn(async move {
                watch_into(
                    api,
                    watcher::Config::default(),
                    "serviceaccounts",
                    cache.clone(),
                    move |ev| cache.apply_account(ev),
                )
                .await
            });
        }
        cache.changed.notify_one();
        loop {
            tokio::select! {
                r = changed.changed(), if config_open => {
                    config_open = r.is_ok();
                    if config_open {
                        break;
                    }
                }
                Some(done) = watches.join_next() => match done {
                    Err(e) if e.is_cancelled() => {}
                    // Its own task ended: end too, so the supervisor sees it.
                    _ => {
                        tracing::error!("a source watch, credential provider refresher or serviceaccount watch ended");
                        return;
                    }
                },
                // No config changes can come any more and no watch runs: idle.
                else => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_double_to_five_seconds_and_reset() {
        use kube::runtime::utils::Backoff;
        let mut b = WatchBackoff::default();
        let ms: Vec<u128> = b.by_ref().take(7).map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(WATCH_RETRY_FIRST));
    }
}
