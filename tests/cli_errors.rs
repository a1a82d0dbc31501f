//! Errors a person can act on (issue 16 item 7): field paths, no YAML-library advice, empty
//! and comment-only configs alike, selectors Kubernetes would reject, `check`'s warning
//! about `requireAlwaysPull: private`, one file name per parse error, stderr only, no ANSI
//! colours off a terminal, and a hint when `review` is given a bare Pod.

mod support;

use support::*;

fn check(text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, text).unwrap();
    let name = p.to_string_lossy().into_owned();
    let (code, out, err) = run_cli(&["check", "--config", &name], b"");
    (code, out, err, name)
}

#[test]
fn config_errors_name_the_field_path() {
    let (code, out, err, f) =
        check("registries:\n  - name: a\n    match: ghcr.io\n    secret: s\n");
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!("{f}:3:12: registries[0].match: expected a list of patterns, got a string\n")
    );

    let (code, _, err, f) = check(
        "registries:\n  - {name: a, match: [a.io], secret: a}\n  - {name: b, match: [b.io], secret: b}\n  - name: c\n    match: [c.io]\n",
    );
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("{f}:")), "{err}");
    assert!(
        err.ends_with(": registries[2]: missing field 'secret'\n"),
        "{err}"
    );

    let (_, _, err, _) = check("registries:\n  - name: a\n    match: [a.io]\n    secret: [s]\n");
    assert!(
        err.contains("registries[0].secret: expected a string, got a list"),
        "{err}"
    );
}

#[test]
fn no_advice_meant_for_programmers() {
    let (code, _, err, f) = check("registries: []\nregistries: []\n");
    assert_eq!(code, 1);
    assert_eq!(err, format!("{f}:2:1: duplicate mapping key: registries\n"));
    let (code, _, err, _) = check("registries: []\n---\nregistries: []\n");
    assert_eq!(code, 1);
    assert!(err.contains("a config is one YAML document"), "{err}");
    assert!(!err.contains("from_str_multiple"), "{err}");
}

#[test]
fn a_comment_only_config_fails_like_an_empty_one() {
    let (c1, _, e1, f1) = check("");
    let (c2, _, e2, f2) = check("# nothing here yet\n\n   # still nothing\n");
    assert_eq!((c1, c2), (1, 1));
    assert_eq!(
        e1,
        format!("{f1}:1:1: config is empty (expected at least `registries:`)\n")
    );
    assert_eq!(e1.replace(&f1, "F"), e2.replace(&f2, "F"));
}

#[test]
fn selectors_kubernetes_would_reject_are_rejected() {
    let sel = |e: &str| {
        format!(
            "registries:\n  - name: a\n    match: [a.io]\n    secret: s\n    namespaces:\n      selector:\n        matchExpressions: [{e}]\n"
        )
    };
    let (code, _, err, _) = check(&sel("{key: tier, operator: Exists, values: [prod]}"));
    assert_eq!(code, 1);
    assert!(err.contains(r#"registries[0].namespaces.selector.matchExpressions[0]: operator Exists must not have values (key "tier")"#), "{err}");
    let (code, _, err, _) = check(&sel("{key: tier, operator: NotIn}"));
    assert_eq!(code, 1);
    assert!(
        err.contains("operator NotIn needs at least one value"),
        "{err}"
    );
    let (code, out, _, _) = check(&sel("{key: tier, operator: In, values: [prod]}"));
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}

#[test]
fn check_warns_when_require_always_pull_private_cannot_be_met() {
    let cfg = "registries:\n  - {name: tcr, match: [\"*.tencentcloudcr.com\"], secret: t}\n  - {name: local, match: [\"localhost:5000\"], secret: l, alwaysPull: true}\npolicy:\n  requireAlwaysPull: private\n";
    let (code, out, err, _) = check(cfg);
    assert_eq!(
        (code, out.as_str()),
        (0, "ok\n"),
        "a warning does not fail the config"
    );
    assert!(err.starts_with("warning: policy.requireAlwaysPull is private, but mutation never forces Always for registries tcr"), "{err}");
    assert!(!err.contains("local"), "{err}");
    let (_, _, err, _) = check(&format!("{cfg}alwaysPullImages: private\n"));
    assert_eq!(err, "", "mutation forces Always: nothing to warn about");
    // as JSON, for tools
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, cfg).unwrap();
    let (code, out, _) = run_cli(
        &["check", "--config", p.to_str().unwrap(), "-o", "json"],
        b"",
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn manifest_parse_errors_name_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("broken.yaml");
    std::fs::write(&m, "kind: Pod\nspec: [\n").unwrap();
    let m = m.to_string_lossy().into_owned();
    let (code, out, err) = run_cli(
        &["mutate", "--config", "examples/config.yaml", "-f", &m],
        b"",
    );
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err.matches(m.as_str()).count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {m}: parsing YAML manifest: line ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn usage_errors_have_no_colours_off_a_terminal() {
    let (code, out, err) = run_cli(&["verify", "--config"], b"");
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("error:"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn review_of_a_bare_pod_points_to_mutate() {
    let (code, out, err) = run_cli(
        &["review", "--config", "examples/config.yaml"],
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: nginx}]}\n",
    );
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("hint: the input is a Pod, not an AdmissionReview; to preview manifests use `mutate -f FILE`"), "{err}");
    let (_, _, err) = run_cli(
        &["review", "--config", "examples/config.yaml"],
        b"{\"kind\": \"Pod\"}",
    );
    assert!(err.contains("hint: the input is a Pod"), "{err}");
}
