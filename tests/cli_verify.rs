//! `verify` and `mutate` as CI steps: pull-policy defaulting (issue 16 item 1), JSON and
//! YAML reports and `--fail-on-warn` (item 3), narrow inputs (item 4), namespace labels
//! offline (item 5) and the config from chart values (item 6).

mod support;

use serde_json::{Value, json};
use support::*;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const ALL_ALWAYS: &str = r#"
registries:
  - {name: hub, match: [docker.io/library], secret: hub}
policy:
  mode: enforce
  requireAlwaysPull: all
"#;

fn pod_yaml(name: &str, ns: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  containers:\n    - {{name: c, image: \"{image}\"{extra}}}\n"
    )
}

/// Item 1: the API server defaults untagged and `:latest` images to `Always` (and the
/// rest to `IfNotPresent`) before any webhook sees the Pod; `verify` judges that Pod.
#[test]
fn verify_judges_pull_policies_as_the_api_server_defaults_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "c.yaml", ALL_ALWAYS);
    let digest = format!("nginx@sha256:{}", "a".repeat(64));
    let docs = [
        pod_yaml("untagged", "x", "nginx", ""),
        pod_yaml("latest", "x", "nginx:latest", ""),
        pod_yaml("tagged", "x", "nginx:1.25", ""),
        pod_yaml("digest", "x", &digest, ""),
        pod_yaml(
            "explicit",
            "x",
            "nginx:1.25",
            ", imagePullPolicy: IfNotPresent",
        ),
    ]
    .join("---\n");
    let (code, out, err) = run_cli(&["verify", "--config", &cfg, "-f", "-"], docs.as_bytes());
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("Pod/tagged: enforce:")
            && lines[0].ends_with("must have imagePullPolicy Always (policy.requireAlwaysPull: all), unset (defaults to IfNotPresent)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("Pod/digest: enforce:")
            && lines[1].ends_with("unset (defaults to IfNotPresent)"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("Pod/explicit: enforce:")
            && lines[2].ends_with(r#"has "IfNotPresent""#),
        "{out}"
    );
    assert!(
        !out.contains("Pod/untagged") && !out.contains("Pod/latest"),
        "{out}"
    );
}

/// `/validate` judges Pods that `/mutate` leaves alone (excluded namespaces, opt-outs),
/// and so does `verify`.
#[test]
fn verify_judges_pods_the_mutation_leaves_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "c.yaml",
        &format!("{POLICY}namespaces: {{exclude: [legacy]}}\n"),
    );
    let p = pod_yaml("old", "legacy", "evil.io/x:1", "");
    let (code, out, _) = run_cli(&["verify", "--config", &cfg], p.as_bytes());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("Pod/old: enforce: container \"c\" image \"evil.io/x:1\""),
        "{out}"
    );
}

/// `mutate` shows only what the webhook changes: a defaulted `Always` is not written out.
#[test]
fn mutate_does_not_write_the_defaults_into_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "c.yaml",
        "registries: [{name: hub, match: [docker.io/library], secret: hub}]\nalwaysPullImages: private\n",
    );
    let docs = [
        pod_yaml("a", "x", "nginx", ""),
        pod_yaml("b", "x", "nginx:1", ""),
    ]
    .join("---\n");
    let (code, out, err) = run_cli(&["mutate", "--config", &cfg, "-o", "json"], docs.as_bytes());
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v[0]["spec"]["containers"][0]
            .get("imagePullPolicy")
            .is_none(),
        "{out}"
    );
    assert_eq!(
        v[1]["spec"]["containers"][0]["imagePullPolicy"], "Always",
        "{out}"
    );
}

const POLICY: &str = r#"
registries:
  - {name: tcr, match: ["*.tencentcloudcr.com"], secret: tcr-pull, alwaysPull: true}
policy:
  mode: enforce
  allow: ["*.tencentcloudcr.com", "docker.io/library"]
  overrides:
    - namespaces: ["sandbox-*"]
      mode: warn
"#;

/// Item 3: `verify -o json|yaml` lists each offence with where it is; `--fail-on-warn`.
#[test]
fn verify_reports_offences_as_json_and_yaml_and_can_fail_on_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "c.yaml", POLICY);
    let m = write(
        &dir,
        "m.yaml",
        &[
            pod_yaml("p", "team-a", "evil.io/x:1", ""),
            pod_yaml("s", "sandbox-1", "evil.io/y:1", ""),
        ]
        .join("---\n"),
    );
    let (code, out, err) = run_cli(&["verify", "--config", &cfg, "-f", &m, "-o", "json"], b"");
    assert_eq!(code, 1, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["rejected"].clone(), v["warned"].clone()),
        (json!(false), json!(1), json!(1))
    );
    assert_eq!(
        v["offences"][0],
        json!({
            "source": m, "namespace": "team-a", "kind": "Pod", "name": "p",
            "site": "container", "container": "c", "image": "evil.io/x:1", "registry": "evil.io",
            "rule": "allow", "mode": "enforce",
            "message": "container \"c\" image \"evil.io/x:1\" (registry evil.io) is not in policy.allow",
        })
    );
    assert_eq!(v["offences"][1]["mode"], "warn");
    let (code, out, _) = run_cli(&["verify", "--config", &cfg, "-f", &m, "-o", "yaml"], b"");
    assert_eq!(code, 1);
    let y: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(y, v, "YAML carries the same report");

    // warn-mode offences alone pass, unless --fail-on-warn
    let s = write(
        &dir,
        "s.yaml",
        &pod_yaml("s", "sandbox-1", "evil.io/y:1", ""),
    );
    let (code, out, _) = run_cli(&["verify", "--config", &cfg, "-f", &s], b"");
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = run_cli(
        &["verify", "--config", &cfg, "-f", &s, "--fail-on-warn"],
        b"",
    );
    assert_eq!(code, 1);
    // an invalid image is a mutation warning: --fail-on-warn fails on it too
    let bad = pod_yaml("b", "sandbox-1", "ghcr.io/Acme/x", "");
    let (code, _, err) = run_cli(
        &["verify", "--config", &cfg, "--fail-on-warn"],
        bad.as_bytes(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("warning: Pod/b:"), "{err}");
}

/// Item 4: `-f` repeated, directories (recursively, .yaml/.yml/.json only), `-`, stdin by
/// default; partial documents skipped with a note; unknown kinds "not checked".
#[test]
fn inputs_are_narrow_and_nothing_unknown_passes_as_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "c.yaml", POLICY);
    let a = write(
        &dir,
        "a.yaml",
        &pod_yaml("a", "team-a", "x.tencentcloudcr.com/a:1", ""),
    );
    write(
        &dir,
        "tree/b.yml",
        &pod_yaml("b", "team-a", "x.tencentcloudcr.com/b:1", ""),
    );
    write(
        &dir,
        "tree/deeper/c.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"c"},"spec":{"containers":[{"name":"c","image":"x.tencentcloudcr.com/c:1"}]}}"#,
    );
    write(&dir, "tree/notes.txt", "not a manifest: [");
    let tree = dir.path().join("tree").to_string_lossy().into_owned();
    let stdin = pod_yaml("d", "team-a", "x.tencentcloudcr.com/d:1", "");
    let (code, out, err) = run_cli(
        &[
            "mutate", "--config", &cfg, "-f", &a, "-f", &tree, "-f", "-", "-o", "text",
        ],
        stdin.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out.lines().map(|l| l.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        names,
        [
            "Pod/a (namespace team-a)",
            "Pod/b (namespace team-a)",
            "Pod/c (namespace default)",
            "Pod/d (namespace team-a)"
        ],
        "{out}"
    );
    assert!(
        out.lines()
            .all(|l| l.ends_with("added imagePullSecrets tcr-pull; Always for containers/0")),
        "{out}"
    );

    // without -f, stdin is read
    let (code, out, _) = run_cli(
        &["mutate", "--config", &cfg, "-o", "text"],
        stdin.as_bytes(),
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("<stdin>: Pod/d"), "{out}");

    let mixed = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: scale}}\nspec: {{replicas: 3}}\n---\napiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: r}}\nspec: {{template: {{spec: {{containers: [{{name: a, image: evil.io/x}}]}}}}}}\n---\napiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: k}}\n",
        pod_yaml("ok", "team-a", "nginx:1", ", imagePullPolicy: Always")
    );
    let (code, out, err) = run_cli(&["verify", "--config", &cfg], mixed.as_bytes());
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("note: <stdin>: Deployment/scale: skipped: no pod template at spec.template"),
        "{err}"
    );
    assert_eq!(
        out,
        "Rollout/r: not checked: kind argoproj.io/v1alpha1 Rollout is not understood; pods it may create are not checked\n\
         Service/k: not checked: kind serving.knative.dev/v1 Service is not understood; pods it may create are not checked\n\
         ok: no policy breaches in the objects checked; 2 not checked (above)\n"
    );
    // mutate keeps the partial document and says when it found no pod template at all
    let (code, out, err) = run_cli(
        &["mutate", "--config", &cfg],
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert_eq!(code, 0);
    assert!(out.contains("kind: ConfigMap"), "{out}");
    assert!(
        err.contains("note: no pod template found in the input"),
        "{err}"
    );
    // a directory without manifests is an error, not an empty success
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(
        &[
            "mutate",
            "--config",
            &cfg,
            "-f",
            empty.path().to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("directory holds no .yaml, .yml or .json file"),
        "{err}"
    );
}

const SELECTOR: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    namespaces: {selector: {matchLabels: {registry-access: tcr}}}
  - name: meta
    match: [ghcr.io/acme]
    secret: acme
    namespaces:
      selector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [team-a]}]
"#;

fn secrets_of(out: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(out).unwrap();
    docs.iter()
        .filter(|d| d["kind"] == "Pod")
        .map(|d| d["spec"]["imagePullSecrets"].clone())
        .collect()
}

/// Item 5: `--namespace-labels FILE` (or Namespace objects in the inputs) makes
/// `selector` scopes real offline; without them they count as satisfied, with a note.
#[test]
fn namespace_labels_make_selectors_real_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(&dir, "c.yaml", SELECTOR);
    let pods = [
        pod_yaml("a", "team-a", "x.tencentcloudcr.com/a:1", ""),
        pod_yaml("b", "team-b", "x.tencentcloudcr.com/b:1", ""),
        pod_yaml("m", "team-b", "ghcr.io/acme/m:1", ""),
    ]
    .join("---\n");
    let (code, out, err) = run_cli(&["mutate", "--config", &cfg], pods.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        secrets_of(&out),
        [
            json!([{"name": "tcr-pull"}]),
            json!([{"name": "tcr-pull"}]),
            json!([{"name": "acme"}])
        ]
    );
    assert!(
        err.contains(
            "note: labels of namespace team-a, team-b unknown (pass --namespace-labels FILE"
        ),
        "{err}"
    );

    let labels = write(
        &dir,
        "ns.yaml",
        "team-a: {registry-access: tcr}\nteam-b: {}\n",
    );
    let (code, out, err) = run_cli(
        &["mutate", "--config", &cfg, "--namespace-labels", &labels],
        pods.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        secrets_of(&out),
        [json!([{"name": "tcr-pull"}]), Value::Null, Value::Null],
        "{out}"
    );
    assert!(!err.contains("unknown"), "{err}");

    // the same facts from Namespace objects among the inputs (and the name label the API
    // server adds to every namespace)
    let with_ns = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-a, labels: {{registry-access: tcr}}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: team-b}}\n---\n{pods}---\n{}",
        pod_yaml("m2", "team-a", "ghcr.io/acme/m:1", "")
    );
    let (code, out, err) = run_cli(&["mutate", "--config", &cfg], with_ns.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        secrets_of(&out),
        [
            json!([{"name": "tcr-pull"}]),
            Value::Null,
            Value::Null,
            json!([{"name": "acme"}])
        ],
        "{out}"
    );

    // a labels file that is neither form is an error naming it
    let bad = write(&dir, "bad.yaml", "- team-a\n");
    let (code, _, err) = run_cli(
        &["mutate", "--config", &cfg, "--namespace-labels", &bad],
        pods.as_bytes(),
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{bad}: expected a map of namespace names to label maps"
        )),
        "{err}"
    );
}

/// Item 6: `--values` reads the config the chart renders from its values, merged over the
/// chart's own values.yaml as Helm merges them.
#[test]
fn values_give_the_config_the_chart_would_install() {
    let dir = tempfile::tempdir().unwrap();
    // the chart's defaults alone: its example registries
    let (code, out, err) = run_cli(
        &[
            "check",
            "--values",
            "charts/pullsecret-injector/values.yaml",
        ],
        b"",
    );
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
    let p = pod_yaml("p", "team-a", "ghcr.io/acme/x:1", "");
    let (code, out, _) = run_cli(
        &[
            "mutate",
            "--values",
            "charts/pullsecret-injector/values.yaml",
            "-o",
            "json",
        ],
        p.as_bytes(),
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["spec"]["imagePullSecrets"],
        json!([{"name": "ghcr-acme-pull"}])
    );

    // a user's values: lists replace, maps merge, policy rendered only when set
    let values = write(
        &dir,
        "values.yaml",
        "image: {repository: r.io/psi}\nregistries:\n  - {name: h, match: [harbor.example.com], secret: harbor}\npolicy:\n  allow: [harbor.example.com]\n",
    );
    let m = pod_yaml("p", "team-a", "ghcr.io/acme/x:1", "");
    let (code, out, err) = run_cli(&["verify", "--values", &values, "-o", "json"], m.as_bytes());
    assert_eq!(code, 1, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["offences"][0]["rule"], "allow", "{out}");
    // the chart's namespaces.exclude still applies (kube-public is excluded)
    let k = pod_yaml("p", "kube-public", "harbor.example.com/x:1", "");
    let (code, out, _) = run_cli(&["mutate", "--values", &values, "-o", "text"], k.as_bytes());
    assert_eq!(code, 0);
    assert!(out.ends_with("left alone: namespace excluded\n"), "{out}");
    let h = pod_yaml("p", "team-a", "harbor.example.com/x:1", "");
    let (code, out, _) = run_cli(&["verify", "--values", &values], h.as_bytes());
    assert_eq!((code, out.as_str()), (0, "ok: no policy breaches\n"));

    // an error in values names the file and the field
    let bad = write(
        &dir,
        "bad.yaml",
        "registries:\n  - {name: a, match: ghcr.io, secret: s}\n",
    );
    let (code, _, err) = run_cli(&["check", "--values", &bad], b"");
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        format!(
            "{bad} (config rendered from chart values): registries[0].match: expected a list of patterns, got a string"
        )
    );
    // --config and --values are one or the other
    let (code, _, err) = run_cli(
        &[
            "check",
            "--values",
            &values,
            "--config",
            "examples/config.yaml",
        ],
        b"",
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
}
