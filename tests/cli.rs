//! The CLI as a process: `check`, `review` (same answers as the server), `mutate`
//! (workload kinds), `certs` (usable by `serve`).

mod support;

use serde_json::{Value, json};
use support::*;

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("config.yaml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn check_reports_ok_or_file_line_col() {
    let (code, out, _) = run_cli(&["check", "--config", "examples/config.yaml"], b"");
    assert_eq!((code, out.as_str()), (0, "ok\n"));

    let dir = tempfile::tempdir().unwrap();
    let bad = config_file(
        &dir,
        "registries:\n  - name: a\n    match: [\"*.io\", \"https://x.io\"]\n    secret: s\n",
    );
    // errors go to stderr, stdout stays empty
    let (code, out, err) = run_cli(&["check", "--config", &bad], b"");
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err.trim_end(),
        format!(
            "{bad}:3:21: registries[0].match: invalid registry pattern \"https://x.io\": write the registry host without a scheme"
        )
    );

    let bad = config_file(
        &dir,
        "registries:\n  - name: a\n    match: [x.io]\n    secret: s\nalwaysPullImages: sometimes\n",
    );
    let (code, _, err) = run_cli(&["check", "--config", &bad], b"");
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("{bad}:5:")), "{err}");
    assert!(err.contains("sometimes"), "{err}");
}

/// The pods the HTTPS tests use, answered by `review` and by the server: identical.
#[tokio::test]
async fn review_command_answers_exactly_like_the_server() {
    let server = Server::start(CONFIG, &[]);
    let config = server.config_path.to_string_lossy().into_owned();
    let mut with_existing = pod(&[("a", "ghcr.io/acme/api:1"), ("b", "quay.io/team/x:2")]);
    with_existing["spec"]["imagePullSecrets"] = json!([{"name": "sa-secret"}]);
    let mut opted_out = pod(&[("a", "nginx")]);
    opted_out["metadata"]["annotations"] = json!({"pullsecret-injector.io/inject": "false"});
    let mut init = pod(&[("a", "registry.k8s.io/pause:3.10")]);
    init["spec"]["initContainers"] =
        json!([{"name": "i", "image": "localhost:5000/i:1", "imagePullPolicy": "IfNotPresent"}]);
    let cases = vec![
        (
            "team-a",
            pod(&[(
                "app",
                "demo-tcr.tencentcloudcr.com/docker/getting-started:latest",
            )]),
        ),
        ("team-a", with_existing),
        (
            "team-a",
            pod(&[
                ("a", "nginx"),
                ("b", "ghcr.io/acme-other/x"),
                ("c", "a.b.tencentcloudcr.com/x"),
            ]),
        ),
        ("team-a", pod(&[("bad", "ghcr.io/Acme/app:1")])),
        (
            "team-legacy",
            pod(&[("a", "demo-tcr.tencentcloudcr.com/x:1")]),
        ),
        ("kube-system", pod(&[("a", "nginx")])),
        ("team-a", opted_out),
        ("team-a", init),
    ];
    for (ns, p) in cases {
        let review = review_for(p.clone(), ns, "CREATE");
        let https = post_review(&server, "/mutate", &review).await;
        let (code, out, err) = run_cli(
            &["review", "--config", &config, "-f", "-"],
            &serde_json::to_vec(&review).unwrap(),
        );
        assert_eq!(code, 0, "{err}");
        let cli: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(cli, https, "review and /mutate differ for {p}");
    }
    // bad input is an error with a reason, not a panic
    let (code, _, err) = run_cli(&["review", "--config", &config], b"{not json");
    assert_eq!(code, 2);
    assert!(err.contains("body is not a valid AdmissionReview"), "{err}");
}

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-a}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      imagePullSecrets: [{name: mine}]
      containers:
        - {name: web, image: "demo-tcr.tencentcloudcr.com/docker/getting-started:latest"}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          initContainers: [{name: i, image: "localhost:5000/tools:1"}]
          containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: p, namespace: kube-system}
    spec: {containers: [{name: c, image: nginx}]}
  - apiVersion: v1
    kind: PodTemplate
    metadata: {name: t}
    template:
      spec: {containers: [{name: c, image: "ghcr.io/Acme/x"}]}
"#;

#[test]
fn mutate_command_previews_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, CONFIG);
    let (code, out, err) = run_cli(
        &[
            "mutate",
            "--config",
            &config,
            "-f",
            "-",
            "--namespace",
            "team-b",
        ],
        WORKLOADS.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    assert_eq!(docs.len(), 4);
    let dep = &docs[0]["spec"]["template"];
    assert_eq!(
        dep["spec"]["imagePullSecrets"],
        json!([{"name": "mine"}, {"name": "tcr-pull"}])
    );
    assert_eq!(
        dep["metadata"]["annotations"]["pullsecret-injector.io/injected"],
        "tcr-pull"
    );
    assert_eq!(dep["metadata"]["labels"]["app"], "web");
    // CronJob in the --namespace default (team-b): local has alwaysPull, hub does not
    let job = &docs[1]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(
        job["spec"]["imagePullSecrets"],
        json!([{"name": "local-registry"}, {"name": "hub-library"}])
    );
    assert_eq!(
        job["spec"]["initContainers"][0]["imagePullPolicy"],
        "Always"
    );
    assert!(
        job["spec"]["containers"][0]
            .get("imagePullPolicy")
            .is_none()
    );
    assert_eq!(
        job["metadata"]["annotations"]["pullsecret-injector.io/injected"],
        "local-registry,hub-library"
    );
    // untouched: a Service, a pod in an excluded namespace
    assert_eq!(docs[2]["spec"], json!({"ports": [{"port": 80}]}));
    assert!(
        docs[3]["items"][0]["spec"]
            .get("imagePullSecrets")
            .is_none()
    );
    // an invalid image is reported on stderr, not guessed
    assert!(
        err.contains(
            "PodTemplate/t: container \"c\" image \"ghcr.io/Acme/x\" is not a valid image reference"
        ),
        "{err}"
    );

    // JSON in, JSON out; the same pod the HTTPS tests use gets the same result
    let p = pod(&[(
        "app",
        "demo-tcr.tencentcloudcr.com/docker/getting-started:latest",
    )]);
    let (code, out, _) = run_cli(
        &["mutate", "--config", &config, "-f", "-"],
        &serde_json::to_vec(&p).unwrap(),
    );
    assert_eq!(code, 0);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        out["spec"]["imagePullSecrets"],
        json!([{"name": "tcr-pull"}])
    );

    // malformed YAML: a clear error with a position, naming the input once
    let (code, _, err) = run_cli(
        &["mutate", "--config", &config, "-f", "-"],
        b"kind: Pod\nspec: [\n",
    );
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: <stdin>: parsing YAML manifest: line"),
        "{err}"
    );
}

#[tokio::test]
async fn certs_command_output_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let (code, out, err) = run_cli(
        &[
            "certs",
            "--out-dir",
            out_dir.to_str().unwrap(),
            "--service",
            "psi",
            "--namespace",
            "infra",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(out.trim())
        .unwrap();
    assert_eq!(
        ca,
        std::fs::read(out_dir.join("ca.crt")).unwrap(),
        "stdout is the caBundle"
    );
    assert!(err.contains("psi.infra.svc"), "{err}");
    let cert = out_dir.join("tls.crt");
    let key = out_dir.join("tls.key");
    let server = Server::start_tls(CONFIG, &cert, &key, &[]);
    let resp = client_trusting(&out_dir.join("ca.crt"))
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
