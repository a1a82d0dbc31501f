//! Running the real binary like an operator would: metrics, hot reload of config and
//! certificate (Kubernetes-style symlink swap) with zero failed requests, client-certificate
//! enforcement, and a graceful drain on SIGTERM.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pullsecret_injector::certs;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("http://{}/metrics", server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric_value(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the metric line `line` reads `value`.
async fn metric_reaches(server: &Server, line: &str, value: f64) {
    eventually(line, Duration::from_secs(20), || async {
        metric_value(&metrics(server).await, line) == Some(value)
    })
    .await;
}

/// Polls `f` until it returns true or the deadline passes (bounded, no fixed sleeps).
async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn injected(server: &Server, client: &reqwest::Client, image: &str) -> Vec<String> {
    let review = review_for(pod(&[("a", image)]), "team-a", "CREATE");
    let resp = client
        .post(server.url("/mutate"))
        .header("content-type", "application/json")
        .json(&review)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    secret_names(&apply_pod(&review["request"]["object"], &body))
}

#[tokio::test]
async fn metrics_count_admissions_by_outcome_and_registry() {
    let server = Server::start(CONFIG, &[]);
    let c = server.client();
    assert_eq!(
        injected(&server, &c, "ghcr.io/acme/x:1").await,
        ["ghcr-acme"]
    );
    assert!(
        injected(&server, &c, "registry.k8s.io/pause")
            .await
            .is_empty()
    );
    let _ = c
        .post(server.url("/mutate"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    let m = metrics(&server).await;
    let get = |p: &str| metric_value(&m, p).unwrap_or_else(|| panic!("{p} missing in\n{m}"));
    assert_eq!(
        get(
            r#"pullsecret_injector_admission_requests_total{endpoint="mutate",operation="CREATE",outcome="patched"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"pullsecret_injector_admission_requests_total{endpoint="mutate",operation="CREATE",outcome="allowed"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"pullsecret_injector_admission_requests_total{endpoint="mutate",operation="",outcome="invalid"}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"pullsecret_injector_secrets_injected_total{registry="ghcr-acme"}"#),
        1.0
    );
    assert_eq!(
        get(r#"pullsecret_injector_admission_duration_seconds_count{endpoint="mutate"}"#),
        2.0
    );
    assert!(
        m.contains("# TYPE pullsecret_injector_sync_conflicts counter"),
        "{m}"
    );
}

#[tokio::test]
async fn config_reload_applies_good_configs_and_keeps_the_old_on_bad_ones() {
    let server = Server::start(CONFIG, &[]);
    let c = server.client();
    assert_eq!(
        injected(&server, &c, "ghcr.io/acme/x:1").await,
        ["ghcr-acme"]
    );

    std::fs::write(
        &server.config_path,
        CONFIG.replace("secret: ghcr-acme", "secret: ghcr-rotated"),
    )
    .unwrap();
    eventually("the new config", Duration::from_secs(20), || async {
        injected(&server, &c, "ghcr.io/acme/x:1").await == ["ghcr-rotated"]
    })
    .await;

    std::fs::write(&server.config_path, "registries:\n  - name: broken\n").unwrap();
    metric_reaches(
        &server,
        r#"pullsecret_injector_config_reloads_total{result="failure"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        injected(&server, &c, "ghcr.io/acme/x:1").await,
        ["ghcr-rotated"],
        "old config stays in force"
    );
    let m = metrics(&server).await;
    assert_eq!(
        metric_value(
            &m,
            r#"pullsecret_injector_config_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
}

/// The reload watcher must not feed itself: reading the watched files to compare them
/// opens them, and inotify reports opens. An idle server opens its config about once per
/// 10 s poll, not dozens of times a second; an edit still reloads at once (well before
/// the next poll).
#[tokio::test]
async fn an_idle_server_does_not_keep_opening_its_files() {
    use notify::event::AccessKind;
    use notify::{EventKind, RecursiveMode, Watcher};
    let server = Server::start(CONFIG, &[]);
    // Let start-up reads (the first poll tick included) pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opens = Arc::new(AtomicUsize::new(0));
    let counted = opens.clone();
    let config_name = server.config_path.file_name().unwrap().to_owned();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && matches!(ev.kind, EventKind::Access(AccessKind::Open(_)))
            && ev.paths.iter().any(|p| p.file_name() == Some(&config_name))
        {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    })
    .unwrap();
    w.watch(server.dir.path(), RecursiveMode::NonRecursive)
        .unwrap();
    // The counter itself works: our own open is seen.
    std::fs::read(&server.config_path).unwrap();
    let window = Duration::from_secs(3);
    let start = Instant::now();
    while opens.load(Ordering::Relaxed) == 0 && start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        opens.load(Ordering::Relaxed) >= 1,
        "the watcher in this test sees no opens at all"
    );
    opens.store(0, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let idle = opens.load(Ordering::Relaxed);
    // At most one poll falls in the window.
    assert!(
        idle <= 1,
        "{idle} opens of the config in {window:?} while idle"
    );

    std::fs::write(
        &server.config_path,
        CONFIG.replace("secret: ghcr-acme", "secret: ghcr-rotated"),
    )
    .unwrap();
    let c = server.client();
    let start = Instant::now();
    while injected(&server, &c, "ghcr.io/acme/x:1").await != ["ghcr-rotated"] {
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "an edit was not picked up by the watcher (only the 10 s poll would)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a volume the way the kubelet writes the chart's projected volume:
/// `tls -> ..data/tls`, `..data -> ..gen<N>`, swapped atomically by a rename.
fn write_secret_volume(dir: &Path, generation: u32, cert: &str, key: &str) {
    let gen_dir = dir.join(format!("..gen{generation}")).join("tls");
    std::fs::create_dir_all(&gen_dir).unwrap();
    std::fs::write(gen_dir.join("tls.crt"), cert).unwrap();
    std::fs::write(gen_dir.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..gen{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("tls");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/tls", &link).unwrap();
    }
}

#[tokio::test]
async fn certificate_rotation_by_symlink_swap_fails_no_request() {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let old = certs::generate(&names, 30).unwrap();
    let new = certs::generate(&names, 30).unwrap();
    let vol = tempfile::tempdir().unwrap();
    write_secret_volume(vol.path(), 1, &old.cert_pem, &old.key_pem);
    let cert = vol.path().join("tls/tls.crt");
    let key = vol.path().join("tls/tls.key");
    let server = Server::start_tls(CONFIG, &cert, &key, &[]);
    let both = tempfile::tempdir().unwrap();
    let both_ca = both.path().join("ca.pem");
    std::fs::write(&both_ca, format!("{}{}", old.ca_pem, new.ca_pem)).unwrap();
    let new_ca = both.path().join("new.pem");
    std::fs::write(&new_ca, &new.ca_pem).unwrap();
    let old_ca = both.path().join("old.pem");
    std::fs::write(&old_ca, &old.ca_pem).unwrap();

    // load on fresh connections (each request does a handshake) while the cert rotates
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (url, ca, failures, done, stop) = (
            server.url("/mutate"),
            both_ca.clone(),
            failures.clone(),
            done.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let review = review_for(pod(&[("a", "ghcr.io/acme/x:1")]), "team-a", "CREATE");
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let c = client_trusting(&ca);
                match c.post(&url).json(&review).send().await {
                    Ok(r) if r.status() == 200 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    eventually("some load", Duration::from_secs(20), || async {
        done.load(Ordering::Relaxed) > 20
    })
    .await;

    // a broken rotation (key of another cert) is rejected; the old cert keeps serving
    write_secret_volume(vol.path(), 2, &new.cert_pem, &old.key_pem);
    metric_reaches(
        &server,
        r#"pullsecret_injector_tls_reloads_total{result="failure"}"#,
        1.0,
    )
    .await;
    let r = client_trusting(&old_ca)
        .get(server.url("/healthz"))
        .send()
        .await;
    assert!(
        r.is_ok(),
        "old certificate still served after a broken rotation"
    );

    write_secret_volume(vol.path(), 3, &new.cert_pem, &new.key_pem);
    eventually("the new certificate", Duration::from_secs(20), || async {
        client_trusting(&new_ca)
            .get(server.url("/healthz"))
            .send()
            .await
            .is_ok()
    })
    .await;
    let before = done.load(Ordering::Relaxed);
    eventually("load after rotation", Duration::from_secs(20), || async {
        done.load(Ordering::Relaxed) > before + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request may fail during rotation"
    );
    assert!(
        client_trusting(&old_ca)
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err(),
        "old cert retired"
    );
}

#[tokio::test]
async fn client_ca_admits_only_clients_with_a_certificate_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let b = certs::generate(&names, 30).unwrap();
    let (client_cert, client_key) = certs::issue(
        &b,
        &[],
        Some(("kube-apiserver", Some("system:masters"))),
        30,
    )
    .unwrap();
    let other = certs::generate(&names, 30).unwrap();
    let (other_cert, other_key) = certs::issue(&other, &[], Some(("intruder", None)), 30).unwrap();
    for (name, text) in [
        ("ca.crt", &b.ca_pem),
        ("tls.crt", &b.cert_pem),
        ("tls.key", &b.key_pem),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let client_ca = dir.path().join("ca.crt").to_string_lossy().into_owned();
    let server = Server::start_tls(
        CONFIG,
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &["--client-ca", &client_ca],
    );
    let with = |identity: Option<String>| {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(
                std::fs::read(dir.path().join("ca.crt")).unwrap().as_slice(),
            )
            .unwrap()])
            .timeout(Duration::from_secs(5));
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    assert!(
        with(None).get(server.url("/healthz")).send().await.is_err(),
        "no client cert"
    );
    assert!(
        with(Some(format!("{other_cert}{other_key}")))
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err(),
        "cert from another CA"
    );
    let ok = with(Some(format!("{client_cert}{client_key}")))
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// A request whose body is still arriving when SIGTERM lands is answered in full, new
/// connections are refused afterwards, and the process exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_reviews_then_exits_zero() {
    let mut server = Server::start(CONFIG, &[]);
    let ca = std::fs::read(server.ca_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let body = serde_json::to_vec(&review_for(
        pod(&[("a", "ghcr.io/acme/x:1")]),
        "team-a",
        "CREATE",
    ))
    .unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    tls.write_all(&body[..half]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // let the server start reading

    unsafe_kill(server.child.id(), "TERM");
    // new connections are refused once the listener is closed
    eventually("the listener to close", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&server.addr).await.is_err()
    })
    .await;
    tls.write_all(&body[half..]).await.unwrap();
    tls.flush().await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight review answered: {text}"
    );
    assert!(text.contains("\"patch\""), "{text}");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Opt-in soak: `cargo test --release --test operations -- --ignored soak`.
/// 60 s of keep-alive load; a config reload at 20 s and a certificate rotation at 40 s;
/// no request may fail and resident memory must stay flat after warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak_60s_with_reload_and_rotation() {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let old = certs::generate(&names, 30).unwrap();
    let (new_cert, new_key) = certs::issue(&old, &names, None, 30).unwrap();
    let vol = tempfile::tempdir().unwrap();
    write_secret_volume(vol.path(), 1, &old.cert_pem, &old.key_pem);
    let ca = vol.path().join("ca.pem");
    std::fs::write(&ca, &old.ca_pem).unwrap();
    let (cert, key) = (
        vol.path().join("tls/tls.crt"),
        vol.path().join("tls/tls.key"),
    );
    let server = Server::start_tls(CONFIG, &cert, &key, &[]);
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, ca, failures, done) = (
            server.url("/mutate"),
            ca.clone(),
            failures.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client_trusting(&ca);
            let review = review_for(
                pod(&[("a", "ghcr.io/acme/x:1"), ("b", "nginx")]),
                "team-a",
                "CREATE",
            );
            while Instant::now() < deadline {
                match c.post(&url).json(&review).send().await {
                    Ok(r) if r.status() == 200 => done.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("task {i}: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let warm = rss_kib(server.child.id());
    tokio::time::sleep(Duration::from_secs(10)).await;
    std::fs::write(
        &server.config_path,
        CONFIG.replace("secret: ghcr-acme", "secret: ghcr-b"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    write_secret_volume(vol.path(), 2, &new_cert, &new_key);
    for t in tasks {
        t.await.unwrap();
    }
    let end = rss_kib(server.child.id());
    let m = metrics(&server).await;
    eprintln!(
        "soak: {} requests, rss warm {warm} KiB, end {end} KiB",
        done.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(
        metric_value(
            &m,
            r#"pullsecret_injector_config_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            r#"pullsecret_injector_tls_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
    assert!(
        end < warm + warm / 4 + 4096,
        "memory grew from {warm} KiB to {end} KiB"
    );
}
