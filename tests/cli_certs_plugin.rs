//! `certs` input checks (issue 16 item 9) and the binary as a kubectl plugin (item 10).

mod support;

use std::process::Command;

use support::*;

#[test]
fn certs_rejects_bad_names_and_days_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("certs");
    let out = out_dir.to_str().unwrap();
    for (args, why) in [
        (
            vec!["--dns", "web_1.example.com"],
            r#"--dns: "web_1.example.com" is not a DNS name or IP address"#,
        ),
        (
            vec!["--dns", "https://x.io"],
            r#"--dns: "https://x.io" is not a DNS name or IP address"#,
        ),
        (vec!["--dns", "a-.io"], "cannot start or end with '-'"),
        (
            vec!["--service", "My_Svc"],
            r#"--service: "My_Svc" is not a valid Service name"#,
        ),
        (
            vec!["--namespace", "a.b"],
            r#"--namespace: "a.b" is not a valid namespace name"#,
        ),
        (
            vec!["--days", "0"],
            "--days 0: must be a positive number of days",
        ),
        (
            vec!["--days", "-30"],
            "--days -30: must be a positive number of days",
        ),
    ] {
        let mut a = vec!["certs", "--out-dir", out];
        a.extend(args.iter().copied());
        let (code, stdout, err) = run_cli(&a, b"");
        assert_eq!((code, stdout.as_str()), (2, ""), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!out_dir.exists(), "{args:?}: nothing is written");
    }
    // wildcards and IP addresses are fine
    let (code, _, err) = run_cli(
        &[
            "certs",
            "--out-dir",
            out,
            "--dns",
            "*.example.com",
            "--dns",
            "10.0.0.1",
            "--dns",
            "::1",
            "--days",
            "1",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out_dir.join("tls.crt").exists());
}

/// kubectl runs `kubectl-pullsecret_injector` for `kubectl pullsecret-injector …`; the same
/// binary under that name works, and its help names the kubectl command.
#[cfg(unix)]
#[test]
fn works_as_a_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-pullsecret_injector");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(&plugin).args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["check", "--config", "examples/config.yaml"]);
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Usage: kubectl pullsecret-injector <COMMAND>"),
        "{out}"
    );
    let (code, _, err) = run(&["verify"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("Usage: kubectl pullsecret-injector verify"),
        "{err}"
    );
    // under its own name the help is unchanged
    let (_, out, _) = run_cli(&["--help"], b"");
    assert!(
        out.contains("Usage: pullsecret-injector <COMMAND>"),
        "{out}"
    );

    // and through a real kubectl when the test control plane's binaries are at hand
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        let kubectl = std::path::Path::new(&assets).join("kubectl");
        if kubectl.exists() {
            let path = format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let o = Command::new(kubectl)
                .args([
                    "pullsecret-injector",
                    "check",
                    "--config",
                    "examples/config.yaml",
                ])
                .env("PATH", path)
                .env("KUBECONFIG", dir.path().join("none"))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                "ok\n",
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// The krew manifest template names the binary kubectl looks for.
#[test]
fn the_krew_manifest_template_installs_the_plugin_name() {
    let text = std::fs::read_to_string("examples/krew/pullsecret-injector.yaml").unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        v["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(v["kind"], "Plugin");
    assert_eq!(v["metadata"]["name"], "pullsecret-injector");
    for p in v["spec"]["platforms"].as_array().unwrap() {
        assert!(
            p["bin"]
                .as_str()
                .unwrap()
                .starts_with("kubectl-pullsecret_injector"),
            "{p}"
        );
    }
}
