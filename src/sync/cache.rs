//! What the watches have seen, kept small and indexed for the two readers: the webhook
//! (`facts` for one namespace, on the request path, no network) and the reconciler (a
//! snapshot of everything).
//!
//! Secrets are watched per pull-secret type with a field selector, so the API server never
//! streams other secrets (Helm releases, TLS keys) to us, and only a summary (type, owner,
//! content hash) is kept, never the credentials. Sources, the only secrets whose data we
//! need, are watched one by one by name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::runtime::watcher;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::desired::{
    ExistingSecret, Key, NamespaceInfo, SOURCE_ANNOTATION, ServiceAccountInfo, SourceState,
};
use super::source::{self, TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON, ValidSource};
use crate::admission::NamespaceFacts;
use crate::config::{Config, CredentialProvider, SecretRef, Source};

/// The pull-secret types we watch, one watch each (field selectors cannot OR).
pub(crate) const WATCHED_TYPES: [&str; 2] = [TYPE_DOCKERCONFIGJSON, TYPE_DOCKERCFG];

/// A map fed by one watch stream, applying `Init…InitDone` relists atomically so a
/// relist never shows a half-empty cache to the webhook.
#[derive(Debug)]
pub(crate) struct Indexed<K: Ord, V> {
    live: BTreeMap<K, V>,
    buffer: Option<BTreeMap<K, V>>,
    synced: bool,
}

impl<K: Ord, V> Default for Indexed<K, V> {
    fn default() -> Self {
        Indexed {
            live: BTreeMap::new(),
            buffer: None,
            synced: false,
        }
    }
}

impl<K: Ord + Clone, V> Indexed<K, V> {
    /// Applies one watch event; `summarise` turns an object into its key and summary.
    /// Returns true when the map may have changed.
    pub(crate) fn apply<O>(
        &mut self,
        ev: watcher::Event<O>,
        summarise: impl Fn(&O) -> Option<(K, V)>,
    ) -> bool {
        match ev {
            watcher::Event::Apply(o) => {
                if let Some((k, v)) = summarise(&o) {
                    self.live.insert(k, v);
                }
                true
            }
            watcher::Event::Delete(o) => {
                if let Some((k, _)) = summarise(&o) {
                    self.live.remove(&k);
                }
                true
            }
            watcher::Event::Init => {
                self.buffer = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let (Some(b), Some((k, v))) = (self.buffer.as_mut(), summarise(&o)) {
                    b.insert(k, v);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(b) = self.buffer.take() {
                    self.live = b;
                }
                self.synced = true;
                true
            }
        }
    }

    pub(crate) fn synced(&self) -> bool {
        self.synced
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.live.get(k)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.live.iter()
    }
}

impl<V> Indexed<Key, V> {
    /// Entries of one namespace, by a range scan (the map is ordered by namespace first).
    pub(crate) fn in_namespace<'a>(
        &'a self,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a V)> + 'a {
        self.live
            .range((ns.to_string(), String::new())..)
            .take_while(move |((n, _), _)| n == ns)
    }
}

pub(crate) fn namespace_info(ns: &Namespace) -> Option<(String, NamespaceInfo)> {
    let name = ns.metadata.name.clone()?;
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    Some((
        name.clone(),
        NamespaceInfo {
            name,
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            terminating,
            uid: ns.metadata.uid.clone(),
        },
    ))
}

pub(crate) fn secret_info(s: &Secret) -> Option<(Key, ExistingSecret)> {
    let m = &s.metadata;
    let key = (m.namespace.clone()?, m.name.clone()?);
    let type_ = s.type_.clone().unwrap_or_else(|| "Opaque".into());
    let managed = crate::ownership::is_ours(m);
    let empty = BTreeMap::new();
    Some((
        key,
        ExistingSecret {
            content_hash: source::content_hash(&type_, s.data.as_ref().unwrap_or(&empty)),
            type_,
            managed,
            source: m
                .annotations
                .as_ref()
                .and_then(|a| a.get(SOURCE_ANNOTATION))
                .cloned(),
            resource_version: m.resource_version.clone(),
            uid: m.uid.clone(),
            created: m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        },
    ))
}

pub(crate) fn service_account_info(sa: &ServiceAccount) -> Option<(Key, ServiceAccountInfo)> {
    let m = &sa.metadata;
    Some((
        (m.namespace.clone()?, m.name.clone()?),
        ServiceAccountInfo {
            image_pull_secrets: sa
                .image_pull_secrets
                .as_ref()
                .map(|l| l.iter().map(|r| r.name.clone()).collect()),
            resource_version: m.resource_version.clone(),
        },
    ))
}

/// One observed source: `None` until its watch has listed, then `Some(None)` when absent.
pub(crate) type SourceSlot = Option<Option<Secret>>;

#[derive(Default)]
pub(crate) struct Cache {
    pub(crate) namespaces: RwLock<Indexed<String, NamespaceInfo>>,
    /// One per entry of [`WATCHED_TYPES`].
    pub(crate) secrets: [RwLock<Indexed<Key, ExistingSecret>>; 2],
    pub(crate) sources: RwLock<HashMap<SecretRef, SourceSlot>>,
    /// Credential-provider entry → the plugin it was fetched with and the last good
    /// answer. Only the sync leader fills it (see `credential_provider::refresh`).
    providers: RwLock<HashMap<String, (Arc<CredentialProvider>, ValidSource)>>,
    pub(crate) accounts: RwLock<Indexed<Key, ServiceAccountInfo>>,
    pub(crate) accounts_watched: AtomicBool,
    /// Pinged on every change; the reconciler debounces.
    pub(crate) changed: Notify,
    /// Watch name → when it last failed, until its next successful event.
    failing: std::sync::Mutex<HashMap<String, Instant>>,
}

/// A watch that failed and has not delivered an event since counts as unhealthy for
/// this long after its last error. A watch that reconnects delivers nothing until
/// something changes (or a 410 makes it relist), so "no error for a while" is also
/// health.
const WATCH_GRACE: Duration = Duration::from_secs(10);

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub(crate) fn ready(&self) -> bool {
        read(&self.namespaces).synced() && self.secrets.iter().all(|s| read(s).synced())
    }

    /// What the webhook needs about one namespace. Labels are `None` for a namespace the
    /// cache has not seen yet (just created): scope selectors then count as satisfied and
    /// `ensure_secrets` looks the namespace up before writing anything.
    pub(crate) fn facts(&self, ns: &str) -> NamespaceFacts {
        if !self.ready() {
            return NamespaceFacts::default();
        }
        let labels = read(&self.namespaces)
            .get(&ns.to_string())
            .map(|n| n.labels.clone());
        let mut names = HashSet::new();
        for s in &self.secrets {
            names.extend(read(s).in_namespace(ns).map(|((_, name), _)| name.clone()));
        }
        NamespaceFacts {
            labels,
            secrets: Some(names),
        }
    }

    pub(crate) fn namespace(&self, ns: &str) -> Option<NamespaceInfo> {
        read(&self.namespaces).get(&ns.to_string()).cloned()
    }

    pub(crate) fn namespace_list(&self) -> Vec<NamespaceInfo> {
        read(&self.namespaces)
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn secret(&self, key: &Key) -> Option<ExistingSecret> {
        self.secrets.iter().find_map(|s| read(s).get(key).cloned())
    }

    /// Existing secrets the planner must see: every name some entry uses, and every
    /// secret carrying our label.
    pub(crate) fn relevant_secrets(&self, cfg: &Config) -> HashMap<Key, ExistingSecret> {
        let names: HashSet<&str> = cfg.registries.iter().map(|r| r.secret.as_str()).collect();
        let mut out = HashMap::new();
        for s in &self.secrets {
            for (k, v) in read(s).iter() {
                if v.managed || names.contains(k.1.as_str()) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    pub(crate) fn source(&self, r: &SecretRef) -> SourceSlot {
        read(&self.sources).get(r).cloned().flatten()
    }

    /// Validated state of every configured source that has been listed, and of every
    /// credential provider that has answered.
    pub(crate) fn source_states(&self, cfg: &Config) -> HashMap<Source, SourceState> {
        let sources = read(&self.sources);
        let mut out = HashMap::new();
        for src in cfg.registries.iter().filter_map(|r| r.source.as_ref()) {
            let r = match src {
                Source::Secret(r) => r,
                Source::CredentialProvider(p) => {
                    let state = self
                        .provider(p)
                        .map_or(SourceState::Pending, SourceState::Valid);
                    out.insert(src.clone(), state);
                    continue;
                }
            };
            let state = match sources.get(r) {
                Some(Some(Some(s))) => match source::validate(s) {
                    Ok(v) => SourceState::Valid(v),
                    Err(e) => SourceState::Invalid(e),
                },
                Some(Some(None)) => SourceState::Missing,
                // Not listed yet: treat as missing (which writes nothing and deletes nothing).
                _ => SourceState::Missing,
            };
            out.insert(src.clone(), state);
        }
        out
    }

    /// The last good answer of `spec`'s plugin, if it was fetched with exactly that
    /// plugin config.
    pub(crate) fn provider(&self, spec: &CredentialProvider) -> Option<ValidSource> {
        read(&self.providers)
            .get(&spec.registry)
            .filter(|(s, _)| **s == *spec)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn has_provider(&self, spec: &CredentialProvider) -> bool {
        self.provider(spec).is_some()
    }

    /// Stores a good answer; returns whether the content changed (and if so pings the
    /// reconciler).
    pub(crate) fn set_provider(&self, spec: &Arc<CredentialProvider>, v: ValidSource) -> bool {
        let changed = {
            let mut p = write(&self.providers);
            let changed = p
                .get(&spec.registry)
                .is_none_or(|(s, old)| s != spec || old.hash != v.hash);
            p.insert(spec.registry.clone(), (spec.clone(), v));
            changed
        };
        if changed {
            self.changed.notify_one();
        }
        changed
    }

    pub(crate) fn forget_provider(&self, registry: &str) {
        write(&self.providers).remove(registry);
    }

    pub(crate) fn accounts(&self) -> HashMap<Key, ServiceAccountInfo> {
        read(&self.accounts)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn apply_namespace(&self, ev: watcher::Event<Namespace>) {
        if write(&self.namespaces).apply(ev, namespace_info) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn apply_secret(&self, slot: usize, ev: watcher::Event<Secret>) {
        if write(&self.secrets[slot]).apply(ev, secret_info) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn apply_account(&self, ev: watcher::Event<ServiceAccount>) {
        if write(&self.accounts).apply(ev, service_account_info) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn set_source(&self, r: &SecretRef, s: Option<Secret>) {
        write(&self.sources).insert(r.clone(), Some(s));
        self.changed.notify_one();
    }

    /// Records a watch's error, or a successful event (`ok`).
    pub(crate) fn watch_result(&self, watch: &str, ok: bool) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            if !f.is_empty() {
                f.remove(watch);
            }
        } else {
            f.insert(watch.to_string(), Instant::now());
        }
    }

    /// A watch no longer running (its source left the config).
    pub(crate) fn forget_watch(&self, watch: &str) {
        self.watch_result(watch, true);
    }

    /// No watch failed within [`WATCH_GRACE`] without recovering since.
    pub(crate) fn watches_healthy(&self) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .all(|t| t.elapsed() >= WATCH_GRACE)
    }

    pub(crate) fn accounts_watched(&self) -> bool {
        self.accounts_watched.load(Ordering::Acquire)
    }

    /// True the first time only: the caller starts the ServiceAccount watch.
    pub(crate) fn start_watching_accounts(&self) -> bool {
        !self.accounts_watched.swap(true, Ordering::AcqRel)
    }

    /// Forgets sources no longer configured.
    pub(crate) fn forget_sources_except(&self, wanted: &HashSet<SecretRef>) {
        write(&self.sources).retain(|k, _| wanted.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    fn secret(ns: &str, name: &str, managed: bool) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: managed
                    .then(|| BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into())])),
                ..Default::default()
            },
            type_: Some(TYPE_DOCKERCONFIGJSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(b"{}".to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn relist_is_atomic_and_facts_are_per_namespace() {
        let c = Cache::default();
        assert!(!c.ready());
        let f = c.facts("a");
        assert!(f.labels.is_none() && f.secrets.is_none());
        c.apply_namespace(watcher::Event::Init);
        c.apply_namespace(watcher::Event::InitApply(Namespace {
            metadata: ObjectMeta {
                name: Some("a".into()),
                labels: Some(BTreeMap::from([("x".into(), "y".into())])),
                ..Default::default()
            },
            ..Default::default()
        }));
        c.apply_namespace(watcher::Event::InitDone);
        for slot in 0..2 {
            c.apply_secret(slot, watcher::Event::Init);
            c.apply_secret(slot, watcher::Event::InitDone);
        }
        assert!(c.ready());
        c.apply_secret(0, watcher::Event::Apply(secret("a", "s1", true)));
        c.apply_secret(1, watcher::Event::Apply(secret("a", "s2", false)));
        c.apply_secret(0, watcher::Event::Apply(secret("ab", "s3", false)));
        let f = c.facts("a");
        assert_eq!(f.labels.unwrap()["x"], "y");
        assert_eq!(
            f.secrets.unwrap(),
            HashSet::from(["s1".to_string(), "s2".to_string()])
        );
        // unknown namespace: labels unknown, secrets known to be none
        let f = c.facts("new");
        assert_eq!((f.labels, f.secrets), (None, Some(HashSet::new())));
        // a relist in progress keeps serving the old state
        c.apply_secret(0, watcher::Event::Init);
        assert!(c.facts("a").secrets.unwrap().contains("s1"));
        c.apply_secret(0, watcher::Event::InitDone);
        assert!(!c.facts("a").secrets.unwrap().contains("s1"));
        c.apply_secret(1, watcher::Event::Delete(secret("a", "s2", false)));
        assert!(c.facts("a").secrets.unwrap().is_empty());
    }

    #[test]
    fn summaries_keep_no_data() {
        let (k, e) = secret_info(&secret("n", "s", true)).unwrap();
        assert_eq!(k, ("n".to_string(), "s".to_string()));
        assert!(e.managed);
        assert_eq!(e.content_hash.len(), 64);
    }

    #[test]
    fn relevant_secrets_are_ours_or_named_by_config() {
        let c = Cache::default();
        c.apply_secret(0, watcher::Event::Apply(secret("n", "mine", true)));
        c.apply_secret(0, watcher::Event::Apply(secret("n", "named", false)));
        c.apply_secret(0, watcher::Event::Apply(secret("n", "other", false)));
        let cfg =
            Config::parse("registries: [{name: a, match: [a.io], secret: named}]", "t").unwrap();
        let mut got: Vec<String> = c.relevant_secrets(&cfg).into_keys().map(|k| k.1).collect();
        got.sort();
        assert_eq!(got, vec!["mine", "named"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_watch_is_unhealthy_until_an_event_or_a_quiet_grace() {
        let c = Cache::default();
        assert!(c.watches_healthy());
        c.watch_result("namespaces", false);
        assert!(!c.watches_healthy());
        c.watch_result("namespaces", true);
        assert!(c.watches_healthy(), "an event heals it");
        c.watch_result("secrets", false);
        tokio::time::advance(WATCH_GRACE - Duration::from_millis(1)).await;
        assert!(!c.watches_healthy());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            c.watches_healthy(),
            "reconnected silently: no error for the grace"
        );
        c.watch_result("source a/b", false);
        c.forget_watch("source a/b");
        assert!(
            c.watches_healthy(),
            "a watch no longer running does not count"
        );
    }
}
