//! The background audit on the Lease holder (`audit.enabled`): a Pod watch (kube-runtime's
//! watcher: a paged LIST at one resourceVersion, then a WATCH from it), judged with
//! [`judge::audit`] (which is `/validate`'s code) after any change of pods, config or
//! leadership (once changes pause for [`QUIET`], at most [`MAX_DELAY`] after the first,
//! at least [`DEBOUNCE`] apart), and at least every [`RESYNC`] (namespace labels can change
//! what `requireAlwaysPull: private` means). The reports ([`report`]) are written only
//! where their content changed, owned-only (create-if-absent, replace at the stored
//! resourceVersion, delete with uid + resourceVersion preconditions) and at most
//! [`WRITES_PER_SECOND`] a second, each request bounded by what remains of leadership.
//!
//! Without the `wgpolicyk8s.io` CRDs the audit still judges and counts (metrics); it
//! says once that reports are not written and looks for the CRDs again every
//! [`CRD_RETRY`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Preconditions,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cache::Cache;
use super::error::is;
use super::lease::Leadership;
use super::run::WatchBackoff;
use crate::audit::judge::{self, AuditPod, NamespaceAudit};
use crate::audit::once::{PAGE_SIZE, list_all};
use crate::audit::report::{self, REPORT_NAME, Stamps};
use crate::config::Config;
use crate::metrics::{AUDIT_NAMESPACE_LABELS, AuditLabels, Metrics, VerbLabels};
use crate::ownership;

/// At least this long between two audits.
const DEBOUNCE: Duration = Duration::from_secs(2);
/// An audit waits until nothing changed for this long (a burst of deletes is one audit)…
const QUIET: Duration = Duration::from_secs(1);
/// …but never longer than this after the first change it has not judged.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A full audit at least this often, changes or not.
const RESYNC: Duration = Duration::from_secs(60);
/// Report writes per second at most.
const WRITES_PER_SECOND: u32 = 20;
/// How often to look for the report CRDs again when they are missing.
const CRD_RETRY: Duration = Duration::from_secs(15);
/// The next audit after one that could not write all its reports.
const RETRY: Duration = Duration::from_secs(10);

/// What the audit task starts with.
pub(crate) struct Auditor {
    pub(crate) client: Client,
    pub(crate) config: Arc<ArcSwap<Config>>,
    pub(crate) changed: watch::Receiver<u64>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) leadership: Leadership,
    pub(crate) metrics: Arc<Metrics>,
}

type PodKey = (String, String);

impl Auditor {
    /// Runs forever: idle until this replica leads with the audit enabled, then audits
    /// until either stops. When the audit is switched off by a config reload, the leader
    /// deletes the reports it wrote (they would go stale).
    pub(crate) async fn run(mut self) {
        let mut gained = self.leadership.subscribe();
        let mut config_open = true;
        // Tries left at deleting our reports after the audit was switched off.
        let mut cleanup_tries = 0u32;
        loop {
            let enabled = self.config.load().audit.enabled;
            if self.leadership.is_leader() {
                if enabled {
                    cleanup_tries = 3;
                    self.lead(&mut config_open).await;
                    // Only the leader's figures are current; a former leader shows none.
                    clear_metrics(&self.metrics);
                    continue;
                }
                if cleanup_tries > 0 {
                    cleanup_tries -= 1;
                    let mut w = ReportWriter::new(self.client.clone(), self.metrics.clone());
                    match w.sync(&BTreeMap::new(), &self.leadership).await {
                        Ok(()) => {
                            cleanup_tries = 0;
                            clear_metrics(&self.metrics);
                            tracing::info!("audit disabled: deleted its reports");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, tries_left = cleanup_tries, "audit disabled: could not delete all its reports")
                        }
                    }
                }
            }
            tokio::select! {
                _ = gained.changed() => {}
                r = self.changed.changed(), if config_open => config_open = r.is_ok(),
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Audits while this replica leads and the audit is enabled.
    async fn lead(&mut self, config_open: &mut bool) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default().page_size(PAGE_SIZE))
            .backoff(WatchBackoff::default())
            .boxed();
        let mut pods: HashMap<PodKey, AuditPod> = HashMap::new();
        let mut staging: Option<HashMap<PodKey, AuditPod>> = None;
        let mut listed = false;
        let mut dirty = true;
        // The first and the last change not judged yet.
        let mut changes: Option<(Instant, Instant)> = None;
        let mut last: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        let mut writer = ReportWriter::new(self.client.clone(), self.metrics.clone());
        let mut stamps = Stamps::default();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tracing::info!("audit: leading; watching pods");
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(watcher::Event::Init)) => staging = Some(HashMap::new()),
                    Some(Ok(watcher::Event::InitApply(p))) => {
                        if let Some(s) = staging.as_mut() {
                            upsert(s, &p);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(s) = staging.take() {
                            pods = s;
                        }
                        listed = true;
                        dirty = true;
                    }
                    Some(Ok(watcher::Event::Apply(p))) => {
                        upsert(&mut pods, &p);
                        dirty = true;
                        changes = Some(noted(changes));
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        pods.remove(&key_of(&p));
                        dirty = true;
                        changes = Some(noted(changes));
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "audit: pod watch failed; retrying with backoff"),
                    None => return,
                },
                r = self.changed.changed(), if *config_open => {
                    *config_open = r.is_ok();
                    dirty = true;
                    changes = Some(noted(changes));
                }
                _ = tick.tick() => {}
            }
            let cfg = self.config.load_full();
            if !self.leadership.is_leader() || !cfg.audit.enabled {
                tracing::info!("audit: stopped (not leading, or disabled)");
                return;
            }
            let due = match last {
                None => true,
                Some(t) => {
                    let settled = changes.is_none_or(|(first, latest)| {
                        latest.elapsed() >= QUIET || first.elapsed() >= MAX_DELAY
                    });
                    t.elapsed() >= RESYNC
                        || (dirty && t.elapsed() >= DEBOUNCE && settled)
                        || retry_at.is_some_and(|r| Instant::now() >= r)
                }
            };
            if listed && due && self.cache.ready() {
                dirty = false;
                changes = None;
                last = Some(Instant::now());
                let done = self.pass(&cfg, &pods, &mut writer, &mut stamps).await;
                // Unwritten reports (an error, or CRDs not there yet): again soon, not
                // only at the next change or resync.
                retry_at = (!done).then(|| Instant::now() + RETRY);
            }
        }
    }

    /// One audit: judge every pod, count, write what changed. False when the reports
    /// could not all be written.
    async fn pass(
        &self,
        cfg: &Config,
        pods: &HashMap<PodKey, AuditPod>,
        writer: &mut ReportWriter,
        stamps: &mut Stamps,
    ) -> bool {
        let started = Instant::now();
        let audits = judge::audit(cfg, pods.values(), |ns| self.cache.facts(ns));
        record_metrics(&self.metrics, &audits);
        let done = match writer.load(&self.leadership, stamps).await {
            Ok(true) => {
                let desired = desired_reports(&audits, cfg.audit.max_results_per_report, stamps);
                match writer.sync(&desired, &self.leadership).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit: reports not all written; retrying");
                        false
                    }
                }
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "audit: could not read the existing reports; retrying");
                false
            }
        };
        self.metrics
            .audit_duration
            .set(started.elapsed().as_secs_f64());
        self.metrics.audit_last_run.set(unix_now());
        tracing::debug!(pods = pods.len(), namespaces = audits.len(), took = ?started.elapsed(), "audit done");
        done
    }
}

/// `(first, latest)` change times with a change now.
fn noted(changes: Option<(Instant, Instant)>) -> (Instant, Instant) {
    let now = Instant::now();
    (changes.map_or(now, |(first, _)| first), now)
}

fn key_of(p: &Pod) -> PodKey {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

fn upsert(pods: &mut HashMap<PodKey, AuditPod>, p: &Pod) {
    match AuditPod::from_pod(p) {
        Some(a) => pods.insert(key_of(p), a),
        None => pods.remove(&key_of(p)),
    };
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Every report the findings call for: a `PolicyReport` per judged namespace (key: the
/// namespace) and, when any namespace was judged, the `ClusterPolicyReport` (key: `None`).
pub(crate) fn desired_reports(
    audits: &BTreeMap<String, NamespaceAudit>,
    max_results: usize,
    stamps: &mut Stamps,
) -> BTreeMap<Option<String>, Value> {
    let now = unix_now();
    let mut out: BTreeMap<Option<String>, Value> = audits
        .iter()
        .map(|(ns, a)| {
            (
                Some(ns.clone()),
                report::namespace_report(ns, a, max_results, stamps, now),
            )
        })
        .collect();
    if !audits.is_empty() {
        out.insert(
            None,
            report::cluster_report(audits, max_results, stamps, now),
        );
    }
    stamps.prune();
    out
}

/// `audit_offences` by namespace and rule: the namespaces with most offences by name,
/// the rest as `_other`, so a cluster of thousands of namespaces stays scrapeable.
fn record_metrics(m: &Metrics, audits: &BTreeMap<String, NamespaceAudit>) {
    let mut by_ns: Vec<(&String, usize)> = audits
        .iter()
        .map(|(ns, a)| (ns, a.findings.len() + a.unreadable.len()))
        .filter(|(_, n)| *n > 0)
        .collect();
    by_ns.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let named: HashSet<&String> = by_ns
        .iter()
        .take(AUDIT_NAMESPACE_LABELS)
        .map(|(ns, _)| *ns)
        .collect();
    let mut counts: HashMap<AuditLabels, i64> = HashMap::new();
    for (ns, a) in audits {
        let namespace = if named.contains(ns) {
            ns.clone()
        } else {
            "_other".to_string()
        };
        for f in &a.findings {
            *counts
                .entry(AuditLabels {
                    namespace: namespace.clone(),
                    rule: f.rule.as_str(),
                })
                .or_default() += 1;
        }
        if !a.unreadable.is_empty() {
            *counts
                .entry(AuditLabels {
                    namespace: namespace.clone(),
                    rule: "unreadablePod",
                })
                .or_default() += a.unreadable.len() as i64;
        }
    }
    m.audit_offences.clear();
    for (labels, n) in counts {
        m.audit_offences.get_or_create(&labels).set(n);
    }
    m.audit_pods
        .set(audits.values().map(|a| a.pods as i64).sum());
}

fn clear_metrics(m: &Metrics) {
    m.audit_offences.clear();
    m.audit_pods.set(0);
}

/// Why a report write did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReportError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer in time")]
    Timeout { what: String },
    #[error("not the sync leader any more; not written")]
    NotLeader,
    #[error("a report changed or went away behind our back; reading them again")]
    Changed,
}

/// A report this process knows it owns, as last read or written.
struct Stored {
    uid: Option<String>,
    resource_version: Option<String>,
    content: Value,
}

/// Our reports as the API server holds them, and the requests that change them.
pub(crate) struct ReportWriter {
    client: Client,
    metrics: Arc<Metrics>,
    namespaced: ApiResource,
    cluster: ApiResource,
    loaded: bool,
    /// The CRDs were missing; look again after this.
    absent_until: Option<Instant>,
    stored: HashMap<Option<String>, Stored>,
    /// Reports of our name that are not ours: never written.
    foreign: HashSet<Option<String>>,
    last_write: Option<Instant>,
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(report::GROUP, report::VERSION, kind),
        plural,
    )
}

fn describe(key: &Option<String>) -> String {
    match key {
        Some(ns) => format!("PolicyReport {ns}/{REPORT_NAME}"),
        None => format!("ClusterPolicyReport {REPORT_NAME}"),
    }
}

impl ReportWriter {
    pub(crate) fn new(client: Client, metrics: Arc<Metrics>) -> ReportWriter {
        ReportWriter {
            client,
            metrics,
            namespaced: resource("PolicyReport", "policyreports"),
            cluster: resource("ClusterPolicyReport", "clusterpolicyreports"),
            loaded: false,
            absent_until: None,
            stored: HashMap::new(),
            foreign: HashSet::new(),
            last_write: None,
        }
    }

    fn api(&self, key: &Option<String>) -> Api<DynamicObject> {
        match key {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.namespaced),
            None => Api::all_with(self.client.clone(), &self.cluster),
        }
    }

    /// One request, counted and bounded by what remains of leadership.
    async fn call<T>(
        &self,
        leadership: &Leadership,
        verb: &'static str,
        what: impl Fn() -> String,
        f: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ReportError> {
        let left = leadership.remaining().ok_or(ReportError::NotLeader)?;
        self.metrics
            .audit_api_requests
            .get_or_create(&VerbLabels { verb })
            .inc();
        match tokio::time::timeout(left, f).await {
            Err(_) => Err(ReportError::Timeout { what: what() }),
            Ok(r) => r.map_err(|source| ReportError::Api {
                what: what(),
                source,
            }),
        }
    }

    /// Reads our reports once per leadership (and after a conflict). `Ok(false)` when the
    /// CRDs are not installed: nothing can be written.
    pub(crate) async fn load(
        &mut self,
        leadership: &Leadership,
        stamps: &mut Stamps,
    ) -> Result<bool, ReportError> {
        if self.loaded {
            return Ok(true);
        }
        if self.absent_until.is_some_and(|t| Instant::now() < t) {
            return Ok(false);
        }
        let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &self.namespaced);
        let selector = format!(
            "{}={}",
            ownership::MANAGED_BY_LABEL,
            ownership::MANAGED_BY_VALUE
        );
        let listed = self
            .call(
                leadership,
                "list",
                || "listing our PolicyReports".into(),
                async {
                    let lp = ListParams::default().labels(&selector).limit(PAGE_SIZE);
                    list_all(&all, lp).await
                },
            )
            .await;
        let reports = match listed {
            // A resource the API server does not serve answers a plain-text 404, which
            // kube reports with code 404 but not reason NotFound.
            Err(ReportError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {
                if self.absent_until.is_none() {
                    tracing::warn!(
                        "audit: the PolicyReport CRDs ({}/{}) are not installed; results are judged and counted in metrics but not written (install them, e.g. with the chart's audit.installCRDs); looking again every {}s",
                        report::GROUP,
                        report::VERSION,
                        CRD_RETRY.as_secs()
                    );
                }
                self.absent_until = Some(Instant::now() + CRD_RETRY);
                return Ok(false);
            }
            r => r?,
        };
        if self.absent_until.take().is_some() {
            tracing::info!("audit: the PolicyReport CRDs are installed now; writing reports");
        }
        self.stored.clear();
        self.foreign.clear();
        for r in reports {
            let key = r.metadata.namespace.clone();
            self.remember(key, &r, stamps);
        }
        let cluster = self.api(&None);
        let got = self
            .call(
                leadership,
                "get",
                || describe(&None),
                cluster.get_opt(REPORT_NAME),
            )
            .await?;
        if let Some(r) = got {
            if ownership::is_ours(&r.metadata) {
                self.remember(None, &r, stamps);
            } else {
                self.foreign_found(None);
            }
        }
        self.loaded = true;
        Ok(true)
    }

    fn remember(&mut self, key: Option<String>, r: &DynamicObject, stamps: &mut Stamps) {
        let v = serde_json::to_value(r).unwrap_or(Value::Null);
        stamps.learn(&v);
        self.store(key, r, report::content(&v));
    }

    fn store(&mut self, key: Option<String>, r: &DynamicObject, content: Value) {
        self.stored.insert(
            key,
            Stored {
                uid: r.metadata.uid.clone(),
                resource_version: r.metadata.resource_version.clone(),
                content,
            },
        );
    }

    fn foreign_found(&mut self, key: Option<String>) {
        tracing::warn!(
            report = %describe(&key),
            "audit: a report of our name exists without our {} label; it is left alone and not written",
            ownership::MANAGED_BY_LABEL
        );
        self.foreign.insert(key);
    }

    /// Spaces writes at most [`WRITES_PER_SECOND`] a second.
    async fn pace(&mut self) {
        let gap = Duration::from_secs(1) / WRITES_PER_SECOND;
        if let Some(t) = self.last_write {
            tokio::time::sleep_until(t + gap).await;
        }
        self.last_write = Some(Instant::now());
    }

    /// Makes the stored reports equal `desired`: creates, replaces and deletes only
    /// where the content differs, never touching a report that is not ours.
    pub(crate) async fn sync(
        &mut self,
        desired: &BTreeMap<Option<String>, Value>,
        leadership: &Leadership,
    ) -> Result<(), ReportError> {
        if !self.loaded {
            let mut ignored = Stamps::default();
            if !self.load(leadership, &mut ignored).await? {
                return Ok(());
            }
        }
        let mut keys: Vec<Option<String>> = desired.keys().cloned().collect();
        keys.extend(
            self.stored
                .keys()
                .filter(|k| !desired.contains_key(*k))
                .cloned(),
        );
        let mut first_error = None;
        for key in keys {
            if self.foreign.contains(&key) {
                continue;
            }
            let r = match (desired.get(&key), self.stored.get(&key)) {
                (Some(d), Some(s)) if report::content(d) == s.content => continue,
                (Some(d), Some(_)) => self.replace(&key, d, leadership).await,
                (Some(d), None) => self.create(&key, d, leadership).await,
                (None, Some(_)) => self.delete(&key, leadership).await,
                (None, None) => continue,
            };
            match r {
                Err(ReportError::NotLeader) => return Err(ReportError::NotLeader),
                Err(e) => {
                    tracing::debug!(error = %e, "audit: report write failed");
                    first_error.get_or_insert(e);
                }
                Ok(()) => {}
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // A conflict: what we knew is stale; read again at the next (early) audit.
        if self.loaded {
            Ok(())
        } else {
            Err(ReportError::Changed)
        }
    }

    fn object(desired: &Value) -> Result<DynamicObject, ReportError> {
        serde_json::from_value(desired.clone()).map_err(|e| ReportError::Api {
            what: "building a report".into(),
            source: kube::Error::SerdeError(e),
        })
    }

    /// Records a write: the content is what we sent, not what the API server answered,
    /// since a CRD version without a field we write prunes it, and comparing with the
    /// pruned answer would rewrite the report at every audit.
    fn written(&mut self, key: &Option<String>, r: &DynamicObject, sent: &Value) {
        self.store(key.clone(), r, report::content(sent));
    }

    async fn create(
        &mut self,
        key: &Option<String>,
        desired: &Value,
        leadership: &Leadership,
    ) -> Result<(), ReportError> {
        self.pace().await;
        let api = self.api(key);
        let obj = Self::object(desired)?;
        let pp = ownership::post_params();
        let r = self
            .call(
                leadership,
                "create",
                || describe(key),
                api.create(&pp, &obj),
            )
            .await;
        match r {
            Ok(made) => {
                tracing::info!(report = %describe(key), "audit: report created");
                self.written(key, &made, desired);
                Ok(())
            }
            Err(ReportError::Api { source, .. })
                if is(&source, kube::core::Status::is_already_exists) =>
            {
                // Someone else's, or ours from before this process: read it and decide.
                let got = self
                    .call(
                        leadership,
                        "get",
                        || describe(key),
                        api.get_opt(REPORT_NAME),
                    )
                    .await?;
                match got {
                    Some(r) if ownership::is_ours(&r.metadata) => {
                        let mut ignored = Stamps::default();
                        self.remember(key.clone(), &r, &mut ignored);
                    }
                    Some(_) => self.foreign_found(key.clone()),
                    None => {}
                }
                Ok(())
            }
            // The namespace is gone or terminating: its report goes with it.
            Err(ReportError::Api { source, .. })
                if is(&source, kube::core::Status::is_not_found)
                    || is(&source, kube::core::Status::is_forbidden) =>
            {
                tracing::debug!(report = %describe(key), error = %source, "audit: report not created");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn replace(
        &mut self,
        key: &Option<String>,
        desired: &Value,
        leadership: &Leadership,
    ) -> Result<(), ReportError> {
        self.pace().await;
        let api = self.api(key);
        let mut obj = Self::object(desired)?;
        obj.metadata.resource_version = self
            .stored
            .get(key)
            .and_then(|s| s.resource_version.clone());
        let pp = ownership::post_params();
        let r = self
            .call(
                leadership,
                "update",
                || describe(key),
                api.replace(REPORT_NAME, &pp, &obj),
            )
            .await;
        match r {
            Ok(made) => {
                self.written(key, &made, desired);
                Ok(())
            }
            Err(ReportError::Api { source, .. })
                if is(&source, kube::core::Status::is_conflict)
                    || is(&source, kube::core::Status::is_not_found) =>
            {
                // Changed or deleted behind our back: read everything again next time.
                self.loaded = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(
        &mut self,
        key: &Option<String>,
        leadership: &Leadership,
    ) -> Result<(), ReportError> {
        self.pace().await;
        let api = self.api(key);
        let (uid, rv) = match self.stored.get(key) {
            Some(s) => (s.uid.clone(), s.resource_version.clone()),
            None => return Ok(()),
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: rv,
            }),
            ..Default::default()
        };
        let r = self
            .call(
                leadership,
                "delete",
                || describe(key),
                api.delete(REPORT_NAME, &dp),
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(report = %describe(key), "audit: report deleted (nothing left to report)");
                self.stored.remove(key);
                Ok(())
            }
            Err(ReportError::Api { source, .. })
                if is(&source, kube::core::Status::is_not_found) =>
            {
                self.stored.remove(key);
                Ok(())
            }
            Err(ReportError::Api { source, .. })
                if is(&source, kube::core::Status::is_conflict) =>
            {
                self.loaded = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
