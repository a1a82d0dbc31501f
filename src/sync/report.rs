//! What the controller tells people: log lines, Kubernetes Events and the conflict
//! counter, each once per change (not once per reconcile), and the memory of unowned
//! secrets found by a failed create so the reconciler does not POST into them every pass.
//!
//! Events go through one bounded queue to one supervised publisher task: an Event is
//! diagnostics and must never add an API round trip to the admission path or stall the
//! reconciler. A full queue drops the Event (logged).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::desired::{
    Key, MANAGED_BY_LABEL, MANAGED_BY_VALUE, Problem, source_annotation, source_string,
};
use crate::config::{SecretRef, Source};
use crate::metrics::Metrics;

/// How long an unowned secret found by a failed create is remembered, so each reconcile
/// does not re-POST into it (the cache only sees pull-secret types, not e.g. Opaque).
const FOREIGN_TTL: Duration = Duration::from_secs(600);
/// Events waiting for the publisher; more are dropped.
const EVENT_QUEUE: usize = 256;
/// One publish may take this long.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning per this interval about Events the API server refused.
const REFUSED_WARN_EVERY: Duration = Duration::from_secs(60);

pub(crate) type Queued = (ObjectReference, Event);

pub(crate) struct Reporter {
    metrics: Arc<Metrics>,
    events: mpsc::Sender<Queued>,
    state: Mutex<State>,
    /// This replica's own Pod: what Events about a credential provider regard, since a
    /// plugin has no object of its own (`kubectl describe pod` on the leader shows them).
    own_pod: ObjectReference,
}

#[derive(Default)]
struct State {
    /// Report key → message last reported.
    reported: HashMap<String, String>,
    foreign: HashMap<Key, Instant>,
    /// Credential-provider entry → the kind of its current failure. Kept apart from
    /// `reported`, which each reconcile pass prunes: a plugin's failures are not the
    /// planner's, and one Event per kind of failure is enough while it lasts.
    provider_failing: HashMap<String, &'static str>,
    /// Events dropped on a full queue since the last warning, and when that was.
    dropped: u64,
    warned_drop: Option<Instant>,
}

/// The dedupe key of a problem: a new message under the same key is news, the same
/// message again is not.
pub(crate) fn problem_key(p: &Problem) -> String {
    match p {
        Problem::SourceMissing { source, .. } | Problem::SourceInvalid { source, .. } => {
            format!("source/{}", source_string(source))
        }
        Problem::Uncovered { registry, .. } => format!("uncovered/{registry}"),
        Problem::Clash {
            namespace, name, ..
        } => format!("clash/{namespace}/{name}"),
    }
}

pub(crate) fn conflict_key(ns: &str, name: &str) -> String {
    format!("conflict/{ns}/{name}")
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

impl Reporter {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        own_pod: ObjectReference,
    ) -> (Reporter, mpsc::Receiver<Queued>) {
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        (
            Reporter {
                metrics,
                events,
                state: Mutex::new(State::default()),
                own_pod,
            },
            rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `key`'s message is new or changed (and records it).
    fn first_report(&self, key: &str, msg: &str) -> bool {
        let mut s = self.lock();
        if s.reported.get(key).map(String::as_str) == Some(msg) {
            return false;
        }
        s.reported.insert(key.to_string(), msg.to_string());
        true
    }

    /// Forgets reports whose cause is gone, so it is reported again if it comes back.
    pub(crate) fn retain_live(&self, live: &HashSet<String>) {
        self.lock().reported.retain(|k, _| live.contains(k));
    }

    fn event(&self, regarding: ObjectReference, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Sync".into(),
            secondary: None,
        };
        if self.events.try_send((regarding, ev)).is_ok() {
            return;
        }
        // A burst (thousands of copies created at once) fills the queue; one warning a
        // minute with the count, not one per Event.
        let mut s = self.lock();
        s.dropped += 1;
        if s.warned_drop
            .is_none_or(|t| t.elapsed() >= REFUSED_WARN_EVERY)
        {
            tracing::warn!(
                dropped = s.dropped,
                reason,
                "event queue full; events dropped (next count in a minute)"
            );
            s.dropped = 0;
            s.warned_drop = Some(Instant::now());
        }
    }

    /// Events about a copy (or the secret in its place) regard that Secret, so they land
    /// in the tenant's namespace (`kubectl describe secret`, `kubectl get events -n`),
    /// not in `default` as Events about a cluster-scoped Namespace would.
    fn copy_ref(ns: &str, name: &str) -> ObjectReference {
        secret_ref(&SecretRef {
            namespace: ns.into(),
            name: name.into(),
        })
    }

    pub(crate) fn mark_foreign(&self, key: Key) {
        self.lock().foreign.insert(key, Instant::now());
    }

    pub(crate) fn recently_foreign(&self, key: &Key) -> bool {
        let mut s = self.lock();
        s.foreign.retain(|_, t| t.elapsed() < FOREIGN_TTL);
        s.foreign.contains_key(key)
    }

    pub(crate) fn conflict(&self, ns: &str, name: &str, registry: &str) {
        let msg = format!(
            "secret {ns}/{name} wanted by registry entry {registry:?} exists without label \
             {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}; left untouched"
        );
        if self.first_report(&conflict_key(ns, name), &msg) {
            self.metrics.sync_conflicts.inc();
            tracing::warn!(namespace = ns, secret = name, registry, "{msg}");
            self.event(
                Self::copy_ref(ns, name),
                EventType::Warning,
                "PullSecretConflict",
                msg,
            );
        }
    }

    pub(crate) fn problem(&self, p: &Problem) {
        let (msg, regarding, reason) = match p {
            Problem::SourceMissing { registry, source } => (
                format!(
                    "source secret {} of registry entry {registry:?} does not exist; nothing copied",
                    source_string(source)
                ),
                secret_ref(source),
                "SourceMissing",
            ),
            Problem::SourceInvalid {
                registry,
                source,
                reason,
            } => (
                format!(
                    "source secret {} of registry entry {registry:?} is not a usable pull secret: {reason}; not copied",
                    source_string(source)
                ),
                secret_ref(source),
                "SourceInvalid",
            ),
            Problem::Uncovered {
                registry,
                source,
                patterns,
            } => (
                format!(
                    "source secret {} has no auths key covering {} of registry entry {registry:?}; \
                     pulls from there will not use it",
                    source_string(source),
                    patterns.join(", ")
                ),
                secret_ref(source),
                "SourceIncomplete",
            ),
            Problem::Clash {
                namespace,
                name,
                winner,
                loser,
            } => (
                format!(
                    "registry entries {winner:?} and {loser:?} both want secret {name} in {namespace} \
                     from different sources; {winner:?} wins"
                ),
                Self::copy_ref(namespace, name),
                "SecretNameClash",
            ),
        };
        if self.first_report(&problem_key(p), &msg) {
            tracing::warn!("{msg}");
            self.event(regarding, EventType::Warning, reason, msg);
        }
    }

    /// A credential provider run that gave no usable credentials: logged every time,
    /// an Event when the kind of failure is new. `kept` says whether the copies still
    /// hold earlier credentials from it.
    pub(crate) fn provider_failed(
        &self,
        registry: &str,
        kind: &'static str,
        error: &str,
        kept: bool,
    ) {
        let consequence = if kept {
            "the copies keep the last good credentials"
        } else {
            "no copies written yet"
        };
        let msg = format!(
            "credential provider of registry entry {registry:?} failed ({kind}): {error}; {consequence}; retrying with backoff"
        );
        tracing::warn!(registry, reason = kind, "{msg}");
        let new = self
            .lock()
            .provider_failing
            .insert(registry.to_string(), kind)
            != Some(kind);
        if new {
            self.event(
                self.own_pod.clone(),
                EventType::Warning,
                "CredentialProviderFailed",
                msg,
            );
        }
    }

    /// A credential provider answered usably: a failure it had is over.
    pub(crate) fn provider_recovered(&self, registry: &str) {
        if self.lock().provider_failing.remove(registry).is_some() {
            let msg = format!(
                "credential provider of registry entry {registry:?} answered again; copies refreshed"
            );
            tracing::info!(registry, "{msg}");
            self.event(
                self.own_pod.clone(),
                EventType::Normal,
                "CredentialProviderRecovered",
                msg,
            );
        }
    }

    pub(crate) fn copied(&self, ns: &str, name: &str, src: &Source, registry: &str) {
        tracing::info!(namespace = ns, secret = name, source = %source_annotation(src), registry, "created pull secret copy");
        let note = format!(
            "created pull secret {name} from {} for registry entry {registry:?}",
            source_annotation(src)
        );
        self.event(
            Self::copy_ref(ns, name),
            EventType::Normal,
            "PullSecretCopied",
            note,
        );
    }

    pub(crate) fn repaired(&self, pod: ObjectReference, images: &[String]) {
        let note = format!(
            "deleted: stuck pulling {} while the pull secret is now present; its controller recreates it",
            images.join(", ")
        );
        self.event(pod, EventType::Normal, "StuckPodRepaired", note);
    }
}

/// The Event publisher: runs until the queue's senders are gone.
pub(crate) async fn publish(
    recorder: Recorder,
    mut rx: mpsc::Receiver<Queued>,
    metrics: Arc<Metrics>,
) {
    let mut last_warned: Option<Instant> = None;
    while let Some((regarding, ev)) = rx.recv().await {
        // One create, or one patch of an Event the Recorder already made.
        metrics
            .sync_api_requests
            .get_or_create(&crate::metrics::VerbLabels { verb: "event" })
            .inc();
        let result = tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&ev, &regarding)).await;
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
        };
        // Refused Events (RBAC, quota, an API server under load) are worth one warning,
        // not one per Event.
        if last_warned.is_none_or(|t| t.elapsed() >= REFUSED_WARN_EVERY) {
            last_warned = Some(Instant::now());
            tracing::warn!(%error, reason = ev.reason, "could not publish event (further failures for a minute logged at debug)");
        } else {
            tracing::debug!(%error, reason = ev.reason, "could not publish event");
        }
    }
}
