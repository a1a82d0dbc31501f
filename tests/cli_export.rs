//! `export-policies` as a process: what it prints, what it says it cannot do, and the
//! configs it refuses. That the policies do what the webhook does is proven through real
//! API servers in `e2e_policy_export.rs`.

mod support;

use serde_json::Value;
use support::run_cli;

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("config.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn kinds(objects: &[Value]) -> Vec<(String, String)> {
    objects
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn prints_a_policy_and_binding_per_job_and_names_what_policies_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        &dir,
        "registries:\n  - {name: a, match: [ghcr.io/acme], secret: s, source: {namespace: creds, name: s}}\n\
         injectOnlyIfPresent: true\n\
         policy:\n  mode: enforce\n  deny: [evil.io]\n  overrides:\n    - {namespaces: [\"dev-*\"], mode: warn}\n",
    );
    let (code, out, err) = run_cli(&["export-policies", "--config", &cfg, "-o", "json"], b"");
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "List");
    let objects = list["items"].as_array().unwrap();
    let names = kinds(objects);
    let want = [
        ("MutatingAdmissionPolicy", "pullsecret-injector-inject"),
        (
            "MutatingAdmissionPolicyBinding",
            "pullsecret-injector-inject",
        ),
        (
            "ValidatingAdmissionPolicy",
            "pullsecret-injector-inject-warnings",
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "pullsecret-injector-inject-warnings",
        ),
        ("ValidatingAdmissionPolicy", "pullsecret-injector-policy"),
        (
            "ValidatingAdmissionPolicyBinding",
            "pullsecret-injector-policy",
        ),
        (
            "ValidatingAdmissionPolicy",
            "pullsecret-injector-policy-warn",
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "pullsecret-injector-policy-warn",
        ),
        (
            "ValidatingAdmissionPolicy",
            "pullsecret-injector-policy-override-0-warn",
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "pullsecret-injector-policy-override-0-warn",
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(names, want);
    // enforce → Deny; the warn override has no deciding policy, only warnings.
    let actions = |name: &str| {
        objects
            .iter()
            .find(|o| {
                o["kind"] == "ValidatingAdmissionPolicyBinding" && o["metadata"]["name"] == name
            })
            .unwrap()["spec"]["validationActions"]
            .clone()
    };
    assert_eq!(
        actions("pullsecret-injector-policy"),
        serde_json::json!(["Deny"])
    );
    assert_eq!(
        actions("pullsecret-injector-policy-override-0-warn"),
        serde_json::json!(["Warn"])
    );
    assert!(err.contains("note: registries a: secret sync"), "{err}");
    assert!(err.contains("note: injectOnlyIfPresent"), "{err}");

    // YAML: the same objects, as documents.
    let (code, yaml, _) = run_cli(&["export-policies", "--config", &cfg], b"");
    assert_eq!(code, 0);
    assert_eq!(yaml.matches("\n---\n").count(), objects.len() - 1);
    assert!(yaml.starts_with(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\n"
    ));
}

#[test]
fn refuses_invalid_configs_prefixes_and_expressions_the_api_server_would_reject() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config_file(
        &dir,
        "registries:\n  - {name: a, match: [\"https://x.io\"], secret: s}\n",
    );
    let (code, out, err) = run_cli(&["export-policies", "--config", &bad], b"");
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("config.yaml:2:"), "{err}");

    let ok = config_file(&dir, "registries: []\n");
    let (code, _, err) = run_cli(
        &[
            "export-policies",
            "--config",
            &ok,
            "--name-prefix",
            "Bad_Prefix",
        ],
        b"",
    );
    assert_eq!(code, 1);
    assert!(err.contains("--name-prefix"), "{err}");

    // 500 entries make the per-image matching longer than the 100,000 characters the
    // API server accepts in one expression.
    let mut text = String::from("registries:\n");
    for i in 0..500 {
        text.push_str(&format!(
            "  - {{name: r{i}, match: [\"*.zone{i}.example.net\", \"ghcr.io/org{i}\"], secret: s{i}}}\n"
        ));
    }
    let big = config_file(&dir, &text);
    let (code, out, err) = run_cli(&["export-policies", "--config", &big], b"");
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("MutatingAdmissionPolicy pullsecret-injector-inject spec.variables[")
            && err.contains("the API server accepts at most 100000"),
        "{err}"
    );
}
