//! `/mutate` as a MutatingAdmissionPolicy: the pull secrets appended (existing entries
//! untouched), pull policies forced to `Always`, the injected annotation recorded — the
//! same patch `admission::mutate` returns — plus a ValidatingAdmissionPolicy in `Warn`
//! mode for the warnings `/mutate` gives (a mutating policy cannot warn).

use k8s_openapi::api::admissionregistration::v1 as ar;

use super::cel::{self, any_glob, lit};
use super::sites::{self, ANNOTATIONS, HAS_ANNOTATIONS, SUBRESOURCE, Vars, Which, describe};
use super::{Names, condition, shaped_warnings, variables};
use crate::admission::mutate::{INJECTED_ANNOTATION, MIRROR_ANNOTATION, OPT_OUT_ANNOTATION};
use crate::config::{Config, PullScope};

/// `skip_reason`: excluded namespaces, the opt-out annotation, mirror pods.
pub(crate) fn skip_conditions(cfg: &Config) -> Vec<ar::MatchCondition> {
    let mut out = Vec::new();
    if !cfg.exclude_namespaces.is_empty() {
        out.push(condition(
            "namespace-not-excluded",
            format!(
                "!{}",
                any_glob("request.namespace", &cfg.exclude_namespaces)
            ),
        ));
    }
    out.push(condition(
        "not-opted-out",
        format!(
            "!({HAS_ANNOTATIONS} && {k} in {ANNOTATIONS} && {ANNOTATIONS}[{k}] == 'false')",
            k = lit(OPT_OUT_ANNOTATION)
        ),
    ));
    out.push(condition(
        "not-a-mirror-pod",
        format!(
            "!({HAS_ANNOTATIONS} && {} in {ANNOTATIONS})",
            lit(MIRROR_ANNOTATION)
        ),
    ));
    out
}

/// Pod creates, and updates of the ephemeral containers (what `/mutate` patches).
pub(crate) fn constraints() -> ar::MatchResources {
    ar::MatchResources {
        resource_rules: Some(vec![
            rule(&["CREATE"], &["pods"]),
            rule(&["UPDATE"], &["pods/ephemeralcontainers"]),
        ]),
        ..Default::default()
    }
}

pub(crate) fn rule(ops: &[&str], resources: &[&str]) -> ar::NamedRuleWithOperations {
    let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect());
    ar::NamedRuleWithOperations {
        api_groups: v(&[""]),
        api_versions: v(&["v1"]),
        operations: v(ops),
        resources: v(resources),
        ..Default::default()
    }
}

/// The names of the pod's pull secrets, and each entry's secret and name by index
/// (the warnings of both endpoints name them).
pub(crate) fn entry_vars(cfg: &Config, v: &mut Vars) {
    v.push((
        "existing".into(),
        "has(object.spec.imagePullSecrets) ? \
         object.spec.imagePullSecrets.map(s, has(s.name) ? s.name : '') : []"
            .into(),
    ));
    v.push((
        "secrets".into(),
        cel::list(cfg.registries.iter().map(|r| r.secret.as_str())),
    ));
    v.push((
        "entryNames".into(),
        cel::list(cfg.registries.iter().map(|r| r.name.as_str())),
    ));
}

/// `missing_secret_warnings`: new ephemeral containers whose registry needs a secret the
/// pod lacks.
pub(crate) fn missing_secret_warnings() -> String {
    format!(
        "{SUBRESOURCE} != 'ephemeralcontainers' ? [] : \
         variables.sites.transformList(i, s, variables.err[i] == '', \
           variables.matched[i].filter(k, !(variables.secrets[k] in variables.existing)).map(k, \
             {} + ': pod lacks imagePullSecret \"' + variables.secrets[k] + '\" (registry ' + \
             variables.entryNames[k] + '); its pull may fail')).flatten()",
        describe("s")
    )
}

fn wants_always(cfg: &Config) -> String {
    match cfg.always_pull {
        PullScope::All => "true".into(),
        PullScope::Private => "size(variables.matched[i]) > 0".into(),
        PullScope::None => {
            let always: Vec<String> = cfg
                .registries
                .iter()
                .enumerate()
                .filter(|(_, r)| r.always_pull)
                .map(|(k, _)| k.to_string())
                .collect();
            if always.is_empty() {
                "false".into()
            } else {
                format!(
                    "variables.matched[i].exists(k, k in [{}])",
                    always.join(", ")
                )
            }
        }
    }
}

pub(crate) fn mutating_policy(cfg: &Config, names: &Names) -> ar::MutatingAdmissionPolicy {
    let mut v = sites::prelude(cfg, Which::Mutate);
    entry_vars(cfg, &mut v);
    v.push((
        "add".into(),
        "request.operation != 'CREATE' ? [] : \
         variables.matched.map(m, m.map(k, variables.secrets[k])).flatten().distinct()\
         .filter(n, !(n in variables.existing))"
            .into(),
    ));
    v.push((
        "force".into(),
        format!(
            "variables.sites.transformList(i, s, ({}) && s.pp != 'Always', \
             s.list == 'volumes' ? '/spec/volumes/' + s.i + '/image/pullPolicy' : \
             '/spec/' + s.list + '/' + s.i + '/imagePullPolicy')",
            wants_always(cfg)
        ),
    ));
    let k = lit(INJECTED_ANNOTATION);
    v.push((
        "recorded".into(),
        format!(
            "{HAS_ANNOTATIONS} && {k} in {ANNOTATIONS} ? \
             {ANNOTATIONS}[{k}].split(',').filter(x, x != '') : []"
        ),
    ));
    v.push((
        "injected".into(),
        "(variables.recorded + variables.add.filter(n, !(n in variables.recorded))).join(',')"
            .into(),
    ));
    let pointer = format!(
        "/metadata/annotations/{}",
        INJECTED_ANNOTATION.replace('~', "~0").replace('/', "~1")
    );
    let patch = format!(
        "(size(variables.add) == 0 ? [] : has(object.spec.imagePullSecrets) ? \
           variables.add.map(n, JSONPatch{{op: 'add', path: '/spec/imagePullSecrets/-', value: {{'name': n}}}}) : \
           [JSONPatch{{op: 'add', path: '/spec/imagePullSecrets', value: variables.add.map(n, {{'name': n}})}}]) + \
         variables.force.map(p, JSONPatch{{op: 'add', path: p, value: 'Always'}}) + \
         (size(variables.add) == 0 ? [] : {HAS_ANNOTATIONS} ? \
           [JSONPatch{{op: 'add', path: {ptr}, value: variables.injected}}] : \
           [JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{{k}: variables.injected}}}}])",
        ptr = lit(&pointer),
    );
    ar::MutatingAdmissionPolicy {
        metadata: names.meta(&names.inject),
        spec: Some(ar::MutatingAdmissionPolicySpec {
            failure_policy: Some("Ignore".into()),
            match_constraints: Some(constraints()),
            match_conditions: Some(skip_conditions(cfg)),
            variables: Some(variables(v)),
            mutations: Some(vec![ar::Mutation {
                patch_type: "JSONPatch".into(),
                json_patch: Some(ar::JSONPatch {
                    expression: Some(patch),
                }),
                ..Default::default()
            }]),
            reinvocation_policy: Some("Never".into()),
            ..Default::default()
        }),
    }
}

/// `/mutate`'s warnings: invalid images, and new ephemeral containers lacking a secret.
pub(crate) fn warning_policy(cfg: &Config, names: &Names) -> ar::ValidatingAdmissionPolicy {
    let mut v = sites::prelude(cfg, Which::Mutate);
    entry_vars(cfg, &mut v);
    v.push((
        "warnings".into(),
        format!(
            "variables.sites.transformList(i, s, variables.err[i] != '', \
             {} + ' image ' + {} + ' is not a valid image reference (' + {} + '); no pull secret injected') + ({})",
            describe("s"),
            cel::quote("s.image"),
            cel::bound("variables.err[i]"),
            missing_secret_warnings()
        ),
    ));
    let (shape, validations) = shaped_warnings("variables.warnings");
    v.push(("shaped".into(), shape));
    // Its warnings need an image that may be invalid, or new ephemeral containers: on
    // the common create of plainly valid images it is not evaluated at all.
    let mut conditions = skip_conditions(cfg);
    conditions.push(condition(
        "may-warn",
        format!(
            "{SUBRESOURCE} == 'ephemeralcontainers' || !{}",
            sites::all_plainly_valid()
        ),
    ));
    ar::ValidatingAdmissionPolicy {
        metadata: names.meta(&names.inject_warnings),
        spec: Some(ar::ValidatingAdmissionPolicySpec {
            failure_policy: Some("Ignore".into()),
            match_constraints: Some(constraints()),
            match_conditions: Some(conditions),
            variables: Some(variables(v)),
            validations: Some(validations),
            ..Default::default()
        }),
        status: None,
    }
}
