//! `serve` as a cluster runs it: the probe port never asks for a client certificate, the
//! listen flags take every form a chart or a user writes (and a repeated flag overrides),
//! and SIGTERM turns the pod unready while it keeps answering for `--shutdown-delay`.

mod support;

use std::time::{Duration, Instant};

use support::*;

async fn status_of(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

/// With `--client-ca` the webhook port demands a client certificate, so the kubelet's
/// probes (which present none) must go to the plain-HTTP metrics port, which serves
/// `/healthz` and `/readyz` too.
#[tokio::test]
async fn probes_on_the_metrics_port_work_with_client_certificates_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pullsecret_injector::certs::generate(&["127.0.0.1".into()], 1).unwrap();
    let ca_path = dir.path().join("client-ca.crt");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    let server = Server::start(CONFIG, &["--client-ca", ca_path.to_str().unwrap()]);
    for path in ["/healthz", "/readyz"] {
        let url = format!("http://{}{path}", server.metrics_addr);
        assert_eq!(status_of(&url).await, Some(200), "{url}");
    }
    // The webhook port itself refuses a client without a certificate.
    let e = server.client().get(server.url("/healthz")).send().await;
    assert!(e.is_err(), "no client certificate was accepted: {e:?}");
}

#[tokio::test]
async fn listen_takes_localhost_any_and_the_last_of_repeated_flags() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let last = format!("localhost:{port}");
    // The first --listen is what a chart renders, the second what extraArgs adds.
    let server = Server::start(
        CONFIG,
        &[
            "--listen",
            "0.0.0.0:1",
            "--listen",
            &last,
            "--metrics-listen",
            ":0",
        ],
    );
    assert_eq!(server.addr, format!("127.0.0.1:{port}"));
    let resp = server.client().get(server.url("/healthz")).send().await;
    assert_eq!(resp.unwrap().status(), 200);
    // `:0` is every address of both families: reachable over IPv4 and IPv6 loopback.
    let metrics_port = server.metrics_addr.rsplit(':').next().unwrap().to_string();
    for host in ["127.0.0.1", "[::1]"] {
        let url = format!("http://{host}:{metrics_port}/healthz");
        assert_eq!(status_of(&url).await, Some(200), "{url}");
    }
    for bad in ["8443", "example.com:80", ":99999"] {
        let (code, _, err) = run_cli(&["serve", "--listen", bad], b"");
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains(bad), "{bad}: {err}");
    }
}

/// SIGTERM: unready at once, still answering reviews for the delay (the endpoint is
/// being removed meanwhile), then a clean exit.
#[tokio::test]
async fn sigterm_turns_unready_and_keeps_serving_for_the_delay() {
    let mut server = Server::start(CONFIG, &["--shutdown-delay", "3"]);
    let ready = format!("http://{}/readyz", server.metrics_addr);
    assert_eq!(status_of(&ready).await, Some(200));
    let c = server.client();
    let review = review_for(pod(&[("app", "ghcr.io/acme/app:1")]), "team-a", "CREATE");
    unsafe_kill(server.child.id(), "TERM");
    let signalled = Instant::now();
    let deadline = signalled + Duration::from_secs(2);
    while status_of(&ready).await != Some(503) {
        assert!(Instant::now() < deadline, "still ready 2 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Unready, and still answering reviews on fresh connections.
    let fresh = client_trusting(&server.ca_path());
    let resp = fresh
        .post(server.url("/mutate"))
        .json(&review)
        .send()
        .await
        .expect("a review during the shutdown delay is answered");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], true);
    drop(c);
    let status = wait_with_deadline(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(2900),
        "exited {:?} after SIGTERM, before the 3 s delay",
        signalled.elapsed()
    );
}
