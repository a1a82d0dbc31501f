//! Connections that would tie the server up: silent after the TLS handshake, idle between
//! keep-alive requests, idle HTTP/2, a request body that stalls, and more connections
//! than the server allows. Each is closed or answered within its limit, and the server
//! keeps serving. The real binary on 127.0.0.1 with short limits; every wait is bounded.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How long a test waits for something that should happen within a 1–2 s limit.
const BOUND: Duration = Duration::from_secs(10);

fn connector(server: &Server, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let ca = std::fs::read(server.ca_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

async fn handshake(server: &Server, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(&server.addr).await.unwrap();
    connector(server, alpn)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// Reads (and discards) until the server closes the connection; returns how long that
/// took, or panics after `BOUND`.
async fn wait_closed(tls: &mut TlsStream<TcpStream>, what: &str) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + BOUND).into(), tls.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {BOUND:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

/// One keep-alive `GET /healthz` on `tls`, answered 200 within the bound.
async fn assert_healthz(tls: &mut TlsStream<TcpStream>) {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(BOUND, tls.read(&mut buf))
        .await
        .expect("answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn serve(extra: &[&str]) -> Server {
    Server::start(CONFIG, extra)
}

#[tokio::test]
async fn a_connection_silent_after_the_handshake_is_closed_at_the_idle_timeout() {
    let server = serve(&["--idle-timeout", "1"]);
    let mut tls = handshake(&server, &[b"http/1.1"]).await;
    let took = wait_closed(&mut tls, "silent connection").await;
    assert!(
        took >= Duration::from_millis(700),
        "closed at the idle timeout, not at once: {took:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_last_request() {
    let server = serve(&["--idle-timeout", "1"]);
    let mut tls = handshake(&server, &[b"http/1.1"]).await;
    // Requests keep it open past the idle timeout while they come.
    for _ in 0..3 {
        assert_healthz(&mut tls).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    wait_closed(&mut tls, "idle keep-alive connection").await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let server = serve(&["--idle-timeout", "1"]);
    let mut tls = handshake(&server, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client connection preface and an empty SETTINGS frame (RFC 9113 §3.4), then
    // nothing.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    wait_closed(&mut tls, "idle HTTP/2 connection").await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_at_the_request_timeout() {
    let server = serve(&["--request-timeout", "1"]);
    let mut tls = handshake(&server, &[b"http/1.1"]).await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"apiVersi",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(BOUND, tls.read(&mut buf))
            .await
            .expect("an answer within the bound")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "answered at the timeout, not at once: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_their_turn_and_the_server_keeps_serving() {
    let server = serve(&["--max-connections", "3", "--idle-timeout", "2"]);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(handshake(&server, &[b"http/1.1"]).await);
    }
    // The fourth waits in the listen backlog: its handshake cannot finish while the cap
    // is reached...
    let fourth = tokio::spawn({
        let tcp = TcpStream::connect(&server.addr).await.unwrap();
        let c = connector(&server, &[b"http/1.1"]);
        async move {
            let started = Instant::now();
            let tls = c
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .expect("handshake once a slot frees");
            (tls, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fourth.is_finished(), "accepted beyond the cap");
    // ... and finishes once the idle ones are closed; it is then served.
    let (mut tls, waited) = tokio::time::timeout(BOUND, fourth)
        .await
        .expect("the fourth connection is accepted within the bound")
        .unwrap();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_healthz(&mut tls).await;
    for mut c in idle {
        wait_closed(&mut c, "capped idle connection").await;
    }
}

/// Started with a low soft open-file limit (as in many containers), the server raises it
/// to the hard limit before it serves.
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let script = format!(
        "ulimit -S -n 256 && exec '{BIN}' serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
         --no-sync --exit-on-stdin-eof --config '{}' --self-signed-dir '{}'",
        config.display(),
        dir.path().join("certs").display()
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let listening = std::io::BufReader::new(stdout)
        .lines()
        .take(5)
        .map_while(Result::ok)
        .any(|l| l.starts_with("listening on"));
    assert!(listening, "the server started");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(soft, "256", "soft limit raised: {line}");
    assert_eq!(soft, hard, "soft limit raised to the hard one: {line}");
}
