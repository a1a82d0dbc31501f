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

#[tokio::test]
async fn offence_annotation_is_bounded_and_escaped() {
    let server = policy_server("audit");
    let huge = format!("evil.io/x:1{}", "\u{1b}[2J\r\n\u{202e}".repeat(100_000));
    let mut cs = vec![("big".to_string(), huge)];
    cs.extend((0..3000).map(|i| (format!("c{i}"), format!("evil{i}.io/x:1"))));
    let refs: Vec<(&str, &str)> = cs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let body = post_review(
        &server,
        "/validate",
        &review_for(pod(&refs), "team-a", "CREATE"),
    )
    .await;
    let r = &body["response"];
    assert_eq!(r["allowed"], true);
    let a = &r["auditAnnotations"];
    // The count is the whole count; only the text is capped.
    assert_eq!(a["policy-offence-count"], "3001");
    let text = a["policy-offences"].as_str().unwrap();
    assert!(text.len() <= 12 * 1024, "{} bytes", text.len());
    assert!(
        !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{text:?}"
    );
    assert!(
        text.starts_with(r#"container "big" image "evil.io/x:1\u{1b}[2J"#),
        "{text}"
    );
    assert!(text.ends_with("; ... and 2991 more offences"), "{text}");
}
