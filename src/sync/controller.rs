//! Executes what `desired` decides. Every write is conflict-safe on its own:
//! - create is create-if-absent (AlreadyExists is checked for ownership, never overwritten);
//! - update is a replace carrying the resourceVersion at which the cache saw our label;
//! - delete carries uid + resourceVersion preconditions;
//!
//! so a stale cache, a second replica or a human editing the same secret can make a write
//! fail, never land on a secret we do not own. Only the Lease holder reconciles; every
//! replica may run the admission-time create.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, Secret, ServiceAccount};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;

use super::cache::{Cache, WATCHED_TYPES, write};
use super::desired::{
    self, Action, ExistingSecret, Key, MANAGED_BY_LABEL, MANAGED_BY_VALUE, PodInfo, Problem,
    SOURCE_ANNOTATION, SaPatch, SourceState, VERSION_ANNOTATION, source_string,
};
use super::source::{self, ValidSource};
use crate::admission::NamespaceFacts;
use crate::cluster::{BoxFuture, Cluster};
use crate::config::{Config, SecretRef};
use crate::metrics::{ActionLabels, Metrics, ResultLabels};

const DEBOUNCE: Duration = Duration::from_millis(300);
const RESYNC: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(10);
/// How long an unowned secret found by a failed create is remembered, so each reconcile
/// does not re-POST into it (the cache only sees pull-secret types, not e.g. Opaque).
const FOREIGN_TTL: Duration = Duration::from_secs(600);
const REPAIR_EVERY: Duration = Duration::from_secs(30);
const PARALLEL_WRITES: usize = 8;

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The managed copy of a validated source.
pub fn build_copy(namespace: &str, name: &str, src: &SecretRef, v: &ValidSource) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.into(),
                MANAGED_BY_VALUE.into(),
            )])),
            annotations: Some(BTreeMap::from([
                (SOURCE_ANNOTATION.into(), source_string(src)),
                (VERSION_ANNOTATION.into(), v.hash.clone()),
            ])),
            ..Default::default()
        },
        type_: Some(v.type_.clone()),
        data: Some(v.data.clone()),
        ..Default::default()
    }
}

/// The JSON patch appending `secret` to a ServiceAccount's `imagePullSecrets`. The
/// resourceVersion test makes it fail rather than clobber a list someone changed since
/// the cache saw it; `add …/-` appends, so existing entries are never replaced.
pub fn sa_patch_json(p: &SaPatch) -> serde_json::Value {
    let mut ops = Vec::new();
    if let Some(rv) = &p.resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    if p.list_absent {
        ops.push(json!({"op": "add", "path": "/imagePullSecrets", "value": [{"name": p.secret}]}));
    } else {
        ops.push(json!({"op": "add", "path": "/imagePullSecrets/-", "value": {"name": p.secret}}));
    }
    serde_json::Value::Array(ops)
}

pub fn pod_info(p: &Pod) -> Option<PodInfo> {
    let m = &p.metadata;
    let status = p.status.as_ref()?;
    let stuck_images = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .is_some_and(|r| r == "ImagePullBackOff" || r == "ErrImagePull")
        })
        .map(|c| c.image.clone())
        .collect();
    Some(PodInfo {
        namespace: m.namespace.clone()?,
        name: m.name.clone()?,
        uid: m.uid.clone(),
        controlled: m
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true)),
        created: m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        pull_secrets: p
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .map(|l| l.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default(),
        stuck_images,
    })
}

fn namespace_ref(ns: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Namespace".into()),
        name: Some(ns.into()),
        uid,
        ..Default::default()
    }
}

fn secret_ref(r: &SecretRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(r.namespace.clone()),
        name: Some(r.name.clone()),
        ..Default::default()
    }
}

fn is_managed(s: &Secret) -> bool {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// Outcome of one create-if-absent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    New,
    AlreadyOurs,
    Foreign,
    /// The namespace is gone or terminating.
    Gone,
}

pub(crate) struct Shared {
    client: Client,
    config: Arc<ArcSwap<Config>>,
    metrics: Arc<Metrics>,
    pub(crate) cache: Arc<Cache>,
    recorder: Recorder,
    leader: Arc<AtomicBool>,
    trigger: Notify,
    /// Report key → message last reported, so Events and conflict counts are per change,
    /// not per reconcile.
    reported: Mutex<HashMap<String, String>>,
    foreign: Mutex<HashMap<Key, Instant>>,
    last_repair: Mutex<Option<Instant>>,
}

impl Shared {
    fn new(
        client: Client,
        config: Arc<ArcSwap<Config>>,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Shared {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: super::FIELD_MANAGER.into(),
                instance: Some(identity.to_string()),
            },
        );
        Shared {
            client,
            config,
            metrics,
            cache: Arc::new(Cache::default()),
            recorder,
            leader: Arc::new(AtomicBool::new(false)),
            trigger: Notify::new(),
            reported: Mutex::new(HashMap::new()),
            foreign: Mutex::new(HashMap::new()),
            last_repair: Mutex::new(None),
        }
    }

    fn pp() -> PostParams {
        PostParams {
            field_manager: Some(super::FIELD_MANAGER.into()),
            ..Default::default()
        }
    }

    /// True when `key`'s message is new or changed (and records it).
    fn first_report(&self, key: &str, msg: &str) -> bool {
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if r.get(key).map(String::as_str) == Some(msg) {
            return false;
        }
        r.insert(key.to_string(), msg.to_string());
        true
    }

    /// Publishes in the background: an Event is diagnostics, and must not add an API
    /// round trip to the admission path or stall the reconciler.
    async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Sync".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        let regarding = regarding.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &regarding).await {
                tracing::debug!(error = %e, reason, "could not publish event");
            }
        });
    }

    fn ns_uid(&self, ns: &str) -> Option<String> {
        self.cache.namespace(ns).and_then(|n| n.uid)
    }

    async fn report_conflict(&self, ns: &str, name: &str, registry: &str) {
        let msg = format!(
            "secret {ns}/{name} wanted by registry entry {registry:?} exists without label \
             {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}; left untouched"
        );
        if self.first_report(&format!("conflict/{ns}/{name}"), &msg) {
            self.metrics.sync_conflicts.inc();
            tracing::warn!(namespace = ns, secret = name, registry, "{msg}");
            self.event(
                &namespace_ref(ns, self.ns_uid(ns)),
                EventType::Warning,
                "PullSecretConflict",
                msg,
            )
            .await;
        }
    }

    async fn report_problem(&self, p: &Problem) {
        let (key, msg, regarding) = match p {
            Problem::SourceMissing { registry, source } => (
                format!("source/{}", source_string(source)),
                format!(
                    "source secret {} of registry entry {registry:?} does not exist; nothing copied",
                    source_string(source)
                ),
                secret_ref(source),
            ),
            Problem::SourceInvalid {
                registry,
                source,
                reason,
            } => (
                format!("source/{}", source_string(source)),
                format!(
                    "source secret {} of registry entry {registry:?} is not a usable pull secret: {reason}; not copied",
                    source_string(source)
                ),
                secret_ref(source),
            ),
            Problem::Uncovered {
                registry,
                source,
                patterns,
            } => (
                format!("uncovered/{registry}"),
                format!(
                    "source secret {} has no auths key covering {} of registry entry {registry:?}; \
                     pulls from there will not use it",
                    source_string(source),
                    patterns.join(", ")
                ),
                secret_ref(source),
            ),
            Problem::Clash {
                namespace,
                name,
                winner,
                loser,
            } => (
                format!("clash/{namespace}/{name}"),
                format!(
                    "registry entries {winner:?} and {loser:?} both want secret {name} in {namespace} \
                     from different sources; {winner:?} wins"
                ),
                namespace_ref(namespace, self.ns_uid(namespace)),
            ),
        };
        if self.first_report(&key, &msg) {
            tracing::warn!("{msg}");
            let reason = match p {
                Problem::SourceMissing { .. } => "SourceMissing",
                Problem::SourceInvalid { .. } => "SourceInvalid",
                Problem::Uncovered { .. } => "SourceIncomplete",
                Problem::Clash { .. } => "SecretNameClash",
            };
            self.event(&regarding, EventType::Warning, reason, msg)
                .await;
        }
    }

    /// Create-if-absent of the managed copy; an existing secret is inspected, never written.
    async fn create_copy(
        &self,
        ns: &str,
        name: &str,
        src: &SecretRef,
        v: &ValidSource,
        registry: &str,
    ) -> Result<Created, kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.create(&Self::pp(), &build_copy(ns, name, src, v)).await {
            Ok(_) => {
                self.metrics
                    .sync_copies
                    .get_or_create(&ActionLabels { action: "created" })
                    .inc();
                tracing::info!(namespace = ns, secret = name, source = %source_string(src), "created pull secret copy");
                let note = format!(
                    "created pull secret {name} from {} for registry entry {registry:?}",
                    source_string(src)
                );
                self.event(
                    &namespace_ref(ns, self.ns_uid(ns)),
                    EventType::Normal,
                    "PullSecretCopied",
                    note,
                )
                .await;
                Ok(Created::New)
            }
            Err(e) if is_status(&e, 409) => match api.get_opt(name).await? {
                Some(s) if is_managed(&s) => Ok(Created::AlreadyOurs),
                Some(_) => {
                    self.foreign
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((ns.to_string(), name.to_string()), Instant::now());
                    self.report_conflict(ns, name, registry).await;
                    Ok(Created::Foreign)
                }
                None => Err(e),
            },
            // Namespace deleted or terminating: nothing to deliver there.
            Err(e) if is_status(&e, 404) || is_status(&e, 403) && self.terminating(ns).await => {
                Ok(Created::Gone)
            }
            Err(e) => Err(e),
        }
    }

    async fn terminating(&self, ns: &str) -> bool {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(ns).await {
            Ok(Some(n)) => super::cache::namespace_info(&n).is_some_and(|(_, i)| i.terminating),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    fn recently_foreign(&self, key: &Key) -> bool {
        let mut f = self.foreign.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|_, t| t.elapsed() < FOREIGN_TTL);
        f.contains_key(key)
    }

    async fn apply(
        &self,
        a: &Action,
        cfg: &Config,
        sources: &HashMap<SecretRef, SourceState>,
    ) -> Result<(), kube::Error> {
        let valid = |src: &SecretRef| match sources.get(src) {
            Some(SourceState::Valid(v)) => Some(v.clone()),
            _ => None,
        };
        let registry_of = |name: &str| {
            cfg.registries
                .iter()
                .find(|r| r.secret == name)
                .map_or_else(String::new, |r| r.name.clone())
        };
        match a {
            Action::Conflict {
                namespace,
                name,
                registry,
            } => {
                self.report_conflict(namespace, name, registry).await;
                Ok(())
            }
            Action::Create {
                namespace,
                name,
                source,
            } => {
                let key = (namespace.clone(), name.clone());
                if self.recently_foreign(&key) {
                    self.report_conflict(namespace, name, &registry_of(name))
                        .await;
                    return Ok(());
                }
                let Some(v) = valid(source) else {
                    return Ok(());
                };
                self.create_copy(namespace, name, source, &v, &registry_of(name))
                    .await
                    .map(drop)
            }
            Action::Update {
                namespace,
                name,
                source,
                resource_version,
            } => {
                let Some(v) = valid(source) else {
                    return Ok(());
                };
                let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
                let mut obj = build_copy(namespace, name, source, &v);
                obj.metadata.resource_version = resource_version.clone();
                match api.replace(name, &Self::pp(), &obj).await {
                    Ok(_) => {
                        self.metrics
                            .sync_copies
                            .get_or_create(&ActionLabels { action: "updated" })
                            .inc();
                        tracing::info!(namespace, secret = name, source = %source_string(source), "updated pull secret copy");
                        Ok(())
                    }
                    Err(e) if is_status(&e, 404) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Action::Recreate {
                namespace,
                name,
                source,
                resource_version,
                uid,
            } => {
                self.delete(namespace, name, resource_version, uid).await?;
                let Some(v) = valid(source) else {
                    return Ok(());
                };
                self.create_copy(namespace, name, source, &v, &registry_of(name))
                    .await
                    .map(drop)
            }
            Action::Delete {
                namespace,
                name,
                resource_version,
                uid,
            } => self.delete(namespace, name, resource_version, uid).await,
        }
    }

    async fn delete(
        &self,
        ns: &str,
        name: &str,
        rv: &Option<String>,
        uid: &Option<String>,
    ) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: rv.clone(),
                uid: uid.clone(),
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                self.metrics
                    .sync_copies
                    .get_or_create(&ActionLabels { action: "deleted" })
                    .inc();
                tracing::info!(
                    namespace = ns,
                    secret = name,
                    "deleted pull secret copy no longer wanted"
                );
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn patch_account(&self, p: &SaPatch) -> Result<(), kube::Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &p.namespace);
        let patch: json_patch::Patch =
            serde_json::from_value(sa_patch_json(p)).expect("well-formed patch");
        match api
            .patch(
                &p.service_account,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %p.namespace, service_account = %p.service_account, secret = %p.secret, "added pull secret to service account");
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn repair_stuck_pods(
        &self,
        cfg: &Config,
        existing: &HashMap<Key, ExistingSecret>,
    ) -> Result<(), kube::Error> {
        {
            let mut last = self.last_repair.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REPAIR_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let pods = api
            .list(&ListParams::default().fields("status.phase=Pending"))
            .await?;
        let infos: Vec<PodInfo> = pods.items.iter().filter_map(pod_info).collect();
        let labels = self.cache.labels_by_namespace();
        for p in desired::stuck_pods(cfg, &infos, &labels, existing) {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&p.name, &dp).await {
                Ok(_) => {
                    tracing::info!(namespace = %p.namespace, pod = %p.name, "deleted controller-owned pod stuck pulling; its owner recreates it with the secret");
                    let r = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        namespace: Some(p.namespace.clone()),
                        name: Some(p.name.clone()),
                        uid: p.uid.clone(),
                        ..Default::default()
                    };
                    let note = format!(
                        "deleted: stuck pulling {} while the pull secret is now present; its controller recreates it",
                        p.stuck_images.join(", ")
                    );
                    self.event(&r, EventType::Normal, "StuckPodRepaired", note)
                        .await;
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One level-triggered pass over everything. Errors are counted and retried by the
    /// caller; a single failed write does not stop the others.
    async fn reconcile_once(&self) -> bool {
        let cfg = self.config.load_full();
        let namespaces = self.cache.namespace_list();
        let existing = self.cache.relevant_secrets(&cfg);
        let sources = self.cache.source_states(&cfg);
        let plan = desired::plan(&cfg, &namespaces, &existing, &sources);
        let mut live_reports = HashSet::new();
        for p in &plan.problems {
            // "Missing" before a source's watch has listed is not news.
            if let Problem::SourceMissing { source, .. } = p
                && self.cache.source(source).is_none()
            {
                continue;
            }
            self.report_problem(p).await;
        }
        for p in &plan.problems {
            live_reports.insert(match p {
                Problem::SourceMissing { source, .. } | Problem::SourceInvalid { source, .. } => {
                    format!("source/{}", source_string(source))
                }
                Problem::Uncovered { registry, .. } => format!("uncovered/{registry}"),
                Problem::Clash {
                    namespace, name, ..
                } => format!("clash/{namespace}/{name}"),
            });
        }
        let mut ok = true;
        for chunk in plan.actions.chunks(PARALLEL_WRITES) {
            let results =
                futures_util::future::join_all(chunk.iter().map(|a| self.apply(a, &cfg, &sources)))
                    .await;
            for (a, r) in chunk.iter().zip(results) {
                if let Err(e) = r {
                    ok = false;
                    tracing::warn!(action = ?a, error = %e, "sync write failed; will retry");
                }
            }
        }
        for a in &plan.actions {
            if let Action::Conflict {
                namespace, name, ..
            }
            | Action::Create {
                namespace, name, ..
            } = a
            {
                live_reports.insert(format!("conflict/{namespace}/{name}"));
            }
        }
        self.reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live_reports.contains(k));
        if self.cache.accounts_watched() {
            let accounts = self.cache.accounts();
            for p in desired::sa_patches(&cfg, &plan, &existing, &accounts) {
                if let Err(e) = self.patch_account(&p).await {
                    ok = false;
                    tracing::warn!(namespace = %p.namespace, service_account = %p.service_account, error = %e, "service account patch failed; will retry");
                }
            }
        }
        if cfg.repair_stuck_pods
            && let Err(e) = self.repair_stuck_pods(&cfg, &existing).await
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

    async fn ensure(&self, cfg: &Config, ns: &str, secrets: &[String]) -> Result<(), String> {
        // Names some entry could deliver that the cache does not already show present.
        let missing: Vec<&String> = secrets
            .iter()
            .filter(|s| {
                cfg.registries
                    .iter()
                    .any(|r| &r.secret == *s && r.source.is_some())
            })
            .filter(|s| {
                self.cache
                    .secret(&(ns.to_string(), s.to_string()))
                    .is_none()
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // A namespace created a moment ago may not be cached yet; its labels decide scope.
        let info = match self.cache.namespace(ns) {
            Some(i) => i,
            None => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                match api
                    .get_opt(ns)
                    .await
                    .map_err(|e| format!("namespace {ns}: {e}"))?
                {
                    Some(n) => super::cache::namespace_info(&n)
                        .map(|(_, i)| i)
                        .unwrap_or_default(),
                    None => return Ok(()),
                }
            }
        };
        let mut errors = Vec::new();
        for name in missing {
            // The first in-scope entry for the name, as the reconciler picks it.
            let Some(reg) = cfg
                .registries
                .iter()
                .find(|r| &r.secret == name && desired::wants_copy(cfg, r, &info))
            else {
                continue;
            };
            let src = reg.source.as_ref().expect("wants_copy implies a source");
            let secret = match self.cache.source(src) {
                Some(Some(s)) => s,
                Some(None) => {
                    errors.push(format!("source {} does not exist", source_string(src)));
                    continue;
                }
                None => {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &src.namespace);
                    match api.get_opt(&src.name).await {
                        Ok(Some(s)) => s,
                        Ok(None) => {
                            errors.push(format!("source {} does not exist", source_string(src)));
                            continue;
                        }
                        Err(e) => {
                            errors.push(format!("source {}: {e}", source_string(src)));
                            continue;
                        }
                    }
                }
            };
            let v = match source::validate(&secret) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(format!("source {} is invalid: {e}", source_string(src)));
                    continue;
                }
            };
            if let Err(e) = self.create_copy(ns, &reg.secret, src, &v, &reg.name).await {
                errors.push(format!("creating {ns}/{}: {e}", reg.secret));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The webhook's view of the cluster, backed by the caches above.
pub struct KubeCluster {
    pub(crate) shared: Arc<Shared>,
}

impl Cluster for KubeCluster {
    fn facts(&self, namespace: &str) -> NamespaceFacts {
        self.shared.cache.facts(namespace)
    }

    fn ensure_secrets<'a>(
        &'a self,
        config: &'a Config,
        namespace: &'a str,
        secrets: &'a [String],
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.shared.ensure(config, namespace, secrets))
    }

    fn ready(&self) -> bool {
        self.shared.cache.ready()
    }
}

impl KubeCluster {
    /// Whether this replica currently holds the sync Lease.
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::Acquire)
    }
}

fn spawn_watch<K, F>(api: Api<K>, cfg: watcher::Config, what: &'static str, mut f: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: FnMut(watcher::Event<K>) + Send + 'static,
{
    tokio::spawn(async move {
        let mut s = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => f(ev),
                Err(e) => {
                    tracing::warn!(error = %e, watch = what, "watch failed; retrying with backoff")
                }
            }
        }
    });
}

/// Starts one watch per configured source and stops those no longer configured, and the
/// ServiceAccount watch the first time any entry names service accounts (so clusters
/// not using the option need no RBAC for it).
fn sync_source_watches(
    shared: &Arc<Shared>,
    tasks: &mut HashMap<SecretRef, tokio::task::JoinHandle<()>>,
) {
    let cfg = shared.config.load_full();
    let wanted: HashSet<SecretRef> = cfg
        .registries
        .iter()
        .filter_map(|r| r.source.clone())
        .collect();
    tasks.retain(|r, h| {
        let keep = wanted.contains(r);
        if !keep {
            h.abort();
        }
        keep
    });
    super::cache::retain_keys(&mut write(&shared.cache.sources), &wanted);
    for r in wanted {
        if tasks.contains_key(&r) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(shared.client.clone(), &r.namespace);
        let cache = shared.cache.clone();
        let key = r.clone();
        let h = tokio::spawn(async move {
            let mut s = kube::runtime::watcher::watch_object(api, &key.name)
                .default_backoff()
                .boxed();
            while let Some(item) = s.next().await {
                match item {
                    Ok(obj) => cache.set_source(&key, obj),
                    Err(e) => {
                        tracing::warn!(error = %e, source = %source_string(&key), "source watch failed; retrying")
                    }
                }
            }
        });
        tasks.insert(r, h);
    }
    let needs_accounts = cfg
        .registries
        .iter()
        .any(|r| !r.service_accounts.is_empty());
    if needs_accounts && !shared.cache.accounts_watched.swap(true, Ordering::AcqRel) {
        let cache = shared.cache.clone();
        spawn_watch(
            Api::<ServiceAccount>::all(shared.client.clone()),
            watcher::Config::default(),
            "serviceaccounts",
            move |ev| cache.apply_account(ev),
        );
    }
}

pub(crate) async fn start_inner(
    client: Client,
    config: Arc<ArcSwap<Config>>,
    mut config_changed: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    identity: String,
    release_namespace: String,
) -> anyhow::Result<Arc<KubeCluster>> {
    anyhow::ensure!(
        !identity.is_empty(),
        "sync needs a non-empty identity for leader election"
    );
    let shared = Arc::new(Shared::new(client.clone(), config, metrics, &identity));

    let cache = shared.cache.clone();
    spawn_watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        "namespaces",
        move |ev| cache.apply_namespace(ev),
    );
    for (slot, type_) in WATCHED_TYPES.iter().enumerate() {
        let cache = shared.cache.clone();
        spawn_watch(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().fields(&format!("type={type_}")),
            "secrets",
            move |ev| cache.apply_secret(slot, ev),
        );
    }

    let s = shared.clone();
    tokio::spawn(async move {
        let mut tasks = HashMap::new();
        loop {
            sync_source_watches(&s, &mut tasks);
            s.trigger.notify_one();
            if config_changed.changed().await.is_err() {
                // The sender is gone (shutdown): keep the current watches.
                std::future::pending::<()>().await;
            }
        }
    });

    let s = shared.clone();
    let leader = shared.leader.clone();
    tokio::spawn(async move {
        let s2 = s.clone();
        super::lease::run(client, release_namespace, identity, leader, move || {
            s2.trigger.notify_one()
        })
        .await;
    });

    let s = shared.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = s.cache.changed.notified() => {}
                _ = s.trigger.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            if !s.leader.load(Ordering::Acquire) || !s.cache.ready() {
                continue;
            }
            if !s.reconcile_once().await {
                let s = s.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY).await;
                    s.trigger.notify_one();
                });
            }
        }
    });

    Ok(Arc::new(KubeCluster { shared }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sa_patch_appends_or_adds_whole_list() {
        let p = SaPatch {
            namespace: "n".into(),
            service_account: "default".into(),
            secret: "s".into(),
            list_absent: false,
            resource_version: Some("5".into()),
        };
        let mut sa =
            json!({"metadata": {"resourceVersion": "5"}, "imagePullSecrets": [{"name": "keep"}]});
        let patch: json_patch::Patch = serde_json::from_value(sa_patch_json(&p)).unwrap();
        json_patch::patch(&mut sa, &patch).unwrap();
        assert_eq!(
            sa["imagePullSecrets"],
            json!([{"name": "keep"}, {"name": "s"}])
        );

        let absent = SaPatch {
            list_absent: true,
            ..p.clone()
        };
        let mut sa = json!({"metadata": {"resourceVersion": "5"}});
        let patch: json_patch::Patch = serde_json::from_value(sa_patch_json(&absent)).unwrap();
        json_patch::patch(&mut sa, &patch).unwrap();
        assert_eq!(sa["imagePullSecrets"], json!([{"name": "s"}]));

        // a changed object fails the test instead of being clobbered
        let mut sa =
            json!({"metadata": {"resourceVersion": "6"}, "imagePullSecrets": [{"name": "new"}]});
        let patch: json_patch::Patch = serde_json::from_value(sa_patch_json(&absent)).unwrap();
        assert!(json_patch::patch(&mut sa, &patch).is_err());
    }

    #[test]
    fn copies_carry_label_source_and_hash() {
        let s = k8s_openapi::api::core::v1::Secret {
            type_: Some(source::TYPE_DOCKERCONFIGJSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                k8s_openapi::ByteString(br#"{"auths":{"r.io":{"auth":"dTpw"}}}"#.to_vec()),
            )])),
            ..Default::default()
        };
        let v = source::validate(&s).unwrap();
        let src = SecretRef {
            namespace: "c".into(),
            name: "src".into(),
        };
        let c = build_copy("n", "copy", &src, &v);
        assert!(is_managed(&c));
        let a = c.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[SOURCE_ANNOTATION], "c/src");
        assert_eq!(a[VERSION_ANNOTATION], v.hash);
        assert_eq!((c.type_, c.data), (s.type_, s.data));
        // the cache's summary of a fresh copy needs no update
        let (_, e) = super::super::cache::secret_info(&Secret {
            metadata: ObjectMeta {
                namespace: Some("n".into()),
                name: Some("copy".into()),
                ..build_copy("n", "copy", &src, &v).metadata
            },
            ..build_copy("n", "copy", &src, &v)
        })
        .unwrap();
        assert_eq!(e.content_hash, v.hash);
    }

    #[test]
    fn stuck_containers_are_read_from_status() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "x", "controller": true}]},
            "spec": {"containers": [{"name": "a", "image": "r.io/a"}], "imagePullSecrets": [{"name": "s"}]},
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "a", "image": "r.io/a", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                {"name": "b", "image": "r.io/b", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        }))
        .unwrap();
        let i = pod_info(&pod).unwrap();
        assert!(i.controlled);
        assert_eq!(i.stuck_images, vec!["r.io/a"]);
        assert_eq!(i.pull_secrets, vec!["s"]);
    }

    mod mock {
        //! `ensure_secrets` against a scripted API server (tower-test): the exact requests
        //! made, and that an unowned secret only ever gets a GET.
        use super::*;
        use crate::sync::cache::Cache;
        use hyper::{Request, Response};
        use kube::client::Body;
        use tower_test::mock;

        type Handle = mock::Handle<Request<Body>, Response<Body>>;

        const CFG: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    source: {namespace: creds, name: tcr-src}
    namespaces: {include: ["team-*"]}
"#;

        fn shared() -> (Arc<Shared>, Handle) {
            let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
            let client = Client::new(svc, "default");
            let cfg = Arc::new(ArcSwap::from_pointee(Config::parse(CFG, "t").unwrap()));
            let s = Arc::new(Shared::new(client, cfg, Arc::new(Metrics::new()), "test-0"));
            fill(&s.cache);
            (s, handle)
        }

        fn fill(c: &Cache) {
            c.apply_namespace(watcher::Event::Init);
            for n in ["team-a", "other"] {
                c.apply_namespace(watcher::Event::InitApply(Namespace {
                    metadata: ObjectMeta {
                        name: Some(n.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }));
            }
            c.apply_namespace(watcher::Event::InitDone);
            for slot in 0..2 {
                c.apply_secret(slot, watcher::Event::Init);
                c.apply_secret(slot, watcher::Event::InitDone);
            }
            let src: Secret = serde_json::from_value(json!({
                "metadata": {"name": "tcr-src", "namespace": "creds"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "eyJhdXRocyI6eyIqLnRlbmNlbnRjbG91ZGNyLmNvbSI6eyJhdXRoIjoiZFRwdyJ9fX0="}
            }))
            .unwrap();
            c.set_source(
                &SecretRef {
                    namespace: "creds".into(),
                    name: "tcr-src".into(),
                },
                Some(src),
            );
        }

        async fn next(
            h: &mut Handle,
        ) -> (
            String,
            String,
            serde_json::Value,
            mock::SendResponse<Response<Body>>,
        ) {
            let (req, send) = h.next_request().await.expect("a request");
            let method = req.method().to_string();
            let uri = req.uri().path().to_string();
            let body = req.into_body().collect_bytes().await.unwrap();
            let v = if body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&body).unwrap()
            };
            (method, uri, v, send)
        }

        fn respond(send: mock::SendResponse<Response<Body>>, code: u16, v: serde_json::Value) {
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&v).unwrap()))
                    .unwrap(),
            );
        }

        fn status(code: u16, reason: &str) -> serde_json::Value {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason})
        }

        #[tokio::test]
        async fn creates_the_labelled_copy_then_reports_it() {
            let (s, mut h) = shared();
            let cfg = s.config.load_full();
            let server = tokio::spawn(async move {
                let (m, uri, body, send) = next(&mut h).await;
                assert_eq!(
                    (m.as_str(), uri.as_str()),
                    ("POST", "/api/v1/namespaces/team-a/secrets")
                );
                assert_eq!(
                    body["metadata"]["labels"][MANAGED_BY_LABEL],
                    MANAGED_BY_VALUE
                );
                assert_eq!(
                    body["metadata"]["annotations"][SOURCE_ANNOTATION],
                    "creds/tcr-src"
                );
                assert_eq!(body["type"], "kubernetes.io/dockerconfigjson");
                respond(send, 201, body);
                let (m, uri, body, send) = next(&mut h).await;
                assert_eq!(
                    (m.as_str(), uri.as_str()),
                    ("POST", "/apis/events.k8s.io/v1/namespaces/default/events")
                );
                assert_eq!(body["reason"], "PullSecretCopied");
                respond(send, 201, body);
            });
            s.ensure(&cfg, "team-a", &["tcr-pull".into(), "unrelated".into()])
                .await
                .unwrap();
            server.await.unwrap();
            let created = s
                .metrics
                .sync_copies
                .get_or_create(&ActionLabels { action: "created" })
                .get();
            assert_eq!(created, 1);
        }

        #[tokio::test]
        async fn an_unowned_secret_is_only_read_and_reported() {
            let (s, mut h) = shared();
            let cfg = s.config.load_full();
            let server = tokio::spawn(async move {
                let (m, _, _, send) = next(&mut h).await;
                assert_eq!(m, "POST");
                respond(send, 409, status(409, "AlreadyExists"));
                let (m, uri, _, send) = next(&mut h).await;
                assert_eq!(
                    (m.as_str(), uri.as_str()),
                    ("GET", "/api/v1/namespaces/team-a/secrets/tcr-pull")
                );
                respond(
                    send,
                    200,
                    json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "tcr-pull", "namespace": "team-a"}, "type": "Opaque"}),
                );
                let (m, uri, body, send) = next(&mut h).await;
                assert_eq!(
                    (m.as_str(), uri.as_str()),
                    ("POST", "/apis/events.k8s.io/v1/namespaces/default/events")
                );
                assert_eq!(body["reason"], "PullSecretConflict");
                assert_eq!(body["type"], "Warning");
                respond(send, 201, body);
                h
            });
            s.ensure(&cfg, "team-a", &["tcr-pull".into()])
                .await
                .unwrap();
            let _h = server.await.unwrap();
            assert_eq!(s.metrics.sync_conflicts.get(), 1);
            // the reconciler will not POST again into it for a while
            assert!(s.recently_foreign(&("team-a".into(), "tcr-pull".into())));
        }

        #[tokio::test]
        async fn out_of_scope_or_present_means_no_request() {
            let (s, mut h) = shared();
            let cfg = s.config.load_full();
            // "other" is outside include: [team-*]; no request at all
            s.ensure(&cfg, "other", &["tcr-pull".into()]).await.unwrap();
            // already cached as present in team-a
            s.cache.apply_secret(
                0,
                watcher::Event::Apply(
                    serde_json::from_value(
                        json!({"metadata": {"name": "tcr-pull", "namespace": "team-a"},
                        "type": "kubernetes.io/dockerconfigjson"}),
                    )
                    .unwrap(),
                ),
            );
            s.ensure(&cfg, "team-a", &["tcr-pull".into()])
                .await
                .unwrap();
            drop(s);
            assert!(h.next_request().await.is_none());
        }
    }
}
