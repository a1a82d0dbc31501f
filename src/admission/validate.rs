//! The validating decision: registry rules judged on the final pod, after every mutating
//! webhook has run. It shares the image parser and the matcher with `/mutate`; only the
//! output differs (deny, warn or audit instead of patch).

use std::collections::HashSet;

use super::mutate::{NamespaceFacts, entries_for, missing_secret_warnings, new_ephemeral_sites};
use super::pod::{PodDoc, Site, SiteKind};
use super::request::{AdmissionRequest, Operation, Verdict};
use crate::config::{Config, PolicyMode, PullScope, Rules};
use crate::image;

/// One breach of the rules, with a full message (deny, audit) and a short one (warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offence {
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
    let who = site.describe();
    let img = match image::parse(site.image) {
        Ok(i) => i,
        Err(e) => {
            out.push(Offence {
                long: format!(
                    "{who} image {:?} is not a valid image reference: {e}",
                    site.image
                ),
                short: format!("{who}: invalid image {:?}", site.image),
            });
            return;
        }
    };
    let registry = &img.domain;
    if let Some((p, _)) = rules.deny.first_match(&img) {
        out.push(Offence {
            long: format!(
                "{who} image {:?} (registry {registry}) is denied by policy.deny pattern {:?}",
                site.image,
                p.as_str()
            ),
            short: format!("{who}: {} denied by policy ({})", site.image, p.as_str()),
        });
    } else if let Some(allow) = &rules.allow
        && allow.first_match(&img).is_none()
    {
        out.push(Offence {
            long: format!(
                "{who} image {:?} (registry {registry}) is not in policy.allow",
                site.image
            ),
            short: format!("{who}: {} not in policy.allow", site.image),
        });
    }
    let needs_always = match rules.require_always_pull {
        PullScope::None => false,
        PullScope::All => true,
        PullScope::Private => !entries_for(cfg, &img, ns, facts).is_empty(),
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
            long: format!(
                "{who} image {:?} (registry {registry}) must have {field} Always (policy.requireAlwaysPull: {scope}), has {:?}",
                site.image, policy
            ),
            short: format!("{who}: {} must use {field} Always", site.image),
        });
    }
}

/// All image strings of a pod (every container kind and image volume).
fn image_set(pod: Option<&PodDoc>) -> HashSet<&str> {
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
            let o = Offence {
                long: format!("the pod could not be read: {e}"),
                short: format!("unreadable pod: {e}"),
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
            let before = image_set(old.as_ref());
            let mut s = pod.sites();
            s.retain(|x| !before.contains(x.image));
            s
        }
        (Operation::Update, "ephemeralcontainers") => {
            let s = new_ephemeral_sites(&pod, old.as_ref());
            notes = missing_secret_warnings(&pod, &s, &ns, cfg, facts);
            s
        }
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for site in &sites {
        judge_site(site, rules, cfg, &ns, facts, &mut out);
    }
    (Some(rules.mode), out, notes)
}

/// Returns the verdict and the number of offences found (whatever the mode did with them).
pub fn validate(req: &AdmissionRequest, cfg: &Config, facts: &NamespaceFacts) -> (Verdict, usize) {
    let (mode, offences, notes) = offences(req, cfg, facts);
    let mut v = Verdict::allow();
    let mut warnings: Vec<String> = notes;
    match mode {
        Some(PolicyMode::Enforce) if !offences.is_empty() => {
            let msg: Vec<&str> = offences.iter().map(|o| o.long.as_str()).collect();
            v.allowed = false;
            v.denial = Some(msg.join("; "));
        }
        Some(PolicyMode::Warn) => warnings.extend(offences.iter().map(|o| o.short.clone())),
        Some(PolicyMode::Audit) if !offences.is_empty() => {
            let msg: Vec<&str> = offences.iter().map(|o| o.long.as_str()).collect();
            v.audit_annotations
                .insert("policy-offences".into(), msg.join("; "));
            v.audit_annotations
                .insert("policy-offence-count".into(), offences.len().to_string());
        }
        _ => {}
    }
    v.warnings = warnings;
    (v, offences.len())
}
