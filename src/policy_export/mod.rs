//! `export-policies`: the config compiled into in-tree admission policies — a
//! MutatingAdmissionPolicy for what `/mutate` does and ValidatingAdmissionPolicies for
//! `/validate` and for the warnings both give — so a cluster can run injection and the
//! registry rules with no webhook on the Pod-create path.
//!
//! The CEL reproduces the webhook's decision, not an approximation of it: `sites` the
//! image sites and `image::parse` (error messages included), `inject` the patch,
//! `rules` the policy's judgement and messages. `tests/e2e_policy_export.rs` creates
//! each Pod of a corpus through the webhook and through these policies on real API
//! servers and compares the stored Pods, denials and warnings. What cannot be expressed
//! in a policy (copying secrets, `injectOnlyIfPresent`, repair) is reported in
//! [`Exported::notes`].

mod cel;
mod inject;
mod limits;
mod rules;
mod sites;

use k8s_openapi::api::admissionregistration::v1 as ar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::config::Config;

pub use limits::LimitError;

/// Names of the exported objects: `<prefix>-inject`, `<prefix>-inject-warnings`,
/// `<prefix>-policy`, `<prefix>-policy-override-<n>` (and `-warn` for each rule set's
/// warnings); each binding is named as its policy.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
    inject: String,
    inject_warnings: String,
}

impl Names {
    fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
            inject: format!("{prefix}-inject"),
            inject_warnings: format!("{prefix}-inject-warnings"),
        }
    }

    fn rules(&self, which: Option<usize>) -> String {
        match which {
            None => format!("{}-policy", self.prefix),
            Some(k) => format!("{}-policy-override-{k}", self.prefix),
        }
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                crate::ownership::labels()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }
}

/// The policies and bindings, in the order to apply them, and what they cannot do.
#[derive(Debug, Clone)]
pub struct Exported {
    pub objects: Vec<Value>,
    /// Config features the policies do not implement, one sentence each.
    pub notes: Vec<String>,
}

pub(crate) fn condition(name: &str, expression: String) -> ar::MatchCondition {
    ar::MatchCondition {
        name: name.to_string(),
        expression,
    }
}

pub(crate) fn variables(v: sites::Vars) -> Vec<ar::Variable> {
    v.into_iter()
        .map(|(name, expression)| ar::Variable { name, expression })
        .collect()
}

/// `warnings::shape` over the list `list` (each fitted to 120 characters, repeats
/// dropped), and the validations that raise them one warning each: a validation yields
/// at most one message, so the k-th warning is the k-th validation's, and the eleventh
/// counts the rest, as `shape` does.
pub(crate) fn shaped_warnings(list: &str) -> (String, Vec<ar::Validation>) {
    use crate::admission::warnings::{WARNING_MAX, WARNINGS_MAX};
    let shape = format!(
        "{list}.map(w, size(w) <= {WARNING_MAX} ? w : w.substring(0, {}) + '…').distinct()",
        WARNING_MAX - 1
    );
    let mut validations: Vec<ar::Validation> = (0..WARNINGS_MAX)
        .map(|k| ar::Validation {
            expression: format!("size(variables.shaped) <= {k}"),
            message_expression: Some(format!("variables.shaped[{k}]")),
            message: Some("pullsecret-injector warning".into()),
            ..Default::default()
        })
        .collect();
    validations.push(ar::Validation {
        expression: format!("size(variables.shaped) <= {WARNINGS_MAX}"),
        message_expression: Some(format!(
            "'... and ' + string(size(variables.shaped) - {WARNINGS_MAX}) + ' more warnings'"
        )),
        message: Some("pullsecret-injector warnings".into()),
        ..Default::default()
    });
    (shape, validations)
}

fn to_value<T: serde::Serialize>(o: &T) -> Value {
    // k8s-openapi's Serialize never fails for these types (no maps with non-string keys).
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn mutating_binding(name: &str, names: &Names) -> ar::MutatingAdmissionPolicyBinding {
    ar::MutatingAdmissionPolicyBinding {
        metadata: names.meta(name),
        spec: Some(ar::MutatingAdmissionPolicyBindingSpec {
            policy_name: Some(name.to_string()),
            ..Default::default()
        }),
    }
}

fn validating_binding(
    name: &str,
    action: &str,
    names: &Names,
) -> ar::ValidatingAdmissionPolicyBinding {
    ar::ValidatingAdmissionPolicyBinding {
        metadata: names.meta(name),
        spec: ar::ValidatingAdmissionPolicyBindingSpec {
            policy_name: name.to_string(),
            validation_actions: vec![action.to_string()],
            ..Default::default()
        },
    }
}

/// Compiles `cfg` into policies and bindings named after `prefix`.
pub fn export(cfg: &Config, prefix: &str) -> Result<Exported, LimitError> {
    let names = Names::new(prefix);
    let mut objects = Vec::new();
    let map = inject::mutating_policy(cfg, &names);
    objects.push(to_value(&map));
    objects.push(to_value(&mutating_binding(&names.inject, &names)));
    let warn = inject::warning_policy(cfg, &names);
    objects.push(to_value(&warn));
    objects.push(to_value(&validating_binding(
        &names.inject_warnings,
        "Warn",
        &names,
    )));
    if let Some(policy) = &cfg.policy {
        let sets = std::iter::once(None).chain((0..policy.overrides.len()).map(Some));
        for which in sets {
            let r = rules::rule_policies(cfg, policy, which, &names);
            if let Some((vap, action)) = r.decision {
                let name = vap.metadata.name.clone().unwrap_or_default();
                objects.push(to_value(&vap));
                objects.push(to_value(&validating_binding(&name, action, &names)));
            }
            let name = r.warnings.metadata.name.clone().unwrap_or_default();
            objects.push(to_value(&r.warnings));
            objects.push(to_value(&validating_binding(&name, "Warn", &names)));
        }
    }
    limits::check(&objects)?;
    Ok(Exported {
        objects,
        notes: notes(cfg),
    })
}

/// What the config asks for that admission policies cannot do.
fn notes(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let synced: Vec<&str> = cfg
        .registries
        .iter()
        .filter(|r| r.source.is_some() || !r.service_accounts.is_empty())
        .map(|r| r.name.as_str())
        .collect();
    if !synced.is_empty() {
        out.push(format!(
            "registries {}: secret sync (`source`, `serviceAccounts`) and the admission-time \
             creation of missing copies are not done by admission policies; keep the \
             controller (`pullsecret-injector serve`) running for them, or copy the secrets yourself",
            synced.join(", ")
        ));
    }
    if cfg.inject_only_if_present {
        out.push(
            "injectOnlyIfPresent: a policy cannot see which secrets exist; the secrets are \
             injected as if present"
                .into(),
        );
    }
    if cfg.repair_stuck_pods {
        out.push(
            "repairStuckPods: repairing running pods is the controller's job, not a policy's"
                .into(),
        );
    }
    out
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// `--config FILE`, or `--values FILE…`: the config the chart renders from those
    /// values, so `helm install --set-file admissionPolicies.manifest=<(…)` exports
    /// exactly what the release configures.
    #[command(flatten)]
    pub source: crate::offline::ConfigSource,
    /// `yaml` (documents separated by `---`) or `json` (a `v1` `List`); both `kubectl
    /// apply -f` as they are.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Prefix of every object's name.
    #[arg(long, default_value = "pullsecret-injector")]
    pub name_prefix: String,
}

/// `export-policies`: the objects on stdout, what they cannot do on stderr. Exit 0, or
/// 1 when the config is invalid or beyond the policies' limits.
pub fn run(args: &ExportArgs) -> anyhow::Result<i32> {
    let cfg = match args.source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(1);
        }
    };
    if let Err(e) =
        crate::config::check_dns_subdomain(&format!("{}-policy-override-0-warn", args.name_prefix))
    {
        eprintln!("error: --name-prefix: {e}");
        return Ok(1);
    }
    let exported = match export(&cfg, &args.name_prefix) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}: {e}", args.source.describe());
            return Ok(1);
        }
    };
    for n in &exported.notes {
        eprintln!("note: {n}");
    }
    let text = match args.output {
        OutputFormat::Json => {
            let list =
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": exported.objects});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        OutputFormat::Yaml => {
            let mut out = String::new();
            for (i, o) in exported.objects.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_saphyr::to_string(o)?);
            }
            out
        }
    };
    print!("{text}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(text: &str) -> Exported {
        export(&Config::parse(text, "t.yaml").unwrap(), "psi").unwrap()
    }

    #[test]
    fn one_policy_pair_per_rule_set_and_a_binding_per_policy() {
        let x = exported(
            "registries: [{name: a, match: [ghcr.io/acme], secret: s}]\n\
             policy: {mode: audit, deny: [evil.io], overrides: [{namespaces: [\"p-*\"], mode: enforce}]}\n",
        );
        let names: Vec<String> = x
            .objects
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "MutatingAdmissionPolicy psi-inject",
                "MutatingAdmissionPolicyBinding psi-inject",
                "ValidatingAdmissionPolicy psi-inject-warnings",
                "ValidatingAdmissionPolicyBinding psi-inject-warnings",
                "ValidatingAdmissionPolicy psi-policy",
                "ValidatingAdmissionPolicyBinding psi-policy",
                "ValidatingAdmissionPolicy psi-policy-warn",
                "ValidatingAdmissionPolicyBinding psi-policy-warn",
                "ValidatingAdmissionPolicy psi-policy-override-0",
                "ValidatingAdmissionPolicyBinding psi-policy-override-0",
                "ValidatingAdmissionPolicy psi-policy-override-0-warn",
                "ValidatingAdmissionPolicyBinding psi-policy-override-0-warn",
            ]
        );
        let binding = |n: &str| {
            x.objects
                .iter()
                .find(|o| {
                    o["kind"] == "ValidatingAdmissionPolicyBinding" && o["metadata"]["name"] == n
                })
                .unwrap()["spec"]["validationActions"]
                .clone()
        };
        assert_eq!(binding("psi-policy"), serde_json::json!(["Audit"]));
        assert_eq!(
            binding("psi-policy-override-0"),
            serde_json::json!(["Deny"])
        );
        // The override is chosen before the global rules, as `Policy::rules_for` does.
        let global = &x.objects[4]["spec"]["matchConditions"];
        assert_eq!(
            global[0]["expression"],
            "(!(request.namespace.matches('^p-.*$')))"
        );
        assert!(x.notes.is_empty(), "{:?}", x.notes);
    }

    #[test]
    fn features_policies_cannot_have_are_noted() {
        let x = exported(
            "registries: [{name: a, match: [ghcr.io/acme], secret: s, serviceAccounts: [default]}]\n\
             injectOnlyIfPresent: true\nrepairStuckPods: true\n",
        );
        assert_eq!(x.notes.len(), 3, "{:?}", x.notes);
        assert!(x.notes[0].starts_with("registries a: secret sync"));
    }
}
