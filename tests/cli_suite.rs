//! `test`: suites with expected results per object, a table, JSON, and JUnit XML for CI
//! (issue 16 item 2). The example suites in `examples/suites` are run as CI runs them.

mod support;

use serde_json::Value;
use support::*;

#[test]
fn the_example_suites_pass() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = run_cli(
        &[
            "test",
            "examples/suites",
            "--junit",
            junit.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("RESULT  SUITE"), "{out}");
    assert!(
        out.contains("pass    tenant registries  an Argo Rollout is not checked, never ok\n"),
        "{out}"
    );
    assert!(out.ends_with(" passed, 0 failed\n"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"pullsecret-injector\""
        ),
        "{xml}"
    );
    assert!(xml.contains("failures=\"0\" errors=\"0\">"), "{xml}");
    assert!(
        xml.contains("<testsuite name=\"tenant registries\""),
        "{xml}"
    );
    assert!(
        xml.contains("<testcase classname=\"tenant registries\" name=\"sandboxes only warn\"/>"),
        "{xml}"
    );
}

const SUITE: &str = r#"
name: broken expectations
config: config.yaml
resources: [pods]
namespace: team-a
tests:
  - name: right
    object: Pod/p
    imagePullSecrets: [tcr-pull]
    result: allowed
  - name: wrong secrets and result
    object: Pod/p
    imagePullSecrets: [other]
    result: denied
    messages: ["<never said>"]
  - name: missing object
    object: Pod/nope
  - name: wrong patch
    object: Pod/p
    patch: []
"#;

/// A mismatch fails the run and says what differed, in the table, JSON and JUnit; a suite
/// that cannot be run is an error without hiding the others.
#[test]
fn mismatches_fail_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    std::fs::create_dir_all(s.join("pods")).unwrap();
    std::fs::write(
        s.join("config.yaml"),
        "registries: [{name: tcr, match: [\"*.tencentcloudcr.com\"], secret: tcr-pull}]\n",
    )
    .unwrap();
    std::fs::write(
        s.join("pods/p.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: \"x.tencentcloudcr.com/a:1\"}]}\n",
    )
    .unwrap();
    std::fs::write(s.join("pullsecret-injector-test.yaml"), SUITE).unwrap();
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("pullsecret-injector-test.yaml"),
        "config: missing.yaml\nresources: [x]\ntests: []\n",
    )
    .unwrap();
    let root = dir.path().to_str().unwrap();

    let junit = dir.path().join("j.xml");
    let (code, out, err) = run_cli(&["test", root, "--junit", junit.to_str().unwrap()], b"");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("ERROR   "), "{out}");
    assert!(out.contains("missing.yaml"), "{out}");
    let row = |r: &str, t: &str| {
        out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&r) && l.contains("broken expectations") && l.ends_with(t)
        })
    };
    assert!(row("pass", "  right"), "{out}");
    assert!(row("FAIL", "  wrong secrets and result"), "{out}");
    assert!(
        out.contains(r#"imagePullSecrets: expected ["other"], got ["tcr-pull"]"#),
        "{out}"
    );
    assert!(
        out.contains("result: expected denied, got allowed"),
        "{out}"
    );
    assert!(
        out.contains(r#"no message contains "<never said>""#),
        "{out}"
    );
    assert!(out.contains("no object Pod/nope in the resources"), "{out}");
    assert!(out.contains("patch: expected [], got [{"), "{out}");
    assert!(out.ends_with("1 passed, 4 failed\n"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"3\" errors=\"1\">"), "{xml}");
    assert!(
        xml.contains("&lt;never said&gt;"),
        "markup is escaped: {xml}"
    );

    let (code, out, _) = run_cli(&["test", s.to_str().unwrap(), "-o", "json"], b"");
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(v["suites"][0]["cases"][1]["passed"], false);
    let (code, out, _) = run_cli(
        &[
            "test",
            s.join("pullsecret-injector-test.yaml").to_str().unwrap(),
            "-o",
            "yaml",
        ],
        b"",
    );
    assert_eq!(code, 1);
    let y: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(
        y, v,
        "a suite file may be named directly; YAML carries the same"
    );

    // a directory without suites is an error, not a silent pass
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(&["test", empty.path().to_str().unwrap()], b"");
    assert_eq!(code, 2);
    assert!(
        err.contains("no suite file (pullsecret-injector-test.yaml) found"),
        "{err}"
    );
}
