//! The server config as the chart renders it from values, so CI checks exactly what a
//! `helm install -f values.yaml` would configure.
//!
//! The chart's `psi.config` helper (`charts/pullsecret-injector/templates/_helpers.tpl`)
//! writes `registries` (default: an empty list), `namespaces` (default: an empty map),
//! `alwaysPullImages`, `injectOnlyIfPresent`, `repairStuckPods`, and `policy` only when
//! it is non-empty, all copied verbatim; and, only when `audit.enabled`, `audit` with
//! `enabled` and `maxResultsPerReport` (not `installCRDs`, which is the chart's own). Values are Helm's: the chart's own
//! `values.yaml` (embedded here) with each `--values` file merged over it in order —
//! maps merge key by key, anything else replaces, and `null` deletes the key, as Helm's
//! coalescing does.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::config::Config;

/// The chart's defaults, as `helm install` starts from them.
const CHART_VALUES: &str = include_str!("../../charts/pullsecret-injector/values.yaml");

/// The keys of values the config is made of, in the order the chart renders them.
const CONFIG_KEYS: [&str; 6] = [
    "registries",
    "namespaces",
    "alwaysPullImages",
    "injectOnlyIfPresent",
    "repairStuckPods",
    "policy",
];

fn read_values(name: &str, text: &str) -> Result<Value> {
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| anyhow::anyhow!("{name}: not valid YAML: {}", e.without_snippet()))?;
    match v {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(v),
        _ => bail!("{name}: chart values must be a map"),
    }
}

/// Helm's coalescing of a user's values over the defaults.
fn merge(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (_, Value::Null) => {
                base.remove(k);
            }
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Go templates' truthiness, which `{{ if .Values.policy }}` applies.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The config text the chart would render from these values files.
pub(crate) fn render(files: &[(String, String)]) -> Result<String> {
    let Value::Object(mut values) = read_values("chart values.yaml", CHART_VALUES)? else {
        unreachable!("read_values returns a map");
    };
    for (name, text) in files {
        if let Value::Object(over) = read_values(name, text)? {
            merge(&mut values, &over);
        }
    }
    let mut cfg = Map::new();
    for key in CONFIG_KEYS {
        let v = values.get(key).cloned().unwrap_or(Value::Null);
        let v = match (key, v) {
            // `| default list` / `| default dict`: an empty or missing value becomes one.
            ("registries", v) if !truthy(&v) => Value::Array(Vec::new()),
            ("namespaces", v) if !truthy(&v) => Value::Object(Map::new()),
            ("policy", v) if !truthy(&v) => continue,
            (_, v) => v,
        };
        cfg.insert(key.into(), v);
    }
    if let Some(a) = values.get("audit").filter(|a| truthy(&a["enabled"])) {
        let mut audit = Map::new();
        audit.insert("enabled".into(), Value::Bool(true));
        if let Some(m) = a.get("maxResultsPerReport").filter(|m| !m.is_null()) {
            audit.insert("maxResultsPerReport".into(), m.clone());
        }
        cfg.insert("audit".into(), Value::Object(audit));
    }
    serde_saphyr::to_string(&Value::Object(cfg)).context("writing the rendered config")
}

/// Loads the config from chart values files. Errors name the values file(s): positions in
/// the rendered text would mean nothing to the reader, and the field path is in the reason.
pub(crate) fn load(paths: &[std::path::PathBuf]) -> Result<Config> {
    let mut files = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {name}"))?;
        files.push((name, text));
    }
    let text = render(&files)?;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    Config::parse(&text, "values").map_err(|e| {
        anyhow::anyhow!(
            "{} (config rendered from chart values): {}",
            names.join(", "),
            e.reason
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_values_merge_over_the_chart_defaults_like_helm() {
        let text = render(&[(
            "v.yaml".into(),
            "registries:\n  - {name: a, match: [a.io], secret: s}\nnamespaces: null\npolicy: {mode: warn}\n"
                .into(),
        )])
        .unwrap();
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            v["registries"].as_array().unwrap().len(),
            1,
            "lists replace"
        );
        assert_eq!(
            v["namespaces"],
            serde_json::json!({}),
            "null deletes, then defaults"
        );
        assert_eq!(v["policy"]["mode"], "warn");
        assert_eq!(v["alwaysPullImages"], "none", "chart default kept");
        let defaults: Value = serde_saphyr::from_str(&render(&[]).unwrap()).unwrap();
        assert!(
            defaults.get("policy").is_none(),
            "empty policy is not rendered"
        );
        assert_eq!(defaults["registries"][0]["name"], "tcr");
    }

    #[test]
    fn the_audit_block_is_rendered_only_when_enabled_without_the_charts_own_keys() {
        let defaults: Value = serde_saphyr::from_str(&render(&[]).unwrap()).unwrap();
        assert!(defaults.get("audit").is_none());
        let text = render(&[(
            "v.yaml".into(),
            "audit: {enabled: true, maxResultsPerReport: 7}
"
            .into(),
        )])
        .unwrap();
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            v["audit"],
            serde_json::json!({"enabled": true, "maxResultsPerReport": 7})
        );
        Config::parse(&text, "t").unwrap();
    }
}
