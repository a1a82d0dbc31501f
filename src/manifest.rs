//! Offline preview over users' own manifest files: finds the pod template in each workload
//! kind, applies the API server's pull-policy defaulting, runs the same decision the
//! webhook runs for the pods it would create, and applies the resulting patch in place, so
//! `mutate` shows exactly what `/mutate` would do and `verify` judges what `/validate`
//! would see.

use anyhow::{Context, Result};
use json_patch::PatchOperation;
use serde::Serialize;
use serde_json::{Value, json};

use crate::admission::mutate::{plan_pod, skip_reason};
use crate::admission::pod::PodDoc;
use crate::admission::request::AdmissionRequest;
use crate::admission::validate;
use crate::config::Config;
use crate::image;
use crate::offline::defaulting::{self, Defaulted};
use crate::offline::namespaces::Facts;

/// Where the pod template sits in each kind that creates pods, and the API group that kind
/// must be in (a CRD may reuse a built-in kind's name: a Knative `Service`).
pub fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "PodTemplate" => &["template"],
        _ => return None,
    })
}

fn expected_groups(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" | "ReplicationController" | "PodTemplate" => &[""],
        // `extensions/v1beta1` is long gone from servers but still in old manifests.
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => &["apps", "extensions"],
        "Job" | "CronJob" => &["batch"],
        _ => &[],
    }
}

/// API groups served by Kubernetes itself: their kinds that are not workloads create no
/// pods. Anything else is a custom resource we do not understand (it may create pods).
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// Input format, kept for output so JSON in gives JSON out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// Reads one or more documents: a JSON object (possibly a `List`), or multi-document YAML.
pub fn read_documents(text: &str) -> Result<(Format, Vec<Value>)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).context("parsing JSON manifest")?;
        let docs = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        return Ok((Format::Json, docs));
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| {
        let loc = e
            .location()
            .map(|l| format!("line {}:{}: ", l.line(), l.column()))
            .unwrap_or_default();
        let msg = e.without_snippet().to_string();
        // The library's advice is for programmers (`set DuplicateKeyPolicy in Options`).
        let msg = msg.split(", set ").next().unwrap_or(&msg).to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        anyhow::anyhow!("parsing YAML manifest: {loc}{msg}")
    })?;
    Ok((
        Format::Yaml,
        docs.into_iter().filter(|d| !d.is_null()).collect(),
    ))
}

/// YAML as we write it: long strings stay on one line (the library folds them at 80
/// columns by default, which turns one changed line of a user's file into many).
fn yaml_options() -> serde_saphyr::SerializerOptions {
    let mut o = serde_saphyr::SerializerOptions::default();
    o.folded_wrap_chars = usize::MAX;
    o
}

pub fn write_documents(format: Format, docs: &[Value]) -> Result<String> {
    Ok(match format {
        Format::Json if docs.len() == 1 => serde_json::to_string_pretty(&docs[0])? + "\n",
        Format::Json => serde_json::to_string_pretty(docs)? + "\n",
        Format::Yaml => {
            let mut out = String::new();
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(
                    &serde_saphyr::to_string_with_options(d, yaml_options())
                        .context("writing YAML")?,
                );
            }
            out
        }
    })
}

/// Documents read from one input, kept together so output and diffs go per file.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub name: String,
    pub format: Format,
    pub docs: Vec<Value>,
}

impl Source {
    /// Parses one input; the error names the file once.
    pub(crate) fn parse(name: &str, text: &str) -> Result<Source> {
        let (format, docs) = read_documents(text).with_context(|| name.to_string())?;
        Ok(Source {
            name: name.into(),
            format,
            docs,
        })
    }
}

/// What became of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its pod template was judged.
    Checked,
    /// A built-in kind that creates no pods (Service, ConfigMap, Namespace…).
    NoPods,
    /// Has no pod template (a kustomize patch, say): skipped with a note.
    Partial(String),
    /// A kind we do not understand: its pods, if any, are not checked.
    NotChecked(String),
    /// Not mutated, as the webhook leaves its pods alone (excluded namespace, opt-out…);
    /// still judged by the policy, as `/validate` judges them.
    Skipped(String),
}

/// One policy offence, with what CI tools need to sort and link it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OffenceReport {
    /// `container`, `init container`, `ephemeral container` or `image volume`.
    pub site: &'static str,
    pub container: String,
    pub image: String,
    /// The image's registry; `None` when the reference does not parse.
    pub registry: Option<String>,
    /// `allow`, `deny`, `requireAlwaysPull` or `invalidImage`.
    pub rule: &'static str,
    pub mode: &'static str,
    pub message: String,
}

/// The result for one object (a `List`'s items each get their own).
#[derive(Debug, Clone)]
pub(crate) struct ObjectReport {
    pub source: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub outcome: Outcome,
    pub added_secrets: Vec<String>,
    /// Sites forced to `Always` (`containers/0`, …).
    pub forced_always: Vec<String>,
    /// The patch, relative to this object, that the mutation applied.
    pub patch: Vec<PatchOperation>,
    pub warnings: Vec<String>,
    /// The policy mode in this namespace; `None` without a policy or when exempt.
    pub mode: Option<&'static str>,
    pub offences: Vec<OffenceReport>,
    /// False when the namespace's labels were unknown, so `selector` scopes counted as
    /// satisfied.
    pub namespace_labels_known: bool,
    /// The pod template as the API server would store it (defaulted, mutated).
    pub final_template: Option<Value>,
}

impl ObjectReport {
    /// `Deployment/web`.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// What `/validate` would answer for its pods: `allowed`, `denied`, `warned` or
    /// `audited`.
    pub(crate) fn admission(&self) -> &'static str {
        match (self.mode, self.offences.is_empty()) {
            (_, true) | (None, _) => "allowed",
            (Some("enforce"), false) => "denied",
            (Some("warn"), false) => "warned",
            (Some(_), false) => "audited",
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn describe(doc: &Value) -> (String, String) {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    (kind.to_string(), name.to_string())
}

fn template<'a>(doc: &'a Value, base: &[&str]) -> Option<&'a Value> {
    base.iter().try_fold(doc, |v, k| v.get(*k))
}

fn template_mut<'a>(doc: &'a mut Value, base: &[&str]) -> Option<&'a mut Value> {
    base.iter().try_fold(doc, |v, k| v.get_mut(*k))
}

/// What the offline commands share: the config, the default namespace, what is known
/// about namespaces, and whether to judge the policy as well as mutate.
pub(crate) struct Evaluator<'a> {
    pub(crate) cfg: &'a Config,
    pub(crate) default_ns: &'a str,
    pub(crate) facts: &'a Facts,
    pub(crate) judge: bool,
}

impl Evaluator<'_> {
    /// Mutates every pod template in `sources` in place, as the webhook would mutate the
    /// pods they create, and reports on every object.
    pub(crate) fn run(&self, sources: &mut [Source]) -> Result<Vec<ObjectReport>> {
        let mut out = Vec::new();
        for s in sources.iter_mut() {
            for doc in s.docs.iter_mut() {
                self.visit(&s.name, doc, &mut out)?;
            }
        }
        Ok(out)
    }

    fn visit(&self, source: &str, doc: &mut Value, out: &mut Vec<ObjectReport>) -> Result<()> {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("List")
            && let Some(Value::Array(items)) = doc.get_mut("items")
        {
            for item in items {
                self.visit(source, item, out)?;
            }
            return Ok(());
        }
        out.push(self.object(source, doc)?);
        Ok(())
    }

    fn object(&self, source: &str, doc: &mut Value) -> Result<ObjectReport> {
        let (kind, name) = describe(doc);
        let namespace = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(self.default_ns)
            .to_string();
        let mut report = ObjectReport {
            source: source.into(),
            kind: kind.clone(),
            name,
            namespace: namespace.clone(),
            outcome: Outcome::Checked,
            added_secrets: Vec::new(),
            forced_always: Vec::new(),
            patch: Vec::new(),
            warnings: Vec::new(),
            mode: None,
            offences: Vec::new(),
            namespace_labels_known: self.facts.knows(&namespace),
            final_template: None,
        };
        let api_version = doc.get("apiVersion").and_then(Value::as_str);
        let group = api_version.map(group_of);
        let base = template_path(&kind)
            .filter(|_| group.is_none_or(|g| expected_groups(&kind).contains(&g)));
        let Some(base) = base else {
            report.outcome = match group {
                _ if kind.is_empty() => Outcome::NotChecked("the document has no kind".into()),
                Some(g) if !BUILTIN_GROUPS.contains(&g) => Outcome::NotChecked(format!(
                    "kind {} {kind} is not understood; pods it may create are not checked",
                    api_version.unwrap_or("")
                )),
                _ => Outcome::NoPods,
            };
            return Ok(report);
        };
        let id = report.id();
        let Some(tpl) = template(doc, base) else {
            report.outcome = Outcome::Partial(format!(
                "no pod template at {} (a partial document, such as a kustomize patch)",
                base.join(".")
            ));
            return Ok(report);
        };
        if tpl.get("spec").is_none() {
            let at = if base.is_empty() {
                "spec".to_string()
            } else {
                format!("{}.spec", base.join("."))
            };
            report.outcome = Outcome::Partial(format!(
                "no pod spec at {at} (a partial document, such as a kustomize patch)"
            ));
            return Ok(report);
        }
        let pod = PodDoc::from_value(tpl).map_err(|e| anyhow::anyhow!("{source}: {id}: {e}"))?;
        // Judge the pod the API server would pass to admission: pull policies defaulted.
        let mut defaulted = tpl.clone();
        let filled = defaulting::apply(&mut defaulted);
        let facts = self.facts.for_namespace(&namespace);
        // Left alone by `/mutate` (excluded namespace, opt-out, mirror pod), but still
        // judged: `/validate` does not skip these (only `policy.exemptNamespaces`).
        if let Some(why) = skip_reason(&pod, &namespace, self.cfg) {
            report.outcome = Outcome::Skipped(why.into());
        } else {
            let dpod = PodDoc::from_value(&defaulted)
                .map_err(|e| anyhow::anyhow!("{source}: {id}: {e}"))?;
            let plan = plan_pod(&dpod, &namespace, self.cfg, &facts);
            report.warnings = plan.warnings.clone();
            report.added_secrets = plan.add_secrets.iter().map(|s| s.to_string()).collect();
            report.forced_always = plan.force_always.iter().map(|f| f.to_string()).collect();
            // The same operations on the user's document (where the policy may be unset)
            // and on the defaulted pod: each is an `add`, so it applies either way.
            let ops = plan.patch(&[]);
            json_patch::patch(&mut defaulted, &ops)
                .with_context(|| format!("{source}: {id}: applying patch"))?;
            if let Some(target) = template_mut(doc, base) {
                json_patch::patch(target, &ops)
                    .with_context(|| format!("{source}: {id}: applying patch"))?;
            }
            report.patch = plan.patch(base);
        }
        if self.judge {
            self.judge_pod(&defaulted, &filled, &namespace, &facts, &mut report)?;
        }
        report.final_template = Some(defaulted);
        Ok(report)
    }

    /// Judges each image of the final pod as `/validate` would, one site at a time so
    /// each offence is known to belong to its container (the decision judges sites
    /// independently, so this is the same verdict).
    fn judge_pod(
        &self,
        pod: &Value,
        filled: &[Defaulted],
        namespace: &str,
        facts: &crate::admission::NamespaceFacts,
        report: &mut ObjectReport,
    ) -> Result<()> {
        let parsed = PodDoc::from_value(pod).map_err(|e| anyhow::anyhow!("{e}"))?;
        for site in parsed.sites() {
            let item = &pod["spec"][site.kind.list()][site.index];
            let single = json!({
                "metadata": pod.get("metadata").cloned().unwrap_or(json!({})),
                "spec": { site.kind.list(): [item] },
            });
            let review = serde_json::to_string(&json!({
                "uid": "offline",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "object": single,
            }))?;
            let req: AdmissionRequest = serde_json::from_str(&review)?;
            let (mode, offences, _) = validate::offences(&req, self.cfg, facts);
            let Some(mode) = mode else {
                return Ok(());
            };
            report.mode = Some(mode.as_str());
            let was_unset = filled
                .iter()
                .find(|d| d.kind == site.kind && d.index == site.index);
            for o in offences {
                let rule = o.rule.as_str();
                let mut message = o.long;
                // Say where the policy came from: the user wrote none, the API server
                // would fill it in.
                if let (Some(d), "requireAlwaysPull") = (was_unset, rule) {
                    let has = format!(", has {:?}", d.value);
                    if let Some(stripped) = message.strip_suffix(&has) {
                        message = format!("{stripped}, unset (defaults to {})", d.value);
                    }
                }
                report.offences.push(OffenceReport {
                    site: site.kind.noun(),
                    container: site.name.to_string(),
                    image: site.image.to_string(),
                    registry: image::parse(site.image).ok().map(|r| r.domain.to_string()),
                    rule,
                    mode: mode.as_str(),
                    message,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_with_builtin_kind_names_are_not_checked() {
        let cfg = Config::parse("registries: []\n", "c.yaml").unwrap();
        let facts = Facts::default();
        let e = Evaluator {
            cfg: &cfg,
            default_ns: "default",
            facts: &facts,
            judge: true,
        };
        let (_, docs) = read_documents(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: k}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\nspec: {template: {spec: {containers: []}}}\n",
        )
        .unwrap();
        let mut s = [Source {
            name: "m".into(),
            format: Format::Yaml,
            docs,
        }];
        let r = e.run(&mut s).unwrap();
        assert!(matches!(r[0].outcome, Outcome::NotChecked(_)));
        assert_eq!(r[1].outcome, Outcome::NoPods);
        assert!(matches!(r[2].outcome, Outcome::NotChecked(_)));
    }
}
