//! Offline preview over users' own manifest files: finds the pod template in each workload
//! kind, runs the same decision the webhook runs for the pods it would create, and applies
//! the resulting patch in place, so `mutate` shows exactly what `/mutate` would do.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::admission::mutate::{NamespaceFacts, plan_pod, skip_reason};
use crate::admission::pod::PodDoc;
use crate::admission::request::AdmissionRequest;
use crate::admission::validate::{self, Offence};
use crate::config::{Config, PolicyMode};

/// Where the pod template sits in each kind that creates pods.
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
        anyhow::anyhow!("parsing YAML manifest: {loc}{}", e.without_snippet())
    })?;
    Ok((
        Format::Yaml,
        docs.into_iter().filter(|d| !d.is_null()).collect(),
    ))
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
                out.push_str(&serde_saphyr::to_string(d).context("writing YAML")?);
            }
            out
        }
    })
}

fn namespace_of(doc: &Value, default_ns: &str) -> String {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(default_ns)
        .to_string()
}

fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

/// Visits every pod-creating document (descending into `List` items) with its template base.
fn for_each_workload(
    docs: &mut [Value],
    f: &mut dyn FnMut(&mut Value, &'static [&'static str]) -> Result<()>,
) -> Result<()> {
    for doc in docs {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind.ends_with("List") {
            if let Some(Value::Array(items)) = doc.get_mut("items") {
                for_each_workload(items, f)?;
            }
            continue;
        }
        if let Some(base) = template_path(&kind) {
            f(doc, base)?;
        }
    }
    Ok(())
}

fn template<'a>(doc: &'a Value, base: &[&str]) -> Option<&'a Value> {
    base.iter().try_fold(doc, |v, k| v.get(*k))
}

/// Mutates every pod template in `docs` as the webhook would mutate the pods it creates.
pub fn mutate_documents(docs: &mut [Value], cfg: &Config, default_ns: &str) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for_each_workload(docs, &mut |doc, base| {
        let ns = namespace_of(doc, default_ns);
        let Some(tpl) = template(doc, base) else {
            bail!(
                "{}: has no pod template at {}",
                describe(doc),
                base.join(".")
            );
        };
        let pod = PodDoc::from_value(tpl).map_err(|e| anyhow::anyhow!("{}: {e}", describe(doc)))?;
        if skip_reason(&pod, &ns, cfg).is_some() {
            return Ok(());
        }
        let plan = plan_pod(&pod, &ns, cfg, &NamespaceFacts::default());
        warnings.extend(
            plan.warnings
                .iter()
                .map(|w| format!("{}: {w}", describe(doc))),
        );
        let ops = plan.patch(base);
        json_patch::patch(doc, &ops)
            .with_context(|| format!("{}: applying patch", describe(doc)))?;
        Ok(())
    })?;
    Ok(warnings)
}

/// A policy breach found offline, with the mode that would apply in its namespace.
#[derive(Debug, Clone)]
pub struct Breach {
    pub object: String,
    pub mode: PolicyMode,
    pub offence: Offence,
}

/// Judges every pod template as `/validate` would judge the pods, after the mutation the
/// webhook would apply first (so `requireAlwaysPull` sees the final pull policies).
pub fn verify_documents(docs: &mut [Value], cfg: &Config, default_ns: &str) -> Result<Vec<Breach>> {
    mutate_documents(docs, cfg, default_ns)?;
    let mut breaches = Vec::new();
    for_each_workload(docs, &mut |doc, base| {
        let ns = namespace_of(doc, default_ns);
        let tpl = template(doc, base).cloned().unwrap_or(Value::Null);
        let review = serde_json::to_string(&json!({
            "uid": "offline",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": "CREATE",
            "object": tpl,
        }))?;
        let req: AdmissionRequest = serde_json::from_str(&review)?;
        let (mode, offences, _) = validate::offences(&req, cfg, &NamespaceFacts::default());
        if let Some(mode) = mode {
            breaches.extend(offences.into_iter().map(|offence| Breach {
                object: describe(doc),
                mode,
                offence,
            }));
        }
        Ok(())
    })?;
    Ok(breaches)
}
