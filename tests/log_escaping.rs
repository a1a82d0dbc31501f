//! Request-derived log fields cannot forge log lines: a tenant controls a Pod's
//! `generateName` (and anyone who can reach the port controls `uid`), so CR/LF, ANSI
//! escapes and bidi overrides in them must reach the log escaped, in both formats.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// A forged "next line", a colour change and a right-to-left override.
const UID: &str = "u-1\r\n2026-01-01T00:00:00.000000Z  INFO forged: admitted\u{1b}[31m\u{202e}x";
const GENERATE_NAME: &str = "web-\n\u{1b}[2K\rforged\u{202e}-";

/// `serve` at debug level for our crate, without colours (so every control character
/// left in the log came from the request), in `format`.
fn start(format: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, CONFIG).unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--no-cluster-access"])
        .args(["--log-format", format])
        .arg("--config")
        .arg(&config_path)
        .arg("--self-signed-dir")
        .arg(dir.path().join("certs"))
        .env("RUST_LOG", "info,pullsecret_injector=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut metrics_addr) = (String::new(), String::new());
    for line in lines.by_ref().take(5) {
        if let Some(rest) = line.unwrap().strip_prefix("listening on https://") {
            let (a, m) = rest.split_once(" (metrics on http://").unwrap();
            addr = a.to_string();
            metrics_addr = m.trim_end_matches("/metrics)").to_string();
            break;
        }
    }
    assert!(!addr.is_empty(), "server did not report its address");
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr,
        metrics_addr,
        dir,
        config_path,
    }
}

/// Sends the hostile review to both endpoints and returns the log once both admission
/// lines are in it.
async fn log_of_hostile_reviews(server: &Server) -> String {
    let mut p = pod(&[("app", "ghcr.io/acme/app:1")]);
    p["metadata"]["generateName"] = json!(GENERATE_NAME);
    let mut review = review_for(p, "team-a", "CREATE");
    review["request"]["uid"] = json!(UID);
    for endpoint in ["/mutate", "/validate"] {
        let body = post_review(server, endpoint, &review).await;
        assert_eq!(body["response"]["allowed"], true);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if log.matches("\"admission\"").count() + log.matches(" admission ").count() >= 2 {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no admission lines logged:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No raw control character but the line ends, and no bidi override.
fn assert_inert(log: &str) {
    for (i, line) in log.lines().enumerate() {
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "line {i} holds a raw control or bidi character: {line:?}"
        );
    }
}

#[tokio::test]
async fn text_logs_escape_uid_and_pod() {
    let server = start("text");
    let log = log_of_hostile_reviews(&server).await;
    assert_inert(&log);
    let admissions: Vec<&str> = log.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(
        admissions.len(),
        2,
        "one line per review, none forged:\n{log}"
    );
    for line in admissions {
        assert!(line.contains(" admission "), "{line}");
        // The values are still there, escaped and quoted, so they can be read back.
        assert!(line.contains(&format!("uid={UID:?}")), "{line}");
        assert!(line.contains(&format!("pod={GENERATE_NAME:?}")), "{line}");
    }
}

#[tokio::test]
async fn json_logs_escape_uid_and_pod() {
    let server = start("json");
    let log = log_of_hostile_reviews(&server).await;
    for (i, line) in log.lines().enumerate() {
        assert!(
            !line.chars().any(|c| c.is_control()),
            "line {i} holds a raw control character: {line:?}"
        );
        assert!(
            !line.contains('\u{202E}'),
            "line {i} holds a raw bidi override: {line:?}"
        );
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("line {i}: {e}: {line}"));
    }
    let admissions: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["fields"]["message"] == "admission")
        .collect();
    assert_eq!(admissions.len(), 2, "{log}");
    for v in admissions {
        // The serializer's escaping is lossless: the values read back exactly.
        assert_eq!(v["fields"]["uid"], UID, "{v}");
        assert_eq!(v["fields"]["pod"], GENERATE_NAME, "{v}");
    }
}
