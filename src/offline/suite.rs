//! `test`: suites in the manner of `kyverno-test.yaml` and gator's `Suite`. A suite file
//! (`pullsecret-injector-test.yaml`) names a config (or chart values), resources (files or
//! directories), namespace labels, and the expected result per object. Objects are judged
//! by the same evaluation `mutate` and `verify` run, so a suite cannot pass on a decision
//! the webhook would not make.
//!
//! ```yaml
//! name: tenant registries
//! config: ../../config.yaml        # or values: [values.yaml]; paths are relative to this file
//! resources: [workloads.yaml]      # files or directories
//! namespace: default               # for objects that name none
//! namespaces:                      # labels per namespace, for `selector` scopes
//!   team-a: {registry-access: tcr}
//! tests:
//!   - object: Deployment/web       # KIND/NAME (add `namespace:` when names repeat)
//!     patched: true
//!     imagePullSecrets: [mine, tcr-pull]   # the whole list after mutation
//!     imagePullPolicy: {web: Always}       # per container, after defaulting and mutation
//!     result: allowed              # allowed | denied | warned | audited | skipped | notChecked | partial | noPods
//!                                  # (skipped: not mutated, and no offence either)
//!     messages: ["not in policy.allow"]    # substrings of offence or warning messages
//!     patch: [...]                 # the exact JSON patch, relative to the object
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::inputs;
use super::namespaces::Facts;
use crate::config::Config;
use crate::manifest::{Evaluator, ObjectReport, Outcome, Source};

/// The file name `test DIR` looks for.
pub(crate) const SUITE_FILE: [&str; 2] = [
    "pullsecret-injector-test.yaml",
    "pullsecret-injector-test.yml",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuiteFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    resources: Vec<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    namespaces: Option<Value>,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    #[serde(default)]
    name: Option<String>,
    object: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    patched: Option<bool>,
    #[serde(default)]
    image_pull_secrets: Option<Vec<String>>,
    #[serde(default)]
    image_pull_policy: Option<BTreeMap<String, String>>,
    #[serde(default)]
    patch: Option<Value>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    messages: Vec<String>,
}

const RESULTS: [&str; 8] = [
    "allowed",
    "denied",
    "warned",
    "audited",
    "skipped",
    "notChecked",
    "partial",
    "noPods",
];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CaseResult {
    pub name: String,
    pub object: String,
    pub passed: bool,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SuiteResult {
    pub name: String,
    pub file: String,
    /// The suite could not be run at all (unreadable, bad config…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub cases: Vec<CaseResult>,
}

impl SuiteResult {
    pub(crate) fn passed(&self) -> bool {
        self.error.is_none() && self.cases.iter().all(|c| c.passed)
    }
}

/// Suite files named by `paths`: a file is a suite; a directory is searched recursively
/// for [`SUITE_FILE`].
pub(crate) fn find(paths: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        let meta = std::fs::metadata(path).with_context(|| format!("reading {p}"))?;
        if meta.is_dir() {
            let before = out.len();
            walk(path, &mut out)?;
            if out.len() == before {
                bail!("{p}: no suite file ({}) found", SUITE_FILE[0]);
            }
        } else {
            out.push(path.to_path_buf());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if e.file_type()?.is_dir() {
            walk(&e.path(), out)?;
        } else if SUITE_FILE.contains(&name.as_str()) {
            out.push(e.path());
        }
    }
    Ok(())
}

/// Runs one suite; problems running it are reported in the result, not returned, so one
/// broken suite does not hide the others' results.
pub(crate) fn run(path: &Path) -> SuiteResult {
    let file = path.display().to_string();
    let mut result = SuiteResult {
        name: file.clone(),
        file: file.clone(),
        error: None,
        cases: Vec::new(),
    };
    if let Err(e) = run_inner(path, &mut result) {
        result.error = Some(format!("{e:#}"));
    }
    result
}

fn run_inner(path: &Path, result: &mut SuiteResult) -> Result<()> {
    let file = &result.file;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
    let suite: SuiteFile = serde_saphyr::from_str(&text).map_err(|e| {
        let loc = e
            .location()
            .map(|l| format!("{}:{}: ", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{file}:{loc}{}", e.without_snippet())
    })?;
    if let Some(n) = &suite.name {
        result.name = n.clone();
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &str| dir.join(p);
    let cfg = match (&suite.config, suite.values.is_empty()) {
        (Some(c), true) => Config::load(&rel(c)).map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, false) => {
            let v: Vec<PathBuf> = suite.values.iter().map(|v| rel(v)).collect();
            super::values::load(&v)?
        }
        _ => bail!("{file}: give exactly one of `config` or `values`"),
    };
    if suite.resources.is_empty() {
        bail!("{file}: `resources` lists no file or directory");
    }
    let names: Vec<String> = suite
        .resources
        .iter()
        .map(|r| rel(r).display().to_string())
        .collect();
    let mut sources = Vec::new();
    for input in inputs::collect(&names)? {
        sources.push(Source::parse(&input.name, &input.text)?);
    }
    let mut facts = Facts::default();
    if let Some(ns) = &suite.namespaces {
        facts.read_file(&format!("{file}: namespaces"), std::slice::from_ref(ns))?;
    }
    for s in &sources {
        facts.add_objects(&s.docs);
    }
    let default_ns = suite.namespace.as_deref().unwrap_or("default");
    let eval = Evaluator {
        cfg: &cfg,
        default_ns,
        facts: &facts,
        judge: cfg.policy.is_some(),
    };
    let reports = eval.run(&mut sources)?;
    for (i, case) in suite.tests.iter().enumerate() {
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("{} #{}", case.object, i + 1));
        let failures = check_case(case, &reports);
        result.cases.push(CaseResult {
            name,
            object: case.object.clone(),
            passed: failures.is_empty(),
            failures,
        });
    }
    Ok(())
}

fn result_of(r: &ObjectReport) -> &'static str {
    match &r.outcome {
        Outcome::Checked => r.admission(),
        Outcome::NoPods => "noPods",
        Outcome::Partial(_) => "partial",
        Outcome::NotChecked(_) => "notChecked",
        // Left alone by the mutation; what `/validate` says, once it finds something.
        Outcome::Skipped(_) if !r.offences.is_empty() => r.admission(),
        Outcome::Skipped(_) => "skipped",
    }
}

fn check_case(case: &Case, reports: &[ObjectReport]) -> Vec<String> {
    let found: Vec<&ObjectReport> = reports
        .iter()
        .filter(|r| r.id() == case.object)
        .filter(|r| case.namespace.as_ref().is_none_or(|n| &r.namespace == n))
        .collect();
    let r = match found.as_slice() {
        [] => return vec![format!("no object {} in the resources", case.object)],
        [r] => *r,
        _ => {
            return vec![format!(
                "{} matches {} objects; give `namespace`",
                case.object,
                found.len()
            )];
        }
    };
    let mut fail = Vec::new();
    let tpl = r.final_template.as_ref();
    if let Some(want) = case.patched {
        let got = !r.patch.is_empty();
        if got != want {
            fail.push(format!("patched: expected {want}, got {got}"));
        }
    }
    if let Some(want) = &case.image_pull_secrets {
        let got: Vec<String> = tpl
            .and_then(|t| t.pointer("/spec/imagePullSecrets"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if &got != want {
            fail.push(format!("imagePullSecrets: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &case.image_pull_policy {
        for (container, policy) in want {
            let got = tpl.and_then(|t| {
                ["initContainers", "containers", "ephemeralContainers"]
                    .iter()
                    .filter_map(|l| t["spec"][l].as_array())
                    .flatten()
                    .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
                    .and_then(|c| c.get("imagePullPolicy"))
                    .and_then(Value::as_str)
            });
            if got != Some(policy.as_str()) {
                fail.push(format!(
                    "imagePullPolicy of {container:?}: expected {policy}, got {}",
                    got.unwrap_or("no such container")
                ));
            }
        }
    }
    if let Some(want) = &case.patch {
        let got = serde_json::to_value(&r.patch).unwrap_or(Value::Null);
        if &got != want {
            fail.push(format!("patch: expected {want}, got {got}"));
        }
    }
    if let Some(want) = &case.result {
        let got = result_of(r);
        if !RESULTS.contains(&want.as_str()) {
            fail.push(format!(
                "result: {want:?} is not one of {}",
                RESULTS.join(", ")
            ));
        } else if got != want {
            let why = match &r.outcome {
                Outcome::Partial(w) | Outcome::NotChecked(w) | Outcome::Skipped(w) => {
                    format!(" ({w})")
                }
                _ => String::new(),
            };
            fail.push(format!("result: expected {want}, got {got}{why}"));
        }
    }
    for m in &case.messages {
        let hit = r.offences.iter().any(|o| o.message.contains(m.as_str()))
            || r.warnings.iter().any(|w| w.contains(m.as_str()));
        if !hit {
            let seen: Vec<&str> = r
                .offences
                .iter()
                .map(|o| o.message.as_str())
                .chain(r.warnings.iter().map(String::as_str))
                .collect();
            fail.push(format!("no message contains {m:?} (messages: {seen:?})"));
        }
    }
    fail
}
