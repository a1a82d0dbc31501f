//! The mutating decision: which pull secrets a pod needs, which images must be pulled
//! `Always`, and the JSON patch that gets there. Pure: request + config + what is known
//! about the namespace in, verdict out.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use json_patch::PatchOperation;
use serde_json::Value;

use super::pod::{PodDoc, PolicyField, Site, SiteKind};
use super::request::{AdmissionRequest, Operation, PatchJson, Verdict, put};
use super::text;
use crate::config::{Config, EntryIds, PullScope};
use crate::image;

pub use super::pod::{INJECTED_ANNOTATION, MIRROR_ANNOTATION, OPT_OUT_ANNOTATION};

/// What the webhook knows about the pod's namespace beyond its name. Everything is
/// optional: without cluster access nothing is known, and decisions must still be sound.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFacts {
    pub labels: Option<BTreeMap<String, String>>,
    /// Names of the pull secrets that exist in the namespace, when known.
    pub secrets: Option<HashSet<String>>,
}

/// The changes one pod (or pod template) needs. Secret and registry names are borrowed
/// from the `Config` the plan was made with (`'c`): a 30-site review used to clone about
/// forty of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlan<'c> {
    /// Secrets to add, in the order first needed, none already present.
    pub add_secrets: Vec<&'c str>,
    /// `(secret, registry entry name)` for each added secret, for logs and metrics.
    pub added_by: Vec<(&'c str, &'c str)>,
    /// Every secret the pod's images need from in-scope entries, in the order first
    /// needed: the added ones and those the pod already lists (from its manifest, or
    /// copied from its ServiceAccount by the ServiceAccount admission plugin). The webhook
    /// makes sure each deliverable one exists before the pod is admitted; a reference the
    /// pod brought itself is just as useless as one we added if the copy is missing.
    pub needed_secrets: Vec<&'c str>,
    /// Sites whose pull policy must become `Always`.
    pub force_always: Vec<PolicyField>,
    pub warnings: Vec<String>,
    /// The pod's own `spec.imagePullSecrets` entries, verbatim; the patch writes them
    /// followed by `add_secrets`.
    kept_secrets: Vec<Value>,
    /// The new value of the injected annotation, and whether an annotations map exists.
    annotation: Option<String>,
    has_annotations: bool,
    has_metadata: bool,
}

impl PodPlan<'_> {
    pub fn is_empty(&self) -> bool {
        self.add_secrets.is_empty() && self.force_always.is_empty()
    }

    /// RFC 6902 operations; `base` is the path of the pod object (empty for a Pod,
    /// `["spec","template"]` for a Deployment…). Each op either adds a whole field that
    /// may be absent or replaces one that exists, so the patch applies whatever the pod
    /// looked like, and re-running on the result yields nothing.
    ///
    /// Written straight to JSON text, the form the response carries: building the ops as
    /// `serde_json::Value`s first cost four allocations per injected secret and a
    /// `PointerBuf` per forced site, about half of a 30-site review's allocations.
    pub fn patch_json(&self, base: &[&str]) -> PatchJson {
        if self.is_empty() && self.annotation.is_none() {
            return PatchJson::default();
        }
        // Sized up front, each op's envelope and path counted generously, so that the
        // text is written without growing.
        let capacity = 64
            + 96 * (self.force_always.len() + 2)
            + self.add_secrets.iter().map(|s| s.len() + 12).sum::<usize>()
            + 64 * self.kept_secrets.len()
            + 2 * self.annotation.as_ref().map_or(0, String::len);
        let mut ops = OpsWriter::new(base, capacity);
        if !self.add_secrets.is_empty() {
            ops.add(&["spec", "imagePullSecrets"], |out| {
                out.push(b'[');
                for (i, kept) in self.kept_secrets.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    put(out, kept);
                }
                for (i, secret) in self.add_secrets.iter().enumerate() {
                    if i > 0 || !self.kept_secrets.is_empty() {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"name\":");
                    put(out, secret);
                    out.push(b'}');
                }
                out.push(b']');
            });
        }
        let mut index = itoa::Buffer::new();
        for field in &self.force_always {
            let index = index.format(field.index);
            let below = field.field_tokens();
            let mut path = ["spec", field.kind.list(), index, "", ""];
            path[3..3 + below.len()].copy_from_slice(below);
            ops.add(&path[..3 + below.len()], |out| {
                out.extend_from_slice(b"\"Always\"")
            });
        }
        if let Some(value) = &self.annotation {
            if self.has_annotations {
                ops.add(&["metadata", "annotations", INJECTED_ANNOTATION], |out| {
                    put(out, value)
                });
            } else {
                let inner = |out: &mut Vec<u8>| {
                    out.push(b'{');
                    put(out, INJECTED_ANNOTATION);
                    out.push(b':');
                    put(out, value);
                    out.push(b'}');
                };
                if self.has_metadata {
                    ops.add(&["metadata", "annotations"], inner);
                } else {
                    ops.add(&["metadata"], |out| {
                        out.extend_from_slice(b"{\"annotations\":");
                        inner(out);
                        out.push(b'}');
                    });
                }
            }
        }
        ops.finish()
    }

    /// The operations of [`PodPlan::patch_json`], for callers that apply them.
    pub fn patch(&self, base: &[&str]) -> Vec<PatchOperation> {
        self.patch_json(base).ops()
    }
}

/// Appends RFC 6902 `add` operations to a JSON array, every path under `base`.
struct OpsWriter<'b> {
    base: &'b [&'b str],
    out: Vec<u8>,
    /// The pointer being built, reused across operations.
    pointer: String,
}

impl<'b> OpsWriter<'b> {
    fn new(base: &'b [&'b str], capacity: usize) -> Self {
        OpsWriter {
            base,
            out: Vec::with_capacity(capacity),
            pointer: String::with_capacity(96),
        }
    }

    /// `{"op":"add","path":<base + rest>,"value":<what write_value writes>}`; the
    /// pointer's tokens escaped as RFC 6901 says (`~` → `~0`, `/` → `~1`), then the
    /// pointer as a JSON string.
    fn add(&mut self, rest: &[&str], write_value: impl FnOnce(&mut Vec<u8>)) {
        self.pointer.clear();
        for token in self.base.iter().chain(rest) {
            self.pointer.push('/');
            for c in token.chars() {
                match c {
                    '~' => self.pointer.push_str("~0"),
                    '/' => self.pointer.push_str("~1"),
                    c => self.pointer.push(c),
                }
            }
        }
        if self.out.is_empty() {
            self.out.push(b'[');
        } else {
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"{\"op\":\"add\",\"path\":");
        put(&mut self.out, self.pointer.as_str());
        self.out.extend_from_slice(b",\"value\":");
        write_value(&mut self.out);
        self.out.push(b'}');
    }

    fn finish(mut self) -> PatchJson {
        if !self.out.is_empty() {
            self.out.push(b']');
        }
        PatchJson::from_json(self.out)
    }
}

/// Whether an image's pull policy must be forced, given the registries it matched.
fn wants_always(cfg: &Config, matched: &[usize]) -> bool {
    match cfg.always_pull {
        PullScope::All => true,
        PullScope::Private if !matched.is_empty() => true,
        _ => matched.iter().any(|&i| cfg.registries[i].always_pull),
    }
}

fn invalid_image_warning(site: &Site, err: &image::ImageError) -> String {
    // Bounded before `warnings::shape` shortens it: the image may be megabytes.
    format!(
        "{} image {} is not a valid image reference ({}); no pull secret injected",
        site.describe(),
        text::quote(site.image),
        text::clip(&err.to_string(), text::FIELD_MAX)
    )
}

/// The in-scope registry entries of one image; records a warning for an unparseable
/// image and whether its pull policy must be forced to `Always`.
fn visit_site(
    plan: &mut PodPlan<'_>,
    site: &Site,
    ns: &str,
    cfg: &Config,
    facts: &NamespaceFacts,
) -> EntryIds {
    let matched = match image::parse(site.image) {
        Ok(img) => cfg.entries_for(&img, ns, facts.labels.as_ref()),
        Err(e) => {
            plan.warnings.push(invalid_image_warning(site, &e));
            EntryIds::new()
        }
    };
    if wants_always(cfg, &matched) && site.pull_policy != Some("Always") {
        plan.force_always.push(site.policy_field());
    }
    matched
}

/// Plans the changes for a pod being created (or a template that will create pods).
pub fn plan_pod<'c>(
    pod: &PodDoc,
    ns: &str,
    cfg: &'c Config,
    facts: &NamespaceFacts,
) -> PodPlan<'c> {
    let mut plan = PodPlan {
        has_annotations: pod.has_annotations(),
        has_metadata: pod.has_metadata(),
        ..Default::default()
    };
    let existing = pod.pull_secret_names();
    let mut wanted: Vec<(&'c str, &'c str)> = Vec::new();
    for site in pod.sites() {
        let matched = visit_site(&mut plan, &site, ns, cfg, facts);
        for &i in &matched {
            let r = &cfg.registries[i];
            let secret = r.secret.as_str();
            if !plan.needed_secrets.contains(&secret) {
                plan.needed_secrets.push(secret);
            }
            if wanted.iter().any(|(s, _)| *s == secret) || existing.contains(&secret) {
                continue;
            }
            let missing = facts
                .secrets
                .as_ref()
                .is_some_and(|s| !s.contains(&r.secret));
            if cfg.inject_only_if_present && missing && r.source.is_none() {
                plan.warnings.push(format!(
                    "imagePullSecret {:?} (registry {}) does not exist in namespace {ns}; not injected",
                    r.secret, r.name
                ));
                continue;
            }
            wanted.push((secret, r.name.as_str()));
        }
    }
    if !wanted.is_empty() {
        plan.kept_secrets = pod.pull_secrets().to_vec();
        let mut recorded: Vec<&str> = pod
            .annotation(INJECTED_ANNOTATION)
            .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        for &(s, _) in &wanted {
            if !recorded.contains(&s) {
                recorded.push(s);
            }
        }
        plan.annotation = Some(recorded.join(","));
        plan.add_secrets = wanted.iter().map(|&(s, _)| s).collect();
        plan.added_by = wanted;
    }
    plan
}

/// Why a pod was left alone, for logs.
pub fn skip_reason(pod: &PodDoc, ns: &str, cfg: &Config) -> Option<&'static str> {
    if cfg.is_namespace_excluded(ns) {
        Some("namespace excluded")
    } else if pod.annotation(OPT_OUT_ANNOTATION) == Some("false") {
        Some("opted out by annotation")
    } else if pod.annotation(MIRROR_ANNOTATION).is_some() {
        Some("mirror pod")
    } else {
        None
    }
}

/// The `/mutate` decision. Never denies: a mutator that denies turns its own bugs into
/// outages; enforcement is the validating endpoint's job.
pub fn mutate<'c>(
    req: &AdmissionRequest,
    cfg: &'c Config,
    facts: &NamespaceFacts,
) -> (Verdict, Option<PodPlan<'c>>) {
    let mut verdict = Verdict::allow();
    if !req.is_core_pod() {
        return (verdict, None);
    }
    let pod = match req.pod() {
        None => return (verdict, None),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            verdict
                .warnings
                .push(format!("pullsecret-injector could not read the pod: {e}"));
            return (verdict, None);
        }
    };
    let ns = req.namespace();
    if skip_reason(&pod, &ns, cfg).is_some() {
        return (verdict, None);
    }
    let plan = match (req.operation, req.sub_resource()) {
        (Operation::Create, "") => plan_pod(&pod, &ns, cfg, facts),
        (Operation::Update, "ephemeralcontainers") => {
            plan_ephemeral(&pod, req.old_pod().as_deref(), &ns, cfg, facts)
        }
        _ => return (verdict, None),
    };
    verdict.patch = plan.patch_json(&[]);
    verdict.warnings.extend(plan.warnings.iter().cloned());
    if !plan.add_secrets.is_empty() {
        verdict
            .audit_annotations
            .insert("injected-secrets".into(), plan.add_secrets.join(","));
    }
    if !plan.force_always.is_empty() {
        // `ephemeralContainers/12,` is 24 bytes.
        let mut sites = String::with_capacity(24 * plan.force_always.len());
        for field in &plan.force_always {
            if !sites.is_empty() {
                sites.push(',');
            }
            // Writing to a String cannot fail.
            let _ = write!(sites, "{field}");
        }
        verdict
            .audit_annotations
            .insert("forced-always-pull".into(), sites);
    }
    (verdict, Some(plan))
}

/// Sites of ephemeral containers added by this update (the API server rejects changes to
/// existing ones, so only new ones may be touched).
pub fn new_ephemeral_sites<'a>(pod: &'a PodDoc, old: Option<&PodDoc>) -> Vec<Site<'a>> {
    let before: HashSet<&str> = old
        .map(|o| o.ephemeral_names().collect())
        .unwrap_or_default();
    let mut sites = Vec::new();
    pod.sites_of(SiteKind::EphemeralContainer, &mut sites);
    sites.retain(|s| !before.contains(s.name));
    sites
}

/// Warnings for new ephemeral containers whose registry needs a secret the pod lacks: it
/// cannot be added after creation, so the debug container's pull would fail.
pub fn missing_secret_warnings(
    pod: &PodDoc,
    sites: &[Site],
    ns: &str,
    cfg: &Config,
    facts: &NamespaceFacts,
) -> Vec<String> {
    let have = pod.pull_secret_names();
    let mut out = Vec::new();
    for site in sites {
        let Ok(img) = image::parse(site.image) else {
            continue;
        };
        for i in cfg.entries_for(&img, ns, facts.labels.as_ref()) {
            let r = &cfg.registries[i];
            if !have.contains(&r.secret.as_str()) {
                out.push(format!(
                    "{}: pod lacks imagePullSecret {:?} (registry {}); its pull may fail",
                    site.describe(),
                    r.secret,
                    r.name
                ));
            }
        }
    }
    out
}

fn plan_ephemeral<'c>(
    pod: &PodDoc,
    old: Option<&PodDoc>,
    ns: &str,
    cfg: &'c Config,
    facts: &NamespaceFacts,
) -> PodPlan<'c> {
    let sites = new_ephemeral_sites(pod, old);
    let mut plan = PodPlan::default();
    for site in &sites {
        visit_site(&mut plan, site, ns, cfg, facts);
    }
    plan.warnings
        .extend(missing_secret_warnings(pod, &sites, ns, cfg, facts));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `patch_json` writes, byte for byte, what building the operations as
    /// `json_patch` values and serialising them wrote (the builder it replaced, kept
    /// here as the oracle), over every shape of plan: own secrets kept or not, names
    /// that need escaping, each kind of forced site, the three annotation cases, and
    /// base paths whose tokens need RFC 6901 escaping.
    #[test]
    fn patch_text_matches_the_operations_it_replaced() {
        use json_patch::AddOperation;
        use json_patch::jsonptr::PointerBuf;
        use serde_json::json;

        fn oracle(plan: &PodPlan<'_>, base: &[&str]) -> Vec<PatchOperation> {
            let add = |path, value| PatchOperation::Add(AddOperation { path, value });
            let ptr =
                |rest: &[&str]| PointerBuf::from_tokens(base.iter().chain(rest.iter()).copied());
            let mut ops = Vec::new();
            if !plan.add_secrets.is_empty() {
                let merged = plan
                    .kept_secrets
                    .iter()
                    .cloned()
                    .chain(plan.add_secrets.iter().map(|s| json!({ "name": s })));
                ops.push(add(
                    ptr(&["spec", "imagePullSecrets"]),
                    Value::Array(merged.collect()),
                ));
            }
            for field in &plan.force_always {
                let index = field.index.to_string();
                let path = PointerBuf::from_tokens(
                    base.iter()
                        .copied()
                        .chain(["spec", field.kind.list(), index.as_str()])
                        .chain(field.field_tokens().iter().copied()),
                );
                ops.push(add(path, json!("Always")));
            }
            if let Some(value) = &plan.annotation {
                if plan.has_annotations {
                    ops.push(add(
                        ptr(&["metadata", "annotations", INJECTED_ANNOTATION]),
                        json!(value),
                    ));
                } else if plan.has_metadata {
                    ops.push(add(
                        ptr(&["metadata", "annotations"]),
                        json!({ INJECTED_ANNOTATION: value }),
                    ));
                } else {
                    ops.push(add(
                        ptr(&["metadata"]),
                        json!({ "annotations": { INJECTED_ANNOTATION: value } }),
                    ));
                }
            }
            ops
        }

        let kept = [
            vec![],
            vec![json!({"name": "own"})],
            vec![
                json!({"name": "a\"b", "x": [1, null, {"\u{1}": "\u{2028}"}]}),
                json!({}),
            ],
        ];
        let added = [
            vec![],
            vec!["tcr-pull"],
            vec!["q\"uo\\te", "ünï", "ctl\u{7}"],
        ];
        let forced = [
            vec![],
            vec![PolicyField {
                kind: SiteKind::Container,
                index: 0,
            }],
            vec![
                PolicyField {
                    kind: SiteKind::InitContainer,
                    index: 12,
                },
                PolicyField {
                    kind: SiteKind::EphemeralContainer,
                    index: 3,
                },
                PolicyField {
                    kind: SiteKind::ImageVolume,
                    index: 1,
                },
            ],
        ];
        let bases: [&[&str]; 3] = [&[], &["spec", "template"], &["a~b", "c/d", "\"e\""]];
        let mut checked = 0;
        for kept in &kept {
            for add_secrets in &added {
                for force_always in &forced {
                    for annotation in [None, Some("tcr-pull"), Some("x\ny,\"z\"")] {
                        for (has_annotations, has_metadata) in
                            [(true, true), (false, true), (false, false)]
                        {
                            let plan = PodPlan {
                                add_secrets: add_secrets.clone(),
                                force_always: force_always.clone(),
                                kept_secrets: kept.clone(),
                                annotation: annotation.map(str::to_string),
                                has_annotations,
                                has_metadata,
                                ..Default::default()
                            };
                            for base in bases {
                                let want = oracle(&plan, base);
                                let got = plan.patch_json(base);
                                let want_text = if want.is_empty() {
                                    String::new()
                                } else {
                                    serde_json::to_string(&want).expect("serialises")
                                };
                                assert_eq!(
                                    String::from_utf8(got.as_bytes().to_vec()).expect("UTF-8"),
                                    want_text,
                                    "{plan:?} under {base:?}"
                                );
                                assert_eq!(plan.patch(base), want);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 3 * 3 * 3 * 3);
    }

    const CFG: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
  - name: ghcr
    match: [ghcr.io/acme]
    secret: ghcr-pull
    namespaces: {include: ["team-*"]}
"#;

    /// The plan borrows its names from the config, so the config outlives every test.
    fn plan(pod: &str, ns: &str) -> PodPlan<'static> {
        static CONFIG: std::sync::LazyLock<Config> =
            std::sync::LazyLock::new(|| Config::parse(CFG, "t.yaml").unwrap());
        let pod = PodDoc::parse(pod).unwrap();
        plan_pod(&pod, ns, &CONFIG, &NamespaceFacts::default())
    }

    /// A secret the pod already lists (from its ServiceAccount, say) is not added again
    /// but is still needed: the webhook must make sure its copy exists.
    #[test]
    fn needed_secrets_include_the_ones_the_pod_already_lists() {
        let p = plan(
            r#"{"spec": {"imagePullSecrets": [{"name": "tcr-pull"}], "containers": [
                {"name": "a", "image": "x.tencentcloudcr.com/a:1"},
                {"name": "b", "image": "ghcr.io/acme/b:1"},
                {"name": "c", "image": "y.tencentcloudcr.com/c:1"}]}}"#,
            "team-a",
        );
        assert_eq!(p.add_secrets, ["ghcr-pull"]);
        assert_eq!(p.needed_secrets, ["tcr-pull", "ghcr-pull"]);
    }

    /// Out-of-scope entries are neither added nor needed.
    #[test]
    fn needed_secrets_follow_the_entries_scope() {
        let p = plan(
            r#"{"spec": {"containers": [{"name": "b", "image": "ghcr.io/acme/b:1"}]}}"#,
            "other",
        );
        assert!(p.add_secrets.is_empty());
        assert!(p.needed_secrets.is_empty());
    }
}
