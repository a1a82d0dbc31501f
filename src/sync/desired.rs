//! What the cluster should look like, as pure functions of the config and a snapshot of the
//! caches, and the pure conversions between Kubernetes objects and those snapshots. The
//! controller only executes the actions returned here, so every rule about ownership
//! (never touch what we did not create) and scope (who delivers which secret where) is
//! decided and tested in this file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ObjectMeta;
use serde_json::json;

use crate::config::{Config, Registry, SecretRef, Source};
use crate::image;

use super::source::{InvalidSource, ValidSource};

pub(crate) use crate::ownership::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
pub(crate) const SOURCE_ANNOTATION: &str = "pullsecret-injector.io/source";
pub(crate) const VERSION_ANNOTATION: &str = "pullsecret-injector.io/source-version";

/// What the namespace cache knows about one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NamespaceInfo {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    /// Being deleted: creating anything there fails or delays the deletion.
    pub(crate) terminating: bool,
    /// For Events about the namespace.
    pub(crate) uid: Option<String>,
}

/// What the secret cache knows about one existing Secret (no data kept, only its hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExistingSecret {
    pub(crate) type_: String,
    /// Carries our managed-by label; only such secrets are ever updated or deleted.
    pub(crate) managed: bool,
    /// The `pullsecret-injector.io/source` annotation.
    pub(crate) source: Option<String>,
    /// Hash of the secret's own type and data (not the annotation, which could lie).
    pub(crate) content_hash: String,
    pub(crate) resource_version: Option<String>,
    pub(crate) uid: Option<String>,
    /// Seconds since the epoch, for the stuck-pod guard.
    pub(crate) created: Option<i64>,
}

/// State of a configured source, as last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceState {
    Missing,
    Invalid(InvalidSource),
    Valid(ValidSource),
    /// A credential provider that has not answered usably on this replica yet: nothing
    /// is written, nothing deleted; its failures are reported by its refresher.
    Pending,
}

/// `(namespace, name)`.
pub(crate) type Key = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Create {
        namespace: String,
        name: String,
        source: Source,
        /// The delivering entry's name, for logs and Events.
        registry: String,
    },
    /// Data, or the source it comes from, changed; replace guarded by resourceVersion.
    Update {
        namespace: String,
        name: String,
        source: Source,
        registry: String,
        resource_version: Option<String>,
    },
    /// The source's type changed; `type` is immutable, so delete (guarded) and create.
    Recreate {
        namespace: String,
        name: String,
        source: Source,
        registry: String,
        resource_version: Option<String>,
        uid: Option<String>,
    },
    /// A copy we own that no entry wants any more.
    Delete {
        namespace: String,
        name: String,
        resource_version: Option<String>,
        uid: Option<String>,
    },
    /// A secret of the wanted name exists without our label: leave it, report it.
    Conflict {
        namespace: String,
        name: String,
        registry: String,
    },
}

impl Action {
    pub(crate) fn key(&self) -> Key {
        match self {
            Action::Create {
                namespace, name, ..
            }
            | Action::Update {
                namespace, name, ..
            }
            | Action::Recreate {
                namespace, name, ..
            }
            | Action::Delete {
                namespace, name, ..
            }
            | Action::Conflict {
                namespace, name, ..
            } => (namespace.clone(), name.clone()),
        }
    }
}

/// Something wrong with the configuration or a source, reported once per reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    SourceMissing {
        registry: String,
        source: SecretRef,
    },
    SourceInvalid {
        registry: String,
        source: SecretRef,
        reason: InvalidSource,
    },
    /// The source holds no `auths` key for some of the entry's patterns.
    Uncovered {
        registry: String,
        source: SecretRef,
        patterns: Vec<String>,
    },
    /// Two entries want the same secret name from different sources in one namespace;
    /// the first entry in the config wins.
    Clash {
        namespace: String,
        name: String,
        winner: String,
        loser: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) actions: Vec<Action>,
    pub(crate) problems: Vec<Problem>,
    /// Every wanted copy → the index of the registry entry that wants it.
    pub(crate) desired: BTreeMap<Key, usize>,
}

/// Whether entry `reg` wants its copy in `ns` (scope only; see [`deliverer`] for which
/// of several same-name entries wins).
fn wants_copy(cfg: &Config, reg: &Registry, ns: &NamespaceInfo) -> bool {
    let Some(src) = &reg.source else {
        return false;
    };
    // The copy would be the source itself.
    let is_source = src
        .secret()
        .is_some_and(|s| s.namespace == ns.name && s.name == reg.secret);
    if ns.terminating || is_source || cfg.is_namespace_excluded(&ns.name) {
        return false;
    }
    reg.namespaces.contains(&ns.name, Some(&ns.labels))
}

/// The one answer to "who delivers secret `name` into namespace `ns`": the first entry,
/// in config order, with a source that wants a copy of that name there. The planner, the
/// admission-time create and stuck-pod repair all ask this function, so they never
/// disagree about scope.
pub(crate) fn deliverer<'a>(
    cfg: &'a Config,
    ns: &NamespaceInfo,
    name: &str,
) -> Option<(usize, &'a Registry)> {
    cfg.registries
        .iter()
        .enumerate()
        .find(|(_, r)| r.secret == name && wants_copy(cfg, r, ns))
}

pub(crate) fn source_string(s: &SecretRef) -> String {
    format!("{}/{}", s.namespace, s.name)
}

/// The `pullsecret-injector.io/source` annotation of a copy: `namespace/name` of a
/// Secret source, `credential-provider:<entry>` for a plugin (`:` is in no namespace
/// name, so the two never collide).
pub(crate) fn source_annotation(s: &Source) -> String {
    match s {
        Source::Secret(r) => source_string(r),
        Source::CredentialProvider(p) => format!("credential-provider:{}", p.registry),
    }
}

/// Desired copies versus existing secrets → actions.
///
/// `existing` needs to hold only secrets whose name some entry uses, plus every secret
/// carrying our label (candidates for deletion); extra entries are ignored.
pub(crate) fn plan(
    cfg: &Config,
    namespaces: &[NamespaceInfo],
    existing: &HashMap<Key, ExistingSecret>,
    sources: &HashMap<Source, SourceState>,
) -> Plan {
    let mut out = Plan::default();
    for reg in &cfg.registries {
        // Problems are about Secret sources; a credential provider's answer is checked
        // (coverage included) before it becomes `Valid`, and its failures are reported
        // by its refresher.
        let Some(Source::Secret(src)) = &reg.source else {
            continue;
        };
        let state = reg.source.as_ref().and_then(|s| sources.get(s));
        match state.unwrap_or(&SourceState::Missing) {
            SourceState::Pending => {}
            SourceState::Missing => out.problems.push(Problem::SourceMissing {
                registry: reg.name.clone(),
                source: src.clone(),
            }),
            SourceState::Invalid(reason) => out.problems.push(Problem::SourceInvalid {
                registry: reg.name.clone(),
                source: src.clone(),
                reason: reason.clone(),
            }),
            SourceState::Valid(v) => {
                let patterns = super::source::uncovered_patterns(&reg.patterns, &v.auth_keys);
                if !patterns.is_empty() {
                    out.problems.push(Problem::Uncovered {
                        registry: reg.name.clone(),
                        source: src.clone(),
                        patterns,
                    });
                }
            }
        }
    }
    // Every secret name an entry with a source delivers, in config order.
    let mut names: Vec<&str> = Vec::new();
    for r in cfg.registries.iter().filter(|r| r.source.is_some()) {
        if !names.contains(&r.secret.as_str()) {
            names.push(&r.secret);
        }
    }
    for ns in namespaces {
        for &name in &names {
            let Some((w, winner)) = deliverer(cfg, ns, name) else {
                continue;
            };
            out.desired.insert((ns.name.clone(), name.to_string()), w);
            for rival in &cfg.registries[w + 1..] {
                if rival.secret == name
                    && rival.source != winner.source
                    && wants_copy(cfg, rival, ns)
                {
                    out.problems.push(Problem::Clash {
                        namespace: ns.name.clone(),
                        name: name.to_string(),
                        winner: winner.name.clone(),
                        loser: rival.name.clone(),
                    });
                }
            }
        }
    }
    for (key, &i) in &out.desired {
        let reg = &cfg.registries[i];
        let src = reg.source.as_ref().expect("desired entries have a source");
        let (namespace, name) = key.clone();
        match existing.get(key) {
            Some(e) if !e.managed => out.actions.push(Action::Conflict {
                namespace,
                name,
                registry: reg.name.clone(),
            }),
            existing_copy => {
                // Without a valid source nothing is written; an existing copy stays.
                let Some(SourceState::Valid(v)) = sources.get(src) else {
                    continue;
                };
                let registry = reg.name.clone();
                match existing_copy {
                    None => out.actions.push(Action::Create {
                        namespace,
                        name,
                        source: src.clone(),
                        registry,
                    }),
                    Some(e) if e.type_ != v.type_ => out.actions.push(Action::Recreate {
                        namespace,
                        name,
                        source: src.clone(),
                        registry,
                        resource_version: e.resource_version.clone(),
                        uid: e.uid.clone(),
                    }),
                    Some(e)
                        if e.content_hash != v.hash
                            || e.source.as_deref() != Some(source_annotation(src).as_str()) =>
                    {
                        out.actions.push(Action::Update {
                            namespace,
                            name,
                            source: src.clone(),
                            registry,
                            resource_version: e.resource_version.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let mut stale: Vec<(&Key, &ExistingSecret)> = existing
        .iter()
        .filter(|(k, e)| e.managed && e.source.is_some() && !out.desired.contains_key(*k))
        .collect();
    stale.sort_by(|a, b| a.0.cmp(b.0));
    for ((namespace, name), e) in stale {
        out.actions.push(Action::Delete {
            namespace: namespace.clone(),
            name: name.clone(),
            resource_version: e.resource_version.clone(),
            uid: e.uid.clone(),
        });
    }
    out
}

/// A ServiceAccount as the cache knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceAccountInfo {
    pub(crate) image_pull_secrets: Option<Vec<String>>,
    pub(crate) resource_version: Option<String>,
}

/// Append `secret` to a ServiceAccount's `imagePullSecrets`, never replacing the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaPatch {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) secret: String,
    /// The list was absent: the patch adds it whole, guarded by resourceVersion.
    pub(crate) list_absent: bool,
    pub(crate) resource_version: Option<String>,
}

/// ServiceAccounts (named by entries' `serviceAccounts`) in namespaces that get a copy,
/// missing the copy's name. Accounts that do not exist yet are skipped: a new account
/// triggers a reconcile, and creating accounts is not ours to do.
pub(crate) fn sa_patches(
    cfg: &Config,
    plan: &Plan,
    existing: &HashMap<Key, ExistingSecret>,
    accounts: &HashMap<Key, ServiceAccountInfo>,
) -> Vec<SaPatch> {
    let mut out = Vec::new();
    for (key, &i) in &plan.desired {
        let (ns, secret) = key;
        let reg = &cfg.registries[i];
        // Only copies that exist as ours or are being created now: someone else's secret
        // of that name is their business, and a reference to a copy that cannot be made
        // (invalid source) would only produce kubelet warnings.
        let ours = existing.get(key).is_some_and(|e| e.managed)
            || plan
                .actions
                .iter()
                .any(|a| matches!(a, Action::Create { .. }) && &a.key() == key);
        if !ours {
            continue;
        }
        let mut seen = BTreeSet::new();
        for sa in &reg.service_accounts {
            if !seen.insert(sa) {
                continue;
            }
            let Some(info) = accounts.get(&(ns.clone(), sa.clone())) else {
                continue;
            };
            let present = info
                .image_pull_secrets
                .as_ref()
                .is_some_and(|l| l.contains(secret));
            if !present {
                out.push(SaPatch {
                    namespace: ns.clone(),
                    service_account: sa.clone(),
                    secret: secret.clone(),
                    list_absent: info.image_pull_secrets.is_none(),
                    resource_version: info.resource_version.clone(),
                });
            }
        }
    }
    out
}

/// A Pod as the stuck-pod repair needs to see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
    /// Has an ownerReference with `controller: true` (something will recreate it).
    pub(crate) controlled: bool,
    pub(crate) created: Option<i64>,
    pub(crate) pull_secrets: Vec<String>,
    /// Images of containers waiting in `ImagePullBackOff` or `ErrImagePull`.
    pub(crate) stuck_images: Vec<String>,
}

/// Controller-owned pods stuck pulling an image that a copy we now have would serve.
///
/// Only when deleting can help: the pod does not reference the copy (its replacement will
/// get it injected), or the copy appeared after the pod was created. A pod that already
/// had the copy from the start and still fails has wrong credentials; deleting it would
/// loop forever.
pub(crate) fn stuck_pods(
    cfg: &Config,
    pods: &[PodInfo],
    namespaces: &HashMap<String, NamespaceInfo>,
    existing: &HashMap<Key, ExistingSecret>,
) -> Vec<PodInfo> {
    if !cfg.repair_stuck_pods {
        return Vec::new();
    }
    let mut out = Vec::new();
    for pod in pods {
        if !pod.controlled
            || pod.stuck_images.is_empty()
            || cfg.is_namespace_excluded(&pod.namespace)
        {
            continue;
        }
        let Some(ns) = namespaces.get(&pod.namespace) else {
            continue;
        };
        let helps = pod.stuck_images.iter().any(|img| {
            let Ok(img) = image::parse(img) else {
                return false;
            };
            cfg.entries_for(&img, &ns.name, Some(&ns.labels))
                .into_iter()
                .any(|i| {
                    let secret = &cfg.registries[i].secret;
                    // Only a copy we deliver here can have appeared since the pod began.
                    if deliverer(cfg, ns, secret).is_none() {
                        return false;
                    }
                    let Some(copy) = existing.get(&(ns.name.clone(), secret.clone())) else {
                        return false;
                    };
                    copy.managed
                        && (!pod.pull_secrets.contains(secret)
                            || matches!((copy.created, pod.created), (Some(c), Some(p)) if c > p))
                })
        });
        if helps {
            out.push(pod.clone());
        }
    }
    out
}

/// The managed copy of a validated source: our label, where it comes from, and the hash
/// of the content it was made from.
pub(crate) fn build_copy(namespace: &str, name: &str, src: &Source, v: &ValidSource) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(crate::ownership::labels()),
            annotations: Some(BTreeMap::from([
                (SOURCE_ANNOTATION.into(), source_annotation(src)),
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
pub(crate) fn sa_patch(p: &SaPatch) -> json_patch::Patch {
    let mut ops = Vec::new();
    if let Some(rv) = &p.resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    if p.list_absent {
        ops.push(json!({"op": "add", "path": "/imagePullSecrets", "value": [{"name": p.secret}]}));
    } else {
        ops.push(json!({"op": "add", "path": "/imagePullSecrets/-", "value": {"name": p.secret}}));
    }
    serde_json::from_value(serde_json::Value::Array(ops))
        .expect("test and add operations with string paths are a valid JSON patch")
}

/// What stuck-pod repair needs of a Pod; `None` for a Pod without status or name.
pub(crate) fn pod_info(p: &Pod) -> Option<PodInfo> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::source::{TYPE_DOCKERCFG, TYPE_DOCKERCONFIGJSON};
    use k8s_openapi::ByteString;

    const CFG: &str = r#"
namespaces: {exclude: ["kube-*"]}
repairStuckPods: true
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    source: {namespace: creds, name: tcr-src}
    namespaces:
      include: ["team-*", "creds"]
      exclude: ["team-legacy"]
      selector: {matchLabels: {registry-access: tcr}}
    serviceAccounts: [default, default, builder]
  - name: ghcr
    match: ["ghcr.io/acme"]
    secret: ghcr-pull
    source: {namespace: creds, name: ghcr-pull}
  - name: manual
    match: ["quay.io"]
    secret: quay-pull
"#;

    fn cfg() -> Config {
        Config::parse(CFG, "t.yaml").unwrap()
    }

    fn ns(name: &str, access: bool) -> NamespaceInfo {
        let mut labels = BTreeMap::new();
        if access {
            labels.insert("registry-access".into(), "tcr".into());
        }
        NamespaceInfo {
            name: name.into(),
            labels,
            terminating: false,
            uid: None,
        }
    }

    fn valid(type_: &str, auth_key: &str) -> SourceState {
        let (key, json) = if type_ == TYPE_DOCKERCFG {
            (
                ".dockercfg",
                format!(r#"{{"{auth_key}":{{"auth":"dTpw"}}}}"#),
            )
        } else {
            (
                ".dockerconfigjson",
                format!(r#"{{"auths":{{"{auth_key}":{{"auth":"dTpw"}}}}}}"#),
            )
        };
        let s = k8s_openapi::api::core::v1::Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(json.into_bytes()),
            )])),
            ..Default::default()
        };
        SourceState::Valid(crate::sync::source::validate(&s).unwrap())
    }

    fn r(ns: &str, name: &str) -> Source {
        Source::Secret(sr(ns, name))
    }

    fn sr(ns: &str, name: &str) -> SecretRef {
        SecretRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn sources() -> HashMap<Source, SourceState> {
        HashMap::from([
            (
                r("creds", "tcr-src"),
                valid(TYPE_DOCKERCONFIGJSON, "*.tencentcloudcr.com"),
            ),
            (
                r("creds", "ghcr-pull"),
                valid(TYPE_DOCKERCONFIGJSON, "ghcr.io"),
            ),
        ])
    }

    fn hash_of(s: &SourceState) -> String {
        match s {
            SourceState::Valid(v) => v.hash.clone(),
            _ => unreachable!(),
        }
    }

    fn copy(src: &str, hash: &str) -> ExistingSecret {
        ExistingSecret {
            type_: TYPE_DOCKERCONFIGJSON.into(),
            managed: true,
            source: Some(src.into()),
            content_hash: hash.into(),
            resource_version: Some("7".into()),
            uid: Some("u".into()),
            created: Some(100),
        }
    }

    fn k(a: &str, b: &str) -> Key {
        (a.into(), b.into())
    }

    fn create(ns: &str, name: &str, src: Source) -> Action {
        let registry = match src.secret().map_or("", |s| s.name.as_str()) {
            "tcr-src" => "tcr",
            "ghcr-pull" => "ghcr",
            other => other,
        };
        Action::Create {
            namespace: ns.into(),
            name: name.into(),
            registry: registry.into(),
            source: src,
        }
    }

    #[test]
    fn creates_copies_in_scope_and_skips_the_rest() {
        let c = cfg();
        let nss = [
            ns("team-a", true),
            ns("team-b", false),     // selector fails: ghcr only
            ns("team-legacy", true), // excluded by the entry: ghcr only
            ns("kube-system", true), // excluded globally
            ns("creds", true), // source namespace: tcr copy has another name, ghcr is the source itself
            NamespaceInfo {
                terminating: true,
                ..ns("team-dying", true)
            },
        ];
        let p = plan(&c, &nss, &HashMap::new(), &sources());
        let tcr = r("creds", "tcr-src");
        let ghcr = r("creds", "ghcr-pull");
        assert_eq!(
            p.actions,
            vec![
                create("creds", "tcr-pull", tcr.clone()),
                create("team-a", "ghcr-pull", ghcr.clone()),
                create("team-a", "tcr-pull", tcr),
                create("team-b", "ghcr-pull", ghcr.clone()),
                create("team-legacy", "ghcr-pull", ghcr),
            ]
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn up_to_date_copies_need_nothing_and_changed_ones_update() {
        let c = cfg();
        let s = sources();
        let tcr_hash = hash_of(&s[&r("creds", "tcr-src")]);
        let existing = HashMap::from([
            (k("team-a", "tcr-pull"), copy("creds/tcr-src", &tcr_hash)),
            (k("team-b", "tcr-pull"), copy("creds/tcr-src", "old")),
            (k("team-c", "tcr-pull"), copy("creds/elsewhere", &tcr_hash)),
        ]);
        let nss = [ns("team-a", true), ns("team-b", true), ns("team-c", true)];
        let c = Config {
            registries: c.registries[..1].to_vec(),
            ..c
        };
        let p = plan(&c, &nss, &existing, &s);
        let upd = |n: &str| Action::Update {
            namespace: n.into(),
            name: "tcr-pull".into(),
            source: r("creds", "tcr-src"),
            registry: "tcr".into(),
            resource_version: Some("7".into()),
        };
        assert_eq!(p.actions, vec![upd("team-b"), upd("team-c")]);
    }

    #[test]
    fn type_change_recreates() {
        let c = cfg();
        let mut s = sources();
        s.insert(
            r("creds", "tcr-src"),
            valid(TYPE_DOCKERCFG, "*.tencentcloudcr.com"),
        );
        let existing = HashMap::from([(k("team-a", "tcr-pull"), copy("creds/tcr-src", "x"))]);
        let p = plan(&c, &[ns("team-a", true)], &existing, &s);
        assert!(p.actions.contains(&Action::Recreate {
            namespace: "team-a".into(),
            name: "tcr-pull".into(),
            source: r("creds", "tcr-src"),
            registry: "tcr".into(),
            resource_version: Some("7".into()),
            uid: Some("u".into()),
        }));
    }

    #[test]
    fn deletes_only_our_copies_that_left_scope() {
        let c = cfg();
        let s = sources();
        let h = hash_of(&s[&r("creds", "tcr-src")]);
        let existing = HashMap::from([
            // relabelled out of scope: ours → delete
            (k("team-a", "tcr-pull"), copy("creds/tcr-src", &h)),
            // entry removed from config (name no longer used): ours → delete
            (k("team-a", "old-pull"), copy("creds/old", "z")),
            // unowned, out of scope: untouched
            (
                k("team-x", "tcr-pull"),
                ExistingSecret {
                    managed: false,
                    ..copy("creds/tcr-src", &h)
                },
            ),
            // managed label but no source annotation: not a copy, untouched
            (
                k("team-y", "tcr-pull"),
                ExistingSecret {
                    source: None,
                    ..copy("", &h)
                },
            ),
        ]);
        let nss = [
            ns("team-a", false),
            ns("team-x", false),
            ns("team-y", false),
        ];
        let c = Config {
            registries: c.registries[..1].to_vec(),
            ..c
        };
        let p = plan(&c, &nss, &existing, &s);
        let del = |n: &str, name: &str| Action::Delete {
            namespace: n.into(),
            name: name.into(),
            resource_version: Some("7".into()),
            uid: Some("u".into()),
        };
        assert_eq!(
            p.actions,
            vec![del("team-a", "old-pull"), del("team-a", "tcr-pull")]
        );
    }

    #[test]
    fn unowned_secret_is_a_conflict_never_an_update() {
        let c = cfg();
        let existing = HashMap::from([(
            k("team-a", "ghcr-pull"),
            ExistingSecret {
                managed: false,
                type_: "Opaque".into(),
                content_hash: "mine".into(),
                ..Default::default()
            },
        )]);
        let p = plan(&c, &[ns("team-a", false)], &existing, &sources());
        assert_eq!(
            p.actions,
            vec![Action::Conflict {
                namespace: "team-a".into(),
                name: "ghcr-pull".into(),
                registry: "ghcr".into(),
            }]
        );
    }

    #[test]
    fn invalid_or_missing_source_writes_nothing_and_keeps_copies() {
        let c = cfg();
        let mut s = sources();
        s.insert(
            r("creds", "tcr-src"),
            SourceState::Invalid(InvalidSource::NoRegistries(".dockerconfigjson")),
        );
        s.remove(&r("creds", "ghcr-pull"));
        let existing = HashMap::from([(k("team-a", "tcr-pull"), copy("creds/tcr-src", "old"))]);
        let p = plan(&c, &[ns("team-a", true), ns("team-b", true)], &existing, &s);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(
            p.problems,
            vec![
                Problem::SourceInvalid {
                    registry: "tcr".into(),
                    source: sr("creds", "tcr-src"),
                    reason: InvalidSource::NoRegistries(".dockerconfigjson")
                },
                Problem::SourceMissing {
                    registry: "ghcr".into(),
                    source: sr("creds", "ghcr-pull")
                },
            ]
        );
    }

    #[test]
    fn uncovered_patterns_and_clashes_are_reported() {
        let text = r#"
registries:
  - {name: a, match: ["a.io", "b.io"], secret: s, source: {namespace: c, name: a}}
  - {name: b, match: ["c.io"], secret: s, source: {namespace: c, name: b}}
"#;
        let c = Config::parse(text, "t").unwrap();
        let s = HashMap::from([
            (r("c", "a"), valid(TYPE_DOCKERCONFIGJSON, "a.io")),
            (r("c", "b"), valid(TYPE_DOCKERCONFIGJSON, "c.io")),
        ]);
        let p = plan(&c, &[ns("x", false)], &HashMap::new(), &s);
        assert_eq!(p.actions, vec![create("x", "s", r("c", "a"))]);
        assert!(p.problems.contains(&Problem::Uncovered {
            registry: "a".into(),
            source: sr("c", "a"),
            patterns: vec!["b.io".into()]
        }));
        assert!(p.problems.contains(&Problem::Clash {
            namespace: "x".into(),
            name: "s".into(),
            winner: "a".into(),
            loser: "b".into()
        }));
    }

    #[test]
    fn service_accounts_are_appended_not_replaced() {
        let c = cfg();
        let p = plan(
            &c,
            &[ns("team-a", true), ns("team-b", true)],
            &HashMap::new(),
            &sources(),
        );
        let accounts = HashMap::from([
            (
                k("team-a", "default"),
                ServiceAccountInfo {
                    image_pull_secrets: Some(vec!["other".into()]),
                    resource_version: Some("1".into()),
                },
            ),
            (
                k("team-a", "builder"),
                ServiceAccountInfo {
                    image_pull_secrets: Some(vec!["tcr-pull".into()]),
                    resource_version: Some("2".into()),
                },
            ),
            (
                k("team-b", "default"),
                ServiceAccountInfo {
                    image_pull_secrets: None,
                    resource_version: Some("3".into()),
                },
            ),
        ]);
        let got = sa_patches(&c, &p, &HashMap::new(), &accounts);
        assert_eq!(
            got,
            vec![
                SaPatch {
                    namespace: "team-a".into(),
                    service_account: "default".into(),
                    secret: "tcr-pull".into(),
                    list_absent: false,
                    resource_version: Some("1".into()),
                },
                SaPatch {
                    namespace: "team-b".into(),
                    service_account: "default".into(),
                    secret: "tcr-pull".into(),
                    list_absent: true,
                    resource_version: Some("3".into()),
                },
            ]
        );
    }

    #[test]
    fn stuck_pods_only_controller_owned_and_only_when_it_helps() {
        let c = cfg();
        let existing = HashMap::from([
            (k("team-a", "tcr-pull"), copy("creds/tcr-src", "h")),
            (
                k("team-b", "tcr-pull"),
                ExistingSecret {
                    managed: false,
                    ..copy("creds/tcr-src", "h")
                },
            ),
        ]);
        let namespaces: HashMap<String, NamespaceInfo> = ["team-a", "team-b"]
            .iter()
            .map(|n| (n.to_string(), ns(n, true)))
            .collect();
        let pod =
            |name: &str, ns: &str, controlled: bool, secrets: &[&str], created: i64, img: &str| {
                PodInfo {
                    namespace: ns.into(),
                    name: name.into(),
                    uid: Some(name.into()),
                    controlled,
                    created: Some(created),
                    pull_secrets: secrets.iter().map(|s| s.to_string()).collect(),
                    stuck_images: vec![img.into()],
                }
            };
        let img = "demo.tencentcloudcr.com/x/app:1";
        let pods = [
            pod("ok-no-ref", "team-a", true, &[], 200, img),
            pod("ok-older", "team-a", true, &["tcr-pull"], 50, img),
            pod("bare", "team-a", false, &[], 200, img),
            pod("had-it", "team-a", true, &["tcr-pull"], 200, img),
            pod(
                "other-registry",
                "team-a",
                true,
                &[],
                200,
                "docker.io/library/nginx",
            ),
            pod("unowned-copy", "team-b", true, &[], 200, img),
        ];
        let got: Vec<String> = stuck_pods(&c, &pods, &namespaces, &existing)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(got, vec!["ok-no-ref", "ok-older"]);
        let off = Config {
            repair_stuck_pods: false,
            ..c
        };
        assert!(stuck_pods(&off, &pods, &namespaces, &existing).is_empty());
    }

    #[test]
    fn one_deliverer_per_secret_and_namespace() {
        let text = r#"
registries:
  - {name: a, match: ["a.io"], secret: s, source: {namespace: c, name: a}, namespaces: {include: ["team-*"]}}
  - {name: b, match: ["b.io"], secret: s, source: {namespace: c, name: b}}
  - {name: manual, match: ["m.io"], secret: m}
"#;
        let c = Config::parse(text, "t").unwrap();
        let name_of = |ns: &str, secret: &str| {
            deliverer(&c, &ns_named(ns), secret).map(|(_, r)| r.name.clone())
        };
        // the first in-scope entry wins; scope decides, not just the name
        assert_eq!(name_of("team-x", "s").as_deref(), Some("a"));
        assert_eq!(name_of("other", "s").as_deref(), Some("b"));
        // no source: nobody delivers it
        assert_eq!(name_of("team-x", "m"), None);
        // the plan uses the same answer
        let s = HashMap::from([
            (r("c", "a"), valid(TYPE_DOCKERCONFIGJSON, "a.io")),
            (r("c", "b"), valid(TYPE_DOCKERCONFIGJSON, "b.io")),
        ]);
        let p = plan(
            &c,
            &[ns_named("team-x"), ns_named("other")],
            &HashMap::new(),
            &s,
        );
        for ((ns, secret), &i) in &p.desired {
            assert_eq!(
                deliverer(&c, &ns_named(ns), secret).map(|(w, _)| w),
                Some(i)
            );
        }
        assert_eq!(p.desired.len(), 2);
    }

    fn ns_named(name: &str) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sa_patch_appends_or_adds_whole_list() {
        use serde_json::json;
        let p = SaPatch {
            namespace: "n".into(),
            service_account: "default".into(),
            secret: "s".into(),
            list_absent: false,
            resource_version: Some("5".into()),
        };
        let mut sa =
            json!({"metadata": {"resourceVersion": "5"}, "imagePullSecrets": [{"name": "keep"}]});
        json_patch::patch(&mut sa, &sa_patch(&p)).unwrap();
        assert_eq!(
            sa["imagePullSecrets"],
            json!([{"name": "keep"}, {"name": "s"}])
        );
        let absent = SaPatch {
            list_absent: true,
            ..p.clone()
        };
        let mut sa = json!({"metadata": {"resourceVersion": "5"}});
        json_patch::patch(&mut sa, &sa_patch(&absent)).unwrap();
        assert_eq!(sa["imagePullSecrets"], json!([{"name": "s"}]));
        // a changed object fails the test instead of being clobbered
        let mut sa =
            json!({"metadata": {"resourceVersion": "6"}, "imagePullSecrets": [{"name": "new"}]});
        assert!(json_patch::patch(&mut sa, &sa_patch(&absent)).is_err());
    }

    #[test]
    fn copies_carry_label_source_and_hash() {
        let s = k8s_openapi::api::core::v1::Secret {
            type_: Some(TYPE_DOCKERCONFIGJSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".into(),
                ByteString(br#"{"auths":{"r.io":{"auth":"dTpw"}}}"#.to_vec()),
            )])),
            ..Default::default()
        };
        let v = crate::sync::source::validate(&s).unwrap();
        let c = build_copy("n", "copy", &r("c", "src"), &v);
        assert!(crate::ownership::is_ours(&c.metadata));
        let a = c.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[SOURCE_ANNOTATION], "c/src");
        assert_eq!(a[VERSION_ANNOTATION], v.hash);
        assert_eq!((c.type_.clone(), c.data.clone()), (s.type_, s.data));
        // the cache's summary of a fresh copy needs no update
        let (_, e) = crate::sync::cache::secret_info(&c).unwrap();
        assert_eq!(e.content_hash, v.hash);
    }

    #[test]
    fn a_credential_provider_is_delivered_like_a_secret_and_waits_while_pending() {
        let c = Config::parse(
            r#"
registries:
  - name: ecr
    match: ["1.dkr.ecr.eu-west-1.amazonaws.com"]
    secret: ecr-pull
    source: {credentialProvider: {command: /p, image: 1.dkr.ecr.eu-west-1.amazonaws.com/x}}
  - name: ecr-shadow
    match: ["2.dkr.ecr.eu-west-1.amazonaws.com"]
    secret: ecr-pull
    source: {credentialProvider: {command: /p, image: 2.dkr.ecr.eu-west-1.amazonaws.com/x}}
"#,
            "t.yaml",
        )
        .unwrap();
        let src = c.registries[0].source.clone().unwrap();
        let shadow = c.registries[1].source.clone().unwrap();
        let nss = [ns("a", false), ns("b", false)];
        // Not answered yet: nothing written, the existing copy is neither updated nor
        // deleted, and no problem is reported (the refresher reports plugin failures).
        let existing =
            HashMap::from([(k("a", "ecr-pull"), copy("credential-provider:ecr", "old"))]);
        let pending = HashMap::from([
            (src.clone(), SourceState::Pending),
            (shadow.clone(), SourceState::Pending),
        ]);
        let p = plan(&c, &nss, &existing, &pending);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(p.desired.len(), 2);
        assert!(
            p.problems
                .iter()
                .all(|x| matches!(x, Problem::Clash { .. })),
            "{:?}",
            p.problems
        );
        // Answered: created where missing, updated where the content differs, under the
        // provider's annotation; the second entry wanting the same name clashes and loses.
        let v = valid(TYPE_DOCKERCONFIGJSON, "1.dkr.ecr.eu-west-1.amazonaws.com");
        let sources = HashMap::from([(src.clone(), v.clone()), (shadow, v.clone())]);
        let p = plan(&c, &nss, &existing, &sources);
        assert_eq!(
            p.actions,
            vec![
                Action::Update {
                    namespace: "a".into(),
                    name: "ecr-pull".into(),
                    source: src.clone(),
                    registry: "ecr".into(),
                    resource_version: Some("7".into()),
                },
                Action::Create {
                    namespace: "b".into(),
                    name: "ecr-pull".into(),
                    source: src.clone(),
                    registry: "ecr".into(),
                },
            ]
        );
        assert_eq!(
            p.problems
                .iter()
                .filter(|x| matches!(x, Problem::Clash { winner, .. } if winner == "ecr"))
                .count(),
            2
        );
        let SourceState::Valid(vs) = &v else {
            unreachable!()
        };
        let copy_ = build_copy("b", "ecr-pull", &src, vs);
        assert_eq!(
            copy_.metadata.annotations.unwrap()[SOURCE_ANNOTATION],
            "credential-provider:ecr"
        );
        // Up to date: nothing to do.
        let existing = HashMap::from([
            (
                k("a", "ecr-pull"),
                copy("credential-provider:ecr", &vs.hash),
            ),
            (
                k("b", "ecr-pull"),
                copy("credential-provider:ecr", &vs.hash),
            ),
        ]);
        assert!(plan(&c, &nss, &existing, &sources).actions.is_empty());
    }

    #[test]
    fn stuck_containers_are_read_from_status() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
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
}
