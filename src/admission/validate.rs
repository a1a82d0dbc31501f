//! The validating decision: registry rules judged on the final pod, after every mutating
//! webhook has run. It shares the image parser and the matcher with `/mutate`; only the
//! output differs (deny, warn or audit instead of patch).

use std::collections::HashSet;

use super::mutate::{NamespaceFacts, missing_secret_warnings, new_ephemeral_sites};
use super::pod::{PodDoc, Site, SiteKind};
use super::request::{AdmissionRequest, Operation, Verdict};
use super::text;
use crate::config::{Config, PolicyMode, PullScope, Rules};
use crate::image;

/// Which rule an offence breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The object under review could not be read as a pod.
    UnreadablePod,
    InvalidImage,
    Deny,
    Allow,
    RequireAlwaysPull,
}

impl Rule {
    pub const ALL: [Rule; 5] = [
        Rule::UnreadablePod,
        Rule::InvalidImage,
        Rule::Deny,
        Rule::Allow,
        Rule::RequireAlwaysPull,
    ];

    /// The rule's name in reports and metrics: the config field it comes from.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UnreadablePod => "unreadablePod",
            Rule::InvalidImage => "invalidImage",
            Rule::Deny => "deny",
            Rule::Allow => "allow",
            Rule::RequireAlwaysPull => "requireAlwaysPull",
        }
    }
}

/// One breach of the rules, with a full message (deny, audit) and a short one (warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offence {
    pub rule: Rule,
    pub long: String,
    pub short: String,
}

fn judge_site(
    site: &Site,
    rules: &Rules,
    cfg: &Config,
    ns: &str,
    facts: &NamespaceFacts,
    out: &mut Vec<Offence>,
) {
    // Everything the tenant wrote is escaped and bounded (see `text`); the image is
    // quoted in long messages and bare in the short ones, as before.
    let who = site.describe();
    let quoted = text::quote(site.image);
    let bare = || text::escape(site.image, text::FIELD_MAX);
    let img = match image::parse(site.image) {
        Ok(i) => i,
        Err(e) => {
            // The parser's detail can quote the offending part of the image.
            let why = text::clip(&e.to_string(), text::FIELD_MAX);
            out.push(Offence {
                rule: Rule::InvalidImage,
                long: format!("{who} image {quoted} is not a valid image reference: {why}"),
                short: format!("{who}: invalid image {quoted}"),
            });
            return;
        }
    };
    let registry = text::escape(img.domain, text::FIELD_MAX);
    if let Some((p, _)) = rules.deny.first_match(&img) {
        let pattern = p.as_str();
        out.push(Offence {
            rule: Rule::Deny,
            long: format!(
                "{who} image {quoted} (registry {registry}) is denied by policy.deny pattern {}",
                text::quote(pattern)
            ),
            short: format!("{who}: {} denied by policy ({pattern})", bare()),
        });
    } else if let Some(allow) = &rules.allow
        && allow.first_match(&img).is_none()
    {
        out.push(Offence {
            rule: Rule::Allow,
            long: format!("{who} image {quoted} (registry {registry}) is not in policy.allow"),
            short: format!("{who}: {} not in policy.allow", bare()),
        });
    }
    let needs_always = match rules.require_always_pull {
        PullScope::None => false,
        PullScope::All => true,
        PullScope::Private => !cfg.entries_for(&img, ns, facts.labels.as_ref()).is_empty(),
    };
    let policy = site.pull_policy.unwrap_or("");
    if needs_always && policy != "Always" {
        let field = if site.kind == SiteKind::ImageVolume {
            "pullPolicy"
        } else {
            "imagePullPolicy"
        };
        let scope = if rules.require_always_pull == PullScope::All {
            "all"
        } else {
            "private"
        };
        out.push(Offence {
            rule: Rule::RequireAlwaysPull,
            long: format!(
                "{who} image {quoted} (registry {registry}) must have {field} Always (policy.requireAlwaysPull: {scope}), has {}",
                text::quote(policy)
            ),
            short: format!("{who}: {} must use {field} Always", bare()),
        });
    }
}

/// All image strings of a pod (every container kind and image volume).
fn image_set<'p>(pod: Option<&'p PodDoc<'_>>) -> HashSet<&'p str> {
    pod.map(|p| p.sites().into_iter().map(|s| s.image).collect())
        .unwrap_or_default()
}

/// Offences of the pod under review, and warnings that are never offences.
pub fn offences(
    req: &AdmissionRequest,
    cfg: &Config,
    facts: &NamespaceFacts,
) -> (Option<PolicyMode>, Vec<Offence>, Vec<String>) {
    let (Some(policy), true) = (&cfg.policy, req.is_core_pod()) else {
        return (None, Vec::new(), Vec::new());
    };
    let ns = req.namespace();
    let Some(rules) = policy.rules_for(&ns) else {
        return (None, Vec::new(), Vec::new());
    };
    let pod = match req.pod() {
        None => return (Some(rules.mode), Vec::new(), Vec::new()),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            // The parser's detail can quote the object.
            let why = text::clip(&e.to_string(), text::FIELD_MAX);
            let o = Offence {
                rule: Rule::UnreadablePod,
                long: format!("the pod could not be read: {why}"),
                short: format!("unreadable pod: {why}"),
            };
            return (Some(rules.mode), vec![o], Vec::new());
        }
    };
    let old = req.old_pod();
    let mut notes = Vec::new();
    let sites = match (req.operation, req.sub_resource()) {
        (Operation::Create, "") => pod.sites(),
        (Operation::Update, "") => {
            // Like AlwaysPullImages: only images new to this pod are judged, so an update
            // of labels on an old pod is never blocked by a policy introduced later.
            let before = image_set(old.as_deref());
            let mut s = pod.sites();
            s.retain(|x| !before.contains(x.image));
            s
        }
        (Operation::Update, "ephemeralcontainers") => {
            let s = new_ephemeral_sites(&pod, old.as_deref());
            notes = missing_secret_warnings(&pod, &s, &ns, cfg, facts);
            s
        }
        _ => Vec::new(),
    };
    let out = judge_sites(&sites, rules, cfg, &ns, facts)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    (Some(rules.mode), out, notes)
}

/// Each site's offences, in site order, tagged with the site's position in `sites`.
fn judge_sites(
    sites: &[Site],
    rules: &Rules,
    cfg: &Config,
    ns: &str,
    facts: &NamespaceFacts,
) -> Vec<(usize, Offence)> {
    let mut out = Vec::new();
    let mut one = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        judge_site(site, rules, cfg, ns, facts, &mut one);
        out.extend(one.drain(..).map(|o| (i, o)));
    }
    out
}

/// An existing pod as `/validate` judges it on CREATE: every site, the rules of its
/// namespace (overrides and exemptions included). The background audit's verdict.
#[derive(Debug, Clone)]
pub struct Judged<'p> {
    pub mode: PolicyMode,
    /// `None` for the global rules, `Some(i)` for `policy.overrides[i]`.
    pub override_index: Option<usize>,
    /// Each offence with the site it was found at.
    pub offences: Vec<(Site<'p>, Offence)>,
}

/// `None` when no rules apply in `ns` (no `policy`, or an exempt namespace).
pub fn judge_existing<'p>(
    pod: &'p PodDoc,
    ns: &str,
    cfg: &Config,
    facts: &NamespaceFacts,
) -> Option<Judged<'p>> {
    let (override_index, rules) = cfg.policy.as_ref()?.which_rules(ns)?;
    let sites = pod.sites();
    let found = judge_sites(&sites, rules, cfg, ns, facts);
    Some(Judged {
        mode: rules.mode,
        override_index,
        offences: found
            .into_iter()
            .map(|(i, o)| (sites[i].clone(), o))
            .collect(),
    })
}

/// The denial message or audit annotation: the first offences in full, the rest counted,
/// so a pod of thousands of containers cannot make a response of megabytes.
fn summary(offences: &[Offence]) -> String {
    text::join_capped(offences.iter().map(|o| o.long.as_str()))
}

/// Returns the verdict and the number of offences found (whatever the mode did with them).
pub fn validate(req: &AdmissionRequest, cfg: &Config, facts: &NamespaceFacts) -> (Verdict, usize) {
    let (mode, offences, notes) = offences(req, cfg, facts);
    let mut v = Verdict::allow();
    let mut warnings: Vec<String> = notes;
    match mode {
        Some(PolicyMode::Enforce) if !offences.is_empty() => {
            v.allowed = false;
            v.denial = Some(summary(&offences));
        }
        Some(PolicyMode::Warn) => warnings.extend(offences.iter().map(|o| o.short.clone())),
        Some(PolicyMode::Audit) if !offences.is_empty() => {
            v.audit_annotations
                .insert("policy-offences".into(), summary(&offences));
            v.audit_annotations
                .insert("policy-offence-count".into(), offences.len().to_string());
        }
        _ => {}
    }
    v.warnings = warnings;
    (v, offences.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest registry host the parser accepts: three 63-character labels and ours.
    fn long_host() -> String {
        format!("{}.tencentcloudcr.com", vec!["a".repeat(63); 3].join("."))
    }

    fn denial(containers: serde_json::Value) -> String {
        let host = long_host();
        let cfg = format!(
            "registries: [{{name: r, match: [{host}], secret: s}}]\n\
             policy: {{mode: enforce, allow: [{host}], deny: [{host}/evil], requireAlwaysPull: private}}\n"
        );
        let cfg = Config::parse(&cfg, "t.yaml").unwrap();
        let body = serde_json::json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns", "operation": "CREATE",
            "object": {"spec": {"containers": containers}},
        })
        .to_string();
        let req: AdmissionRequest = serde_json::from_str(&body).unwrap();
        let (v, _) = validate(&req, &cfg, &NamespaceFacts::default());
        v.denial.unwrap()
    }

    /// The README's bound holds for the longest offences there are: two per container
    /// (denied, and not pulled Always), every tenant string at its cap in 3-byte
    /// characters, the longest registry host the parser accepts.
    #[test]
    fn the_longest_denial_stays_under_12_kib() {
        let wide = "中".repeat(200);
        let host = long_host();
        let containers: Vec<_> = (0..40)
            .map(|i| {
                serde_json::json!({
                    "name": format!("{wide}{i}"),
                    "image": format!("{host}/evil/{}:1", "x".repeat(150)),
                    "imagePullPolicy": wide,
                })
            })
            .collect();
        let msg = denial(serde_json::Value::Array(containers));
        assert!(msg.len() <= 12 * 1024, "{} bytes: {msg}", msg.len());
        assert!(msg.contains("denied by policy.deny"), "{msg}");
        assert!(msg.contains("must have imagePullPolicy Always"), "{msg}");
        assert!(msg.ends_with("; ... and 70 more offences"), "{msg}");
    }
}
