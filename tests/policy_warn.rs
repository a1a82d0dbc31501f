//! `/validate` in warn mode: admitted, one short warning per offence.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn offences_become_short_deduplicated_warnings() {
    let server = policy_server("warn");
    let mut p = pod(&[
        ("a", "evil.io/x:1"),
        ("b", "evil.io/x:1"),
        ("c", "demo.tencentcloudcr.com/y:1"),
        ("d", "Bad/Ref"),
    ]);
    p["spec"]["containers"][1]["name"] = json!("a"); // same text twice → one warning
    let body = post_review(&server, "/validate", &review_for(p, "team-a", "CREATE")).await;
    let r = &body["response"];
    assert_eq!(r["allowed"], true);
    assert!(r.get("status").is_none());
    assert_eq!(
        r["warnings"],
        json!([
            r#"container "a": evil.io/x:1 not in policy.allow"#,
            r#"container "c": demo.tencentcloudcr.com/y:1 must use imagePullPolicy Always"#,
            r#"container "d": invalid image "Bad/Ref""#
        ])
    );
    for w in r["warnings"].as_array().unwrap() {
        assert!(w.as_str().unwrap().chars().count() <= 120);
    }
    assert!(r.get("auditAnnotations").is_none());
}

#[tokio::test]
async fn many_offences_are_capped() {
    let server = policy_server("warn");
    let names: Vec<(String, String)> = (0..25)
        .map(|i| (format!("c{i}"), format!("evil{i}.io/x:1")))
        .collect();
    let refs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let body = post_review(
        &server,
        "/validate",
        &review_for(pod(&refs), "team-a", "CREATE"),
    )
    .await;
    let w = body["response"]["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 11);
    assert_eq!(w[10], "... and 15 more warnings");
}
