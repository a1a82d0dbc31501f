//! Pure: existing pods judged by `/validate`'s own code
//! ([`validate::judge_existing`]), grouped by namespace. The leader's audit loop and the
//! `audit` command both call [`audit`]; neither judges anything itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::admission::NamespaceFacts;
use crate::admission::pod::{PodDoc, PodShapeError};
use crate::admission::validate::{self, Rule};
use crate::config::{Config, PolicyMode};
use crate::image;

/// The part of a Pod the audit reads, kept per Pod by the leader's watch.
#[derive(Debug, Clone)]
pub(crate) struct AuditPod {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
    /// The images and pull policies, or why they could not be read.
    pub(crate) doc: Result<PodDoc<'static>, PodShapeError>,
}

impl AuditPod {
    /// `None` for pods the audit leaves out: those that finished (phase `Succeeded` or
    /// `Failed`: their containers never pull again) and those being deleted.
    pub(crate) fn from_pod(pod: &Pod) -> Option<AuditPod> {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let doc = serde_json::to_value(pod)
            .map_err(|e| PodShapeError(e.to_string()))
            .and_then(PodDoc::from_owned_value);
        Some(AuditPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone(),
            doc,
        })
    }
}

/// What a report says of one offence: `fail` for `enforce` and `audit` rules, `warn`
/// for `warn` rules (the wg-policy result values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Fail,
    Warn,
}

impl Verdict {
    fn of(mode: PolicyMode) -> Verdict {
        match mode {
            PolicyMode::Warn => Verdict::Warn,
            PolicyMode::Enforce | PolicyMode::Audit => Verdict::Fail,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Fail => "fail",
            Verdict::Warn => "warn",
        }
    }
}

/// One offence of one running pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub(crate) namespace: String,
    pub(crate) pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
    /// `container`, `init container`, `ephemeral container` or `image volume`.
    pub(crate) site: &'static str,
    pub(crate) container: String,
    pub(crate) image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) registry: Option<String>,
    #[serde(serialize_with = "rule_name")]
    pub(crate) rule: Rule,
    pub(crate) result: Verdict,
    pub(crate) mode: &'static str,
    /// `policy` or `policy.overrides[N]`: which rules of the config judged it.
    pub(crate) policy: String,
    pub(crate) message: String,
}

fn rule_name<S: serde::Serializer>(r: &Rule, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// A pod whose images could not be read (never seen from a real API server, but never
/// counted as passing either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Unreadable {
    pub(crate) pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
    pub(crate) message: String,
}

/// The verdict on one namespace's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct NamespaceAudit {
    /// Pods judged (running or pending, not being deleted).
    pub(crate) pods: usize,
    /// Pods with no offence.
    pub(crate) passed: usize,
    /// Offences, ordered by pod name, then as the pod lists its images.
    pub(crate) findings: Vec<Finding>,
    pub(crate) unreadable: Vec<Unreadable>,
}

impl NamespaceAudit {
    pub(crate) fn count(&self, v: Verdict) -> usize {
        self.findings.iter().filter(|f| f.result == v).count()
    }
}

/// Judges `pods` with `cfg`; namespaces where no rules apply (no `policy`, or exempt)
/// are left out, as `/validate` leaves them alone. `facts` gives a namespace's labels
/// (for `requireAlwaysPull: private` with selector-scoped entries).
pub(crate) fn audit<'a>(
    cfg: &Config,
    pods: impl IntoIterator<Item = &'a AuditPod>,
    facts: impl Fn(&str) -> NamespaceFacts,
) -> BTreeMap<String, NamespaceAudit> {
    let mut sorted: Vec<&AuditPod> = pods.into_iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut out: BTreeMap<String, NamespaceAudit> = BTreeMap::new();
    let Some(policy) = &cfg.policy else {
        return out;
    };
    // The pods come sorted by namespace: whether rules apply there, and its facts, are
    // found once per namespace (`None`: exempt).
    let mut known: Option<(String, Option<NamespaceFacts>)> = None;
    for p in sorted {
        if known.as_ref().is_none_or(|(ns, _)| *ns != p.namespace) {
            let f = policy
                .which_rules(&p.namespace)
                .map(|_| facts(&p.namespace));
            known = Some((p.namespace.clone(), f));
        }
        let Some(f) = known.as_ref().and_then(|(_, f)| f.as_ref()) else {
            continue;
        };
        let entry = out.entry(p.namespace.clone()).or_default();
        entry.pods += 1;
        let doc = match &p.doc {
            Ok(d) => d,
            Err(e) => {
                entry.unreadable.push(Unreadable {
                    pod: p.name.clone(),
                    uid: p.uid.clone(),
                    message: format!("the pod could not be read: {e}"),
                });
                continue;
            }
        };
        let Some(judged) = validate::judge_existing(doc, &p.namespace, cfg, f) else {
            continue;
        };
        if judged.offences.is_empty() {
            entry.passed += 1;
            continue;
        }
        let policy = match judged.override_index {
            None => "policy".to_string(),
            Some(i) => format!("policy.overrides[{i}]"),
        };
        for (site, o) in judged.offences {
            entry.findings.push(Finding {
                namespace: p.namespace.clone(),
                pod: p.name.clone(),
                uid: p.uid.clone(),
                site: site.kind.noun(),
                container: site.name.to_string(),
                image: site.image.to_string(),
                registry: image::parse(site.image).ok().map(|r| r.domain.to_string()),
                rule: o.rule,
                result: Verdict::of(judged.mode),
                mode: judged.mode.as_str(),
                policy: policy.clone(),
                message: o.long,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pod(ns: &str, name: &str, images: &[(&str, &str)]) -> AuditPod {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, (img, policy))| {
                serde_json::json!({"name": format!("c{i}"), "image": img, "imagePullPolicy": policy})
            })
            .collect();
        let v = serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
            "spec": {"containers": containers},
        });
        let p: Pod = serde_json::from_value(v).unwrap();
        AuditPod::from_pod(&p).unwrap()
    }

    fn cfg(text: &str) -> Config {
        Config::parse(text, "t.yaml").unwrap()
    }

    const CFG: &str = "registries: [{name: tcr, match: [tcr.example.com], secret: tcr-pull}]\n\
        policy:\n  mode: enforce\n  deny: [docker.io/evilcorp]\n  requireAlwaysPull: private\n  \
        exemptNamespaces: [kube-*]\n  overrides: [{namespaces: [lab-*], mode: warn}]\n";

    #[test]
    fn offending_pods_are_found_per_container_with_the_rule_and_the_validate_message() {
        let c = cfg(CFG);
        let pods = [
            pod("team-a", "web", &[("nginx:1.27", "IfNotPresent")]),
            pod(
                "team-a",
                "bad",
                &[
                    ("evilcorp/miner:1", "IfNotPresent"),
                    ("tcr.example.com/app:1", "IfNotPresent"),
                ],
            ),
            pod("lab-1", "bad", &[("evilcorp/miner", "Always")]),
            pod("kube-system", "bad", &[("evilcorp/miner", "Always")]),
        ];
        let got = audit(&c, &pods, |_| NamespaceFacts::default());
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["lab-1", "team-a"],
            "exempt namespaces are left out"
        );
        let a = &got["team-a"];
        assert_eq!((a.pods, a.passed), (2, 1));
        let rules: Vec<_> = a
            .findings
            .iter()
            .map(|f| (f.container.as_str(), f.rule, f.result))
            .collect();
        assert_eq!(
            rules,
            [
                ("c0", Rule::Deny, Verdict::Fail),
                ("c1", Rule::RequireAlwaysPull, Verdict::Fail)
            ]
        );
        assert_eq!(
            a.findings[0].message,
            "container \"c0\" image \"evilcorp/miner:1\" (registry docker.io) is denied by policy.deny pattern \"docker.io/evilcorp\""
        );
        assert_eq!(a.findings[0].registry.as_deref(), Some("docker.io"));
        assert_eq!(a.findings[0].policy, "policy");
        let lab = &got["lab-1"];
        assert_eq!(lab.findings[0].result, Verdict::Warn);
        assert_eq!(lab.findings[0].policy, "policy.overrides[0]");
        assert_eq!(lab.count(Verdict::Warn), 1);
    }

    #[test]
    fn the_verdict_is_the_validate_verdict_on_create() {
        // Whatever /validate says of a CREATE of the pod, the audit says of the pod.
        let c = cfg(CFG);
        let p = pod(
            "team-a",
            "x",
            &[("evilcorp/a", "Always"), ("tcr.example.com/b", "Never")],
        );
        let review = serde_json::json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a", "operation": "CREATE",
            "object": {"spec": {"containers": [
                {"name": "c0", "image": "evilcorp/a", "imagePullPolicy": "Always"},
                {"name": "c1", "image": "tcr.example.com/b", "imagePullPolicy": "Never"}]}},
        })
        .to_string();
        let req: crate::admission::AdmissionRequest = serde_json::from_str(&review).unwrap();
        let (_, offences, _) = validate::offences(&req, &c, &NamespaceFacts::default());
        let got = audit(&c, [&p], |_| NamespaceFacts::default());
        let messages: Vec<_> = got["team-a"]
            .findings
            .iter()
            .map(|f| f.message.clone())
            .collect();
        let want: Vec<_> = offences.into_iter().map(|o| o.long).collect();
        assert_eq!(messages, want);
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn no_policy_means_no_namespace_is_judged_and_finished_pods_are_left_out() {
        let c = cfg("registries: []\n");
        let pods = [pod("a", "x", &[("evilcorp/a", "Always")])];
        assert!(audit(&c, &pods, |_| NamespaceFacts::default()).is_empty());
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "done", "namespace": "a"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Succeeded"},
        }))
        .unwrap();
        assert!(AuditPod::from_pod(&p).is_none());
        p.status = None;
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(AuditPod::from_pod(&p).is_none());
    }

    #[test]
    fn namespace_labels_decide_private_images_as_at_admission() {
        let c = cfg(
            "registries: [{name: r, match: [r.example.com], secret: s, namespaces: {selector: {matchLabels: {tier: prod}}}}]\n\
             policy: {mode: enforce, requireAlwaysPull: private}\n",
        );
        let pods = [pod("a", "x", &[("r.example.com/app", "IfNotPresent")])];
        let labels = |v: &str| NamespaceFacts {
            labels: Some([("tier".to_string(), v.to_string())].into()),
            secrets: None,
        };
        assert_eq!(audit(&c, &pods, |_| labels("prod"))["a"].findings.len(), 1);
        assert_eq!(audit(&c, &pods, |_| labels("dev"))["a"].passed, 1);
    }
}
