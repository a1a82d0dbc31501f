//! `/validate` in audit mode: admitted silently, offences only in auditAnnotations.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn offences_are_recorded_in_valid_audit_annotation_keys() {
    let server = policy_server("audit");
    let p = pod(&[("app", "evil.io/x:1"), ("ok", "nginx:1.25")]);
    let body = post_review(&server, "/validate", &review_for(p, "team-a", "CREATE")).await;
    let r = &body["response"];
    assert_eq!(r["allowed"], true);
    assert!(r.get("warnings").is_none());
    assert_eq!(
        r["auditAnnotations"],
        json!({
            "policy-offences": r#"container "app" image "evil.io/x:1" (registry evil.io) is not in policy.allow"#,
            "policy-offence-count": "1"
        })
    );
    for key in r["auditAnnotations"].as_object().unwrap().keys() {
        assert!(
            key.len() <= 63
                && !key.contains('/')
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{key}"
        );
    }
}

#[tokio::test]
async fn clean_pods_leave_no_trace() {
    let server = policy_server("audit");
    let mut p = pod(&[("ok", "nginx:1.25")]);
    p["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
    let body = post_review(&server, "/validate", &review_for(p, "team-a", "CREATE")).await;
    assert_eq!(
        body["response"],
        json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true})
    );
}
