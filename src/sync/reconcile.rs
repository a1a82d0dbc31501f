//! The reconcile engine: one task, one level-triggered pass over everything at a time.
//!
//! A pass snapshots the caches, asks [`desired::plan`] what to do, and executes it
//! (at most `PARALLEL_WRITES` requests in flight). It runs when the caches change, the
//! config changes, this replica gains the Lease, a failed pass's backoff ends, or every
//! `RESYNC`; bursts of watch events within `DEBOUNCE` are one pass. Only the Lease holder
//! passes, and every write is cut off when its leadership ends (see `writes::Gate`).
//!
//! Why not kube-runtime's `Controller`: our unit of work is the whole desired state (a
//! source rotation touches every namespace, a namespace label change every entry), and
//! the plan needs the snapshot of all of it to find clashes and deletions; keyed per
//! object it would be the same full plan run once per key.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::cache::Cache;
use super::desired::{self, Action, Problem};
use super::error::WriteError;
use super::lease::Leadership;
use super::repair::Repair;
use super::report::{Reporter, conflict_key, problem_key};
use super::writes::{Gate, Writer};
use crate::config::Config;
use crate::metrics::{Metrics, ResultLabels};

const DEBOUNCE: Duration = Duration::from_millis(300);
const RESYNC: Duration = Duration::from_secs(300);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const PARALLEL_WRITES: usize = 8;

pub(crate) struct Reconciler {
    pub(crate) config: Arc<ArcSwap<Config>>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) writer: Arc<Writer>,
    pub(crate) reporter: Arc<Reporter>,
    pub(crate) leadership: Leadership,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) repair: Repair,
}

/// The wait after `failures` failed passes in a row: doubling from 1 s, at most 60 s.
fn backoff(failures: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

impl Reconciler {
    /// Runs until the process ends.
    pub(crate) async fn run(mut self, mut config_changed: watch::Receiver<u64>) {
        let mut gained = self.leadership.subscribe();
        let mut config_open = true;
        let mut failures = 0u32;
        let mut next = Instant::now() + RESYNC;
        loop {
            tokio::select! {
                _ = self.cache.changed.notified() => {}
                r = config_changed.changed(), if config_open => config_open = r.is_ok(),
                r = gained.changed() => if r.is_err() {
                    // The leadership is gone with the process: nothing left to do.
                    return;
                },
                _ = tokio::time::sleep_until(next) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            if !self.leadership.is_leader() || !self.cache.ready() {
                next = Instant::now() + RESYNC;
                continue;
            }
            let ok = self.pass().await;
            failures = if ok { 0 } else { failures.saturating_add(1) };
            next = Instant::now() + if ok { RESYNC } else { backoff(failures) };
        }
    }

    /// One level-triggered pass over everything. A single failed write does not stop the
    /// others; returns whether all succeeded.
    async fn pass(&mut self) -> bool {
        let leadership = self.leadership.clone();
        let gate = Gate::Leader(&leadership);
        let cfg = self.config.load_full();
        let namespaces = self.cache.namespace_list();
        let existing = self.cache.relevant_secrets(&cfg);
        let sources = self.cache.source_states(&cfg);
        let plan = desired::plan(&cfg, &namespaces, &existing, &sources);

        let mut live = HashSet::new();
        for p in &plan.problems {
            live.insert(problem_key(p));
            // "Missing" before a source's watch has listed is not news.
            if let Problem::SourceMissing { source, .. } = p
                && self.cache.source(source).is_none()
            {
                continue;
            }
            self.reporter.problem(p);
        }
        for a in &plan.actions {
            if let Action::Conflict {
                namespace, name, ..
            }
            | Action::Create {
                namespace, name, ..
            } = a
            {
                live.insert(conflict_key(namespace, name));
            }
        }

        let mut ok = true;
        // Built eagerly (not started: futures are lazy), so the stream's type holds no
        // closure over borrowed data, which a spawned task could not name.
        let writes: Vec<_> = plan
            .actions
            .iter()
            .map(|a| self.apply(gate, a, &sources).map(move |r| (a, r)))
            .collect();
        let results: Vec<(&Action, Result<(), WriteError>)> = futures_util::stream::iter(writes)
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        for (a, r) in results {
            if let Err(e) = r {
                ok = false;
                tracing::warn!(action = ?a, error = %e, "sync write failed; will retry");
            }
        }
        self.reporter.retain_live(&live);

        if self.cache.accounts_watched() {
            let accounts = self.cache.accounts();
            for p in desired::sa_patches(&cfg, &plan, &existing, &accounts) {
                if let Err(e) = self.writer.patch_account(gate, &p).await {
                    ok = false;
                    tracing::warn!(namespace = %p.namespace, service_account = %p.service_account, error = %e, "service account patch failed; will retry");
                }
            }
        }
        if let Err(e) = self
            .repair
            .run(
                gate,
                &self.writer,
                &self.reporter,
                &self.cache,
                &cfg,
                &existing,
            )
            .await
        {
            ok = false;
            tracing::warn!(error = %e, "stuck pod repair failed");
        }
        let result = if ok { "success" } else { "failure" };
        self.metrics
            .sync_reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        ok
    }

    async fn apply(
        &self,
        gate: Gate<'_>,
        a: &Action,
        sources: &std::collections::HashMap<crate::config::Source, desired::SourceState>,
    ) -> Result<(), WriteError> {
        let valid = |src| match sources.get(src) {
            Some(desired::SourceState::Valid(v)) => Some(v),
            _ => None,
        };
        let w = &self.writer;
        match a {
            Action::Conflict {
                namespace,
                name,
                registry,
            } => {
                self.reporter.conflict(namespace, name, registry);
                Ok(())
            }
            Action::Create {
                namespace,
                name,
                source,
                registry,
            } => {
                if self.reporter.recently_foreign(&a.key()) {
                    self.reporter.conflict(namespace, name, registry);
                    return Ok(());
                }
                let Some(v) = valid(source) else {
                    return Ok(());
                };
                w.create_copy(gate, namespace, name, source, v, registry)
                    .await
                    .map(drop)
            }
            Action::Update {
                source,
                resource_version,
                ..
            } => match valid(source) {
                Some(v) => {
                    w.update_copy(gate, &a.key(), source, v, resource_version)
                        .await
                }
                None => Ok(()),
            },
            Action::Recreate {
                namespace,
                name,
                source,
                registry,
                resource_version,
                uid,
            } => {
                w.delete_copy(gate, &a.key(), resource_version, uid).await?;
                let Some(v) = valid(source) else {
                    return Ok(());
                };
                w.create_copy(gate, namespace, name, source, v, registry)
                    .await
                    .map(drop)
            }
            Action::Delete {
                resource_version,
                uid,
                ..
            } => w.delete_copy(gate, &a.key(), resource_version, uid).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
