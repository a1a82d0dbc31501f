//! `/validate` as ValidatingAdmissionPolicies: one pair per rule set (the global rules
//! and each override), selected by namespace as `Policy::rules_for` selects: the first
//! override whose globs hold the namespace, else the global rules; exempt namespaces
//! none. Of each pair, one policy carries the decision (`enforce` → `Deny`, `audit` →
//! `Audit` with the webhook's audit annotations) and one the warnings (`warn` mode's
//! offences, and the notes every mode gives), since a binding has one set of actions.

use k8s_openapi::api::admissionregistration::v1 as ar;

use super::cel::{self, any_glob, lit};
use super::inject::{self, missing_secret_warnings};
use super::sites::{self, Which, describe, pattern_test};
use super::{Names, condition, shaped_warnings, variables};
use crate::config::{Config, Policy, PolicyMode, PullScope, Rules};
use crate::matcher::Matcher;

/// One rule set's policies, and the mode its bindings act in.
pub(crate) struct RulePolicies {
    pub(crate) decision: Option<(ar::ValidatingAdmissionPolicy, &'static str)>,
    pub(crate) warnings: ar::ValidatingAdmissionPolicy,
}

/// Creates, updates and ephemeral-container updates of pods (what `/validate` judges).
fn constraints() -> ar::MatchResources {
    ar::MatchResources {
        resource_rules: Some(vec![
            inject::rule(&["CREATE"], &["pods"]),
            inject::rule(&["UPDATE"], &["pods", "pods/ephemeralcontainers"]),
        ]),
        ..Default::default()
    }
}

/// Namespace conditions selecting rule set `which` (`None` = the global rules).
fn selection(policy: &Policy, which: Option<usize>) -> Vec<ar::MatchCondition> {
    let ns = "request.namespace";
    let mut out = Vec::new();
    if !policy.exempt_namespaces.is_empty() {
        out.push(condition(
            "namespace-not-exempt",
            format!("!{}", any_glob(ns, &policy.exempt_namespaces)),
        ));
    }
    let earlier = which.unwrap_or(policy.overrides.len());
    let mut terms: Vec<String> = policy.overrides[..earlier]
        .iter()
        .map(|(globs, _)| format!("!{}", any_glob(ns, globs)))
        .collect();
    if let Some(k) = which {
        terms.push(any_glob(ns, &policy.overrides[k].0));
    }
    if !terms.is_empty() {
        out.push(condition("rule-set-selected", cel::all(terms)));
    }
    out
}

/// The first pattern of `m` matching site `i`'s image, as a CEL string (`''` for none).
fn first_match(m: &Matcher<()>) -> String {
    let mut expr = "''".to_string();
    for p in m.patterns().iter().rev() {
        expr = format!("({} ? {} : {expr})", pattern_test(p, "i"), lit(p.as_str()));
    }
    expr
}

fn any_match(m: &Matcher<()>) -> String {
    cel::any(m.patterns().iter().map(|p| pattern_test(p, "i")))
}

/// `judge_site` for every site: the offences' full and short messages.
fn offence_vars(rules: &Rules, v: &mut sites::Vars) {
    v.push((
        "denied".into(),
        format!(
            "variables.sites.transformList(i, s, variables.err[i] != '' ? '' : {})",
            first_match(&rules.deny)
        ),
    ));
    let allowed = match &rules.allow {
        None => "true".to_string(),
        Some(a) => any_match(a),
    };
    v.push((
        "allowed".into(),
        format!("variables.sites.transformList(i, s, variables.err[i] != '' || {allowed})"),
    ));
    let needs = match rules.require_always_pull {
        PullScope::None => "false",
        PullScope::All => "true",
        PullScope::Private => "size(variables.matched[i]) > 0",
    };
    let scope = match rules.require_always_pull {
        PullScope::All => "all",
        _ => "private",
    };
    v.push((
        "unpulled".into(),
        format!("variables.sites.transformList(i, s, variables.err[i] == '' && ({needs}) && s.pp != 'Always')"),
    ));
    let who = describe("s");
    let quoted = cel::quote("s.image");
    let bare = cel::escape("s.image");
    let registry = cel::escape("variables.domain[i]");
    let long = format!(
        "variables.sites.transformList(i, s, [\
           variables.err[i] != '' ? {who} + ' image ' + {quoted} + ' is not a valid image reference: ' + {why} : '', \
           variables.denied[i] != '' ? {who} + ' image ' + {quoted} + ' (registry ' + {registry} + ') is denied by policy.deny pattern ' + {pat} : '', \
           !variables.allowed[i] && variables.denied[i] == '' ? {who} + ' image ' + {quoted} + ' (registry ' + {registry} + ') is not in policy.allow' : '', \
           variables.unpulled[i] ? {who} + ' image ' + {quoted} + ' (registry ' + {registry} + ') must have ' + s.field + ' Always (policy.requireAlwaysPull: {scope}), has ' + {pp} : ''\
         ].filter(x, x != '')).flatten()",
        why = cel::bound("variables.err[i]"),
        pat = cel::quote("variables.denied[i]"),
        pp = cel::quote("s.pp"),
    );
    let short = format!(
        "variables.sites.transformList(i, s, [\
           variables.err[i] != '' ? {who} + ': invalid image ' + {quoted} : '', \
           variables.denied[i] != '' ? {who} + ': ' + {bare} + ' denied by policy (' + variables.denied[i] + ')' : '', \
           !variables.allowed[i] && variables.denied[i] == '' ? {who} + ': ' + {bare} + ' not in policy.allow' : '', \
           variables.unpulled[i] ? {who} + ': ' + {bare} + ' must use ' + s.field + ' Always' : ''\
         ].filter(x, x != '')).flatten()"
    );
    v.push(("offences".into(), long));
    v.push(("short".into(), short));
    v.push((
        "capped".into(),
        "size(variables.offences) <= 10 ? variables.offences.join('; ') : \
         variables.offences.slice(0, 10).join('; ') + '; ... and ' + \
         string(size(variables.offences) - 10) + ' more offences'"
            .into(),
    ));
    // The API server drops a message over 5 KiB for the static one
    // (`MaxEvaluatedMessageExpressionSizeBytes`); the webhook's may reach 12 KiB, so a
    // longer one spells out fewer offences (three fit: each is at most ~1.2 KiB).
    v.push((
        "summary".into(),
        "size(bytes(variables.capped)) <= 5120 ? variables.capped : \
         variables.offences.slice(0, 3).join('; ') + '; ... and ' + \
         string(size(variables.offences) - 3) + ' more offences'"
            .into(),
    ));
}

fn base_vars(cfg: &Config, rules: &Rules) -> sites::Vars {
    let mut v = sites::prelude(cfg, Which::Validate);
    inject::entry_vars(cfg, &mut v);
    offence_vars(rules, &mut v);
    v
}

/// The policies of rule set `which` (`None` = global).
pub(crate) fn rule_policies(
    cfg: &Config,
    policy: &Policy,
    which: Option<usize>,
    names: &Names,
) -> RulePolicies {
    let rules = match which {
        None => &policy.global,
        Some(k) => &policy.overrides[k].1,
    };
    let conditions = selection(policy, which);
    let name = names.rules(which);
    let vars = base_vars(cfg, rules);

    let decision = match rules.mode {
        PolicyMode::Warn => None,
        PolicyMode::Enforce => Some((
            ar::ValidatingAdmissionPolicySpec {
                failure_policy: Some("Fail".into()),
                validations: Some(vec![ar::Validation {
                    expression: "size(variables.offences) == 0".into(),
                    message_expression: Some("variables.summary".into()),
                    message: Some("the pod breaks the registry policy".into()),
                    reason: Some("Forbidden".into()),
                }]),
                ..Default::default()
            },
            "Deny",
        )),
        PolicyMode::Audit => Some((
            ar::ValidatingAdmissionPolicySpec {
                failure_policy: Some("Ignore".into()),
                audit_annotations: Some(vec![
                    ar::AuditAnnotation {
                        key: "policy-offences".into(),
                        value_expression: "size(variables.offences) == 0 ? '' : variables.summary"
                            .into(),
                    },
                    ar::AuditAnnotation {
                        key: "policy-offence-count".into(),
                        value_expression:
                            "size(variables.offences) == 0 ? '' : string(size(variables.offences))"
                                .into(),
                    },
                ]),
                ..Default::default()
            },
            "Audit",
        )),
    }
    .map(|(spec, action)| {
        let spec = ar::ValidatingAdmissionPolicySpec {
            match_constraints: Some(constraints()),
            match_conditions: Some(conditions.clone()),
            variables: Some(variables(vars.clone())),
            ..spec
        };
        (
            ar::ValidatingAdmissionPolicy {
                metadata: names.meta(&name),
                spec: Some(spec),
                status: None,
            },
            action,
        )
    });

    let mut wv = vars;
    let offences = if rules.mode == PolicyMode::Warn {
        "variables.short"
    } else {
        "[]"
    };
    // `/mutate` gives the same notes when it does not skip the pod, and the API server
    // drops a webhook warning repeated word for word; a policy's warnings are prefixed
    // with its name, so they are given here only where the injection policy skips.
    let skipped = format!(
        "!{}",
        cel::all(
            inject::skip_conditions(cfg)
                .into_iter()
                .map(|c| c.expression)
        )
    );
    wv.push((
        "warnings".into(),
        format!(
            "({skipped} ? ({}) : []) + {offences}",
            missing_secret_warnings()
        ),
    ));
    let (shape, validations) = shaped_warnings("variables.warnings");
    wv.push(("shaped".into(), shape));
    // Outside `warn` mode its only warnings are the ephemeral-container notes: evaluated
    // on those updates alone.
    let mut conditions = conditions;
    if rules.mode != PolicyMode::Warn {
        conditions.push(condition(
            "ephemeral-update",
            format!("{} == 'ephemeralcontainers'", sites::SUBRESOURCE),
        ));
    }
    let warnings = ar::ValidatingAdmissionPolicy {
        metadata: names.meta(&format!("{name}-warn")),
        spec: Some(ar::ValidatingAdmissionPolicySpec {
            failure_policy: Some("Ignore".into()),
            match_constraints: Some(constraints()),
            match_conditions: Some(conditions),
            variables: Some(variables(wv)),
            validations: Some(validations),
            ..Default::default()
        }),
        status: None,
    };
    RulePolicies { decision, warnings }
}
