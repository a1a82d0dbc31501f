//! Output keeps the user's document (issue 16 item 8): key order, long strings on one
//! line, `--diff` of only the injected lines; and `-o` for `mutate`, `review` and `check`
//! (item 3).

mod support;

use serde_json::Value;
use support::*;

const DOC: &str = r#"kind: Deployment
apiVersion: apps/v1
metadata:
  name: web
  namespace: team-a
  labels: {zeta: "1", alpha: "2"}
spec:
  template:
    spec:
      containers:
        - name: web
          image: demo-tcr.tencentcloudcr.com/shop/web:1
          imagePullPolicy: IfNotPresent
          env:
            - name: LONG
              value: "a long string that goes on and on well past the eighty columns a folding writer would break it at"
          args: [--zeta, --alpha]
      terminationGracePeriodSeconds: 5
  selector: {matchLabels: {app: web}}
  replicas: 2
"#;

#[test]
fn mutate_keeps_key_order_and_long_lines() {
    let (code, out, err) = run_cli(
        &["mutate", "--config", "examples/config.yaml"],
        DOC.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let keys: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(
        keys,
        [
            "kind: Deployment",
            "apiVersion: apps/v1",
            "metadata:",
            "spec:"
        ],
        "{out}"
    );
    let pos = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s} not in {out}"));
    assert!(pos("zeta:") < pos("alpha:"), "{out}");
    assert!(
        pos("template:") < pos("selector:") && pos("selector:") < pos("replicas:"),
        "{out}"
    );
    assert!(
        out.contains("value: a long string that goes on and on well past the eighty columns a folding writer would break it at\n"),
        "{out}"
    );
}

#[test]
fn diff_shows_only_the_injected_lines() {
    let (code, out, err) = run_cli(
        &["mutate", "--config", "examples/config.yaml", "--diff"],
        DOC.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("--- a/<stdin>\n+++ b/<stdin>\n@@ "),
        "{out}"
    );
    let added: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    let removed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .collect();
    assert_eq!(
        added,
        [
            "+        imagePullPolicy: Always",
            "+      imagePullSecrets:",
            "+      - name: tcr-pull",
            // the template had no metadata: it is added after the spec
            "+    metadata:",
            "+      annotations:",
            "+        pullsecret-injector.io/injected: tcr-pull",
        ],
        "{out}"
    );
    assert_eq!(removed, ["-        imagePullPolicy: IfNotPresent"], "{out}");
    // nothing to inject: no diff at all
    let (code, out, _) = run_cli(
        &["mutate", "--config", "examples/config.yaml", "--diff"],
        b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: quay.io/x:1}]}\n",
    );
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn mutate_output_formats() {
    let (code, out, _) = run_cli(
        &["mutate", "--config", "examples/config.yaml", "-o", "json"],
        DOC.as_bytes(),
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"],
        "tcr-pull"
    );
    let json_in = serde_json::to_string(&v).unwrap();
    let (code, out, _) = run_cli(
        &["mutate", "--config", "examples/config.yaml", "-o", "yaml"],
        json_in.as_bytes(),
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("kind: Deployment\n"), "{out}");
    let (code, out, _) = run_cli(
        &["mutate", "--config", "examples/config.yaml", "-o", "text"],
        DOC.as_bytes(),
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "<stdin>: Deployment/web (namespace team-a): added imagePullSecrets tcr-pull; Always for containers/0\n"
    );
}

#[test]
fn review_and_check_output_formats() {
    let review = review_for(
        pod(&[("app", "demo-tcr.tencentcloudcr.com/x:1")]),
        "team-a",
        "CREATE",
    );
    let body = serde_json::to_vec(&review).unwrap();
    let args = |o: &'static str| vec!["review", "--config", "examples/config.yaml", "-o", o];
    let (code, json_out, _) = run_cli(&args("json"), &body);
    assert_eq!(code, 0);
    let j: Value = serde_json::from_str(&json_out).unwrap();
    let (code, yaml_out, _) = run_cli(&args("yaml"), &body);
    assert_eq!(code, 0);
    let y: Value = serde_saphyr::from_str(&yaml_out).unwrap();
    assert_eq!(y, j);
    let (code, text, _) = run_cli(&args("text"), &body);
    assert_eq!(code, 0);
    assert!(
        text.starts_with("allowed\npatch: {\"op\":\"add\",\"path\":\"/spec/imagePullSecrets\""),
        "{text}"
    );
    assert!(
        text.contains("audit: injected-secrets=tcr-pull\n"),
        "{text}"
    );

    let (code, out, _) = run_cli(
        &["check", "--config", "examples/config.yaml", "-o", "yaml"],
        b"",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "ok: true\nwarnings: []\n");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("c.yaml");
    std::fs::write(&bad, "registries: x\n").unwrap();
    let (code, out, _) = run_cli(
        &["check", "--config", bad.to_str().unwrap(), "-o", "json"],
        b"",
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["ok"].clone(),
            v["error"]["line"].clone(),
            v["error"]["column"].clone()
        ),
        (Value::Bool(false), 1.into(), 13.into())
    );
    assert_eq!(
        v["error"]["reason"],
        "registries: expected a list, got a string"
    );
}
