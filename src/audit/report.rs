//! Pure: the audit's findings as wg-policy report objects (`wgpolicyk8s.io/v1alpha2`,
//! the format Kyverno, Kubewarden and Trivy write and Policy Reporter reads; schema:
//! kubernetes-sigs/wg-policy-prototypes `policy-report/crd/v1alpha2`).
//!
//! - One `PolicyReport` named [`REPORT_NAME`] per namespace with judged pods: a result
//!   per offending pod and container, its `summary` counting every result (`pass` = pods
//!   without offences), at most `maxResultsPerReport` results (failures first; the
//!   annotation [`TRUNCATED_ANNOTATION`] says how many were left out).
//! - One `ClusterPolicyReport` named [`REPORT_NAME`]: a result per namespace whose pods
//!   offend (the resource is the Namespace), so the cluster's state reads at a glance.
//!
//! A result's `timestamp` is when it was first seen ([`Stamps`]), not when the audit last
//! ran, so an unchanged cluster gives unchanged reports and no writes: compare with
//! [`content`], which leaves timestamps out.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use super::judge::{NamespaceAudit, Verdict};
use crate::admission::validate::Rule;
use crate::ownership;

pub(crate) const GROUP: &str = "wgpolicyk8s.io";
pub(crate) const VERSION: &str = "v1alpha2";
pub(crate) const REPORT_NAME: &str = "pullsecret-injector";
/// On a report that holds fewer results than were found.
pub(crate) const TRUNCATED_ANNOTATION: &str = "pullsecret-injector.io/results-truncated";
/// Every result's `policy`. Results carry no `source`: the published v1alpha2 schema has
/// no `results[].source`, so the API server would prune it with one `Warning` header per
/// result, and a response of more than 100 headers is refused by the HTTP client (hyper's
/// `h1_max_headers`), failing every write of a report of about 95 results or more.
const POLICY: &str = "pullsecret-injector";
const CATEGORY: &str = "Registry policy";

/// What identifies a result across audits, for its first-seen timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ResultKey {
    namespace: String,
    /// The pod's uid (its name if it has none), or empty for a namespace result.
    pod: String,
    site: String,
    container: String,
    rule: String,
}

/// First-seen times of results (seconds since the epoch).
#[derive(Debug, Default)]
pub(crate) struct Stamps {
    seen: HashMap<ResultKey, i64>,
    used: HashSet<ResultKey>,
}

impl Stamps {
    fn stamp(&mut self, key: ResultKey, now: i64) -> i64 {
        let t = *self.seen.entry(key.clone()).or_insert(now);
        self.used.insert(key);
        t
    }

    /// Forgets results not stamped since the last call (they are gone).
    pub(crate) fn prune(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.seen.retain(|k, _| used.contains(k));
    }

    /// Takes over the timestamps of a report written before (by this process, or by the
    /// leader before it), so a new leader does not restamp every result.
    pub(crate) fn learn(&mut self, report: &Value) {
        let namespace = report
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        for r in report
            .get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(seconds) = r.pointer("/timestamp/seconds").and_then(Value::as_i64) else {
                continue;
            };
            let res = r.pointer("/resources/0").unwrap_or(&Value::Null);
            let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            let key = match res.get("kind").and_then(Value::as_str) {
                Some("Namespace") => ResultKey {
                    namespace: s(res.get("name")),
                    pod: String::new(),
                    site: String::new(),
                    container: String::new(),
                    rule: s(r.get("rule")),
                },
                _ => ResultKey {
                    namespace: namespace.to_string(),
                    pod: s(res.get("uid").or(res.get("name"))),
                    site: s(r.pointer("/properties/site")),
                    container: s(r.pointer("/properties/container")),
                    rule: s(r.get("rule")),
                },
            };
            self.seen.entry(key).or_insert(seconds);
        }
    }
}

fn severity(rule: Rule) -> &'static str {
    match rule {
        Rule::RequireAlwaysPull => "medium",
        Rule::Deny | Rule::Allow | Rule::InvalidImage | Rule::UnreadablePod => "high",
    }
}

fn metadata(namespace: Option<&str>, shown: usize, found: usize) -> Value {
    let mut m = json!({ "name": REPORT_NAME, "labels": ownership::labels() });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if shown < found {
        m["annotations"] = json!({
            TRUNCATED_ANNOTATION: format!("{shown} of {found} results shown; the summary counts all"),
        });
    }
    m
}

fn result(
    rule: &str,
    verdict: &str,
    severity: &str,
    message: &str,
    seconds: i64,
    resource: Value,
    properties: Value,
) -> Value {
    json!({
        "policy": POLICY,
        "rule": rule,
        "result": verdict,
        "message": message,
        "category": CATEGORY,
        "severity": severity,
        "scored": true,
        "timestamp": {"seconds": seconds, "nanos": 0},
        "resources": [resource],
        "properties": properties,
    })
}

fn pod_ref(namespace: &str, name: &str, uid: Option<&str>) -> Value {
    let mut r = json!({"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name});
    if let Some(u) = uid {
        r["uid"] = json!(u);
    }
    r
}

/// The namespace's `PolicyReport`.
pub(crate) fn namespace_report(
    namespace: &str,
    a: &NamespaceAudit,
    max_results: usize,
    stamps: &mut Stamps,
    now: i64,
) -> Value {
    let mut results = Vec::new();
    for u in &a.unreadable {
        let key = ResultKey {
            namespace: namespace.into(),
            pod: u.uid.clone().unwrap_or_else(|| u.pod.clone()),
            site: String::new(),
            container: String::new(),
            rule: Rule::UnreadablePod.as_str().into(),
        };
        results.push(result(
            Rule::UnreadablePod.as_str(),
            "error",
            severity(Rule::UnreadablePod),
            &u.message,
            stamps.stamp(key, now),
            pod_ref(namespace, &u.pod, u.uid.as_deref()),
            json!({}),
        ));
    }
    // Failures before warnings, each in the pod's own order.
    let mut findings: Vec<_> = a.findings.iter().collect();
    findings.sort_by_key(|f| f.result);
    for f in findings {
        let key = ResultKey {
            namespace: namespace.into(),
            pod: f.uid.clone().unwrap_or_else(|| f.pod.clone()),
            site: f.site.into(),
            container: f.container.clone(),
            rule: f.rule.as_str().into(),
        };
        let mut props = json!({
            "site": f.site,
            "container": f.container,
            "image": f.image,
            "mode": f.mode,
            "rules": f.policy,
        });
        if let Some(r) = &f.registry {
            props["registry"] = json!(r);
        }
        results.push(result(
            f.rule.as_str(),
            f.result.as_str(),
            severity(f.rule),
            &f.message,
            stamps.stamp(key, now),
            pod_ref(namespace, &f.pod, f.uid.as_deref()),
            props,
        ));
    }
    let found = results.len();
    results.truncate(max_results);
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "PolicyReport",
        "metadata": metadata(Some(namespace), results.len(), found),
        "summary": {
            "pass": a.passed,
            "fail": a.count(Verdict::Fail),
            "warn": a.count(Verdict::Warn),
            "error": a.unreadable.len(),
            "skip": 0,
        },
        "results": results,
    })
}

/// The `ClusterPolicyReport`: a result per namespace whose pods offend; its summary
/// counts namespaces (`pass`: judged namespaces without offences).
pub(crate) fn cluster_report(
    audits: &BTreeMap<String, NamespaceAudit>,
    max_results: usize,
    stamps: &mut Stamps,
    now: i64,
) -> Value {
    let (mut pass, mut fail, mut warn, mut error) = (0, 0, 0, 0);
    let mut results = Vec::new();
    for (ns, a) in audits {
        let (f, w, e) = (
            a.count(Verdict::Fail),
            a.count(Verdict::Warn),
            a.unreadable.len(),
        );
        let offending = a.pods - a.passed;
        let verdict = if e > 0 {
            error += 1;
            "error"
        } else if f > 0 {
            fail += 1;
            "fail"
        } else if w > 0 {
            warn += 1;
            "warn"
        } else {
            pass += 1;
            continue;
        };
        let key = ResultKey {
            namespace: ns.clone(),
            pod: String::new(),
            site: String::new(),
            container: String::new(),
            rule: "namespace".into(),
        };
        let message = format!(
            "{offending} of {} pods in namespace {ns} break the registry rules ({f} fail, {w} warn, {e} error results); see PolicyReport {REPORT_NAME} in {ns}",
            a.pods
        );
        results.push(result(
            "namespace",
            verdict,
            "high",
            &message,
            stamps.stamp(key, now),
            json!({"apiVersion": "v1", "kind": "Namespace", "name": ns}),
            json!({"pods": a.pods.to_string(), "offendingPods": offending.to_string()}),
        ));
    }
    let found = results.len();
    results.truncate(max_results);
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "ClusterPolicyReport",
        "metadata": metadata(None, results.len(), found),
        "summary": {"pass": pass, "fail": fail, "warn": warn, "error": error, "skip": 0},
        "results": results,
    })
}

/// What a write would change: summary, results without timestamps, and our annotation.
/// Two reports with equal content need no write.
pub(crate) fn content(report: &Value) -> Value {
    let mut results = report.get("results").cloned().unwrap_or(json!([]));
    if let Some(rs) = results.as_array_mut() {
        for r in rs {
            if let Some(o) = r.as_object_mut() {
                o.remove("timestamp");
            }
        }
    }
    json!({
        "summary": report.get("summary"),
        "results": results,
        "truncated": report.pointer(&format!("/metadata/annotations/{}", TRUNCATED_ANNOTATION.replace('/', "~1"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::NamespaceFacts;
    use crate::audit::judge::{AuditPod, audit};
    use crate::config::Config;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(ns: &str, name: &str, images: &[&str]) -> AuditPod {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, img)| json!({"name": format!("c{i}"), "image": img, "imagePullPolicy": "Always"}))
            .collect();
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
            "spec": {"containers": containers},
        }))
        .unwrap();
        AuditPod::from_pod(&p).unwrap()
    }

    fn audits(pods: &[AuditPod]) -> BTreeMap<String, NamespaceAudit> {
        let c = Config::parse(
            "registries: []\npolicy:\n  deny: [docker.io/evil]\n  overrides: [{namespaces: [lab], mode: warn}]\n",
            "t.yaml",
        )
        .unwrap();
        audit(&c, pods, |_| NamespaceFacts::default())
    }

    #[test]
    fn a_report_has_a_result_per_offence_and_a_summary_of_all() {
        let a = audits(&[
            pod("team", "ok", &["nginx"]),
            pod("team", "bad", &["evil/x", "nginx", "evil/y"]),
        ]);
        let mut stamps = Stamps::default();
        let r = namespace_report("team", &a["team"], 100, &mut stamps, 1000);
        assert_eq!(r["kind"], "PolicyReport");
        assert_eq!(r["metadata"]["namespace"], "team");
        assert_eq!(
            r["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "pullsecret-injector"
        );
        assert_eq!(
            r["summary"],
            json!({"pass": 1, "fail": 2, "warn": 0, "error": 0, "skip": 0})
        );
        let res = r["results"].as_array().unwrap();
        assert_eq!(res.len(), 2);
        assert_eq!(res[0]["rule"], "deny");
        assert_eq!(res[0]["result"], "fail");
        assert_eq!(res[0]["properties"]["container"], "c0");
        assert_eq!(res[1]["properties"]["container"], "c2");
        assert_eq!(
            res[0]["resources"][0],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "team", "name": "bad", "uid": "uid-team-bad"})
        );
        assert_eq!(res[0]["timestamp"]["seconds"], 1000);
    }

    #[test]
    fn timestamps_are_first_seen_and_unchanged_content_compares_equal() {
        let pods = [pod("team", "bad", &["evil/x"])];
        let mut stamps = Stamps::default();
        let first = namespace_report("team", &audits(&pods)["team"], 100, &mut stamps, 1000);
        stamps.prune();
        let again = namespace_report("team", &audits(&pods)["team"], 100, &mut stamps, 2000);
        assert_eq!(first, again, "same finding, same timestamp");
        // A new leader learns the stamps from the stored report.
        let mut fresh = Stamps::default();
        fresh.learn(&first);
        let third = namespace_report("team", &audits(&pods)["team"], 100, &mut fresh, 3000);
        assert_eq!(first, third);
        // A stamp forgotten (the result went away) is new when it comes back.
        stamps.prune();
        stamps.prune();
        let later = namespace_report("team", &audits(&pods)["team"], 100, &mut stamps, 4000);
        assert_eq!(later["results"][0]["timestamp"]["seconds"], 4000);
        assert_ne!(first, later);
        assert_eq!(content(&first), content(&later));
    }

    #[test]
    fn reports_are_bounded_failures_first_and_say_so() {
        let mut pods: Vec<_> = (0..5)
            .map(|i| pod("lab", &format!("w{i}"), &["evil/x"]))
            .collect();
        pods.push(pod("team", "f", &["evil/x"]));
        let a = audits(&pods);
        let mut stamps = Stamps::default();
        let r = namespace_report("lab", &a["lab"], 3, &mut stamps, 1);
        assert_eq!(r["results"].as_array().unwrap().len(), 3);
        assert_eq!(r["summary"]["warn"], 5);
        assert_eq!(
            r["metadata"]["annotations"][TRUNCATED_ANNOTATION],
            "3 of 5 results shown; the summary counts all"
        );
        let c = cluster_report(&a, 100, &mut stamps, 1);
        assert_eq!(c["kind"], "ClusterPolicyReport");
        assert!(c["metadata"].get("namespace").is_none());
        assert_eq!(
            c["summary"],
            json!({"pass": 0, "fail": 1, "warn": 1, "error": 0, "skip": 0})
        );
        let res = c["results"].as_array().unwrap();
        assert_eq!(res[0]["resources"][0]["name"], "lab");
        assert_eq!(res[0]["result"], "warn");
        assert_eq!(res[1]["result"], "fail");
        assert!(
            res[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("5 of 5 pods in namespace lab break the registry rules")
        );
        let small = cluster_report(&a, 1, &mut stamps, 1);
        assert_eq!(small["results"].as_array().unwrap().len(), 1);
        assert!(small["metadata"]["annotations"][TRUNCATED_ANNOTATION].is_string());
    }
}
