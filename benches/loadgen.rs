//! Load benchmark: our `/mutate` (1,000-entry config) against the bare-TLS floor, over
//! loopback HTTPS, in one process tree and one run.
//!
//! * This process is the client (hyper HTTP/1.1 over tokio-rustls, trusting a CA generated
//!   for the run). It re-executes itself twice as server children:
//!   `loadgen --serve ours DIR` and `loadgen --serve floor DIR`. Both serve through the
//!   crate's own `server::serve_tls` with the same `server::tls::server_config`; the floor's
//!   router is one POST route that reads the body and returns a fixed response, byte-for-byte
//!   the response ours gives for the typical request (so same size).
//! * Separate children give each server its own peak RSS (`VmHWM` of the child) and its own
//!   CPU time (sum of `/proc/<pid>/task/*/schedstat`), so the report has CPU per request
//!   too, which is far less sensitive than req/s to other load on the machine.
//! * Floor and ours are measured alternately in short rounds and compared as ratios.
//!
//! Run: `cargo bench --bench loadgen` (about 40 s). Tunables (environment):
//! `LOADGEN_CONNS` (keep-alive connections, default 16), `LOADGEN_SECS` (seconds per
//! round and target, default 2), `LOADGEN_ROUNDS` (default 3).
//!
//! `loadgen --profile-review N [SITES]` runs `admission::review` N times in-process on the
//! same requests (Pods of SITES image sites, default 5; no timing; a target for
//! `valgrind --tool=callgrind`).

mod common;

use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pullsecret_injector::admission::{self, Endpoint, NamespaceFacts};
use pullsecret_injector::cluster::NoCluster;
use pullsecret_injector::config::Config;
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::server::{self, Limits, tls};
use pullsecret_injector::webhook::Webhook;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// Registry entries in the served config.
const ENTRIES: usize = 1000;
/// Image sites of the typical Pod.
const SITES: usize = 5;
/// Distinct request bodies the client rotates through.
const VARIANTS: u64 = 16;
/// Connections for the new-connection-per-request runs.
const NEWCONN_CONNS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match args.get(1).map(String::as_str) {
        Some("--serve") => serve(&args[2..]),
        Some("--profile-review") => profile(
            args.get(2).and_then(|n| n.parse().ok()),
            args.get(3).and_then(|n| n.parse().ok()),
        ),
        _ => drive(), // `cargo bench` passes `--bench`
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e:#}");
        std::process::exit(1);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bodies() -> Vec<Bytes> {
    bodies_of(SITES)
}

fn bodies_of(sites: usize) -> Vec<Bytes> {
    (0..VARIANTS)
        .map(|seed| Bytes::from(common::review_body(seed, sites)))
        .collect()
}

// ---------------------------------------------------------------- server children

/// `--serve ours|floor DIR`: serve until stdin closes.
fn serve(args: &[String]) -> Result<()> {
    let [kind, dir] = args else {
        bail!("usage: loadgen --serve ours|floor DIR");
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let resolver = Arc::new(tls::ReloadingResolver::new(
            dir.join("tls.crt"),
            dir.join("tls.key"),
        )?);
        let tls_config = Arc::new(tls::server_config(resolver, None)?);
        let limits = Limits {
            drain_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        let app = match kind.as_str() {
            "ours" => {
                let cfg = Config::load(&dir.join("config.yaml"))?;
                let webhook = Webhook::new(
                    Arc::new(ArcSwap::from_pointee(cfg)),
                    Arc::new(NoCluster),
                    Arc::new(Metrics::new()),
                );
                webhook.serving.store(true, Ordering::Release);
                server::router(Arc::new(webhook), &limits)
            }
            "floor" => {
                let fixed = Bytes::from(std::fs::read(dir.join("floor-response.json"))?);
                Router::new().route(
                    "/mutate",
                    post(move |_body: Bytes| {
                        let fixed = fixed.clone();
                        async move { ([(header::CONTENT_TYPE, "application/json")], fixed) }
                    }),
                )
            }
            other => bail!("unknown server kind {other:?}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("PORT {}", listener.local_addr()?.port());
        let shutdown = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut sink = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut sink);
            })
            .await;
        };
        server::serve_tls(listener, tls_config, app, limits, shutdown).await
    })
}

/// A server child; closing its stdin stops it.
struct ServerProc {
    name: &'static str,
    port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProc {
    fn start(name: &'static str, dir: &Path) -> Result<ServerProc> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(name)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting server child")?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the child's port")?;
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("{name} server did not start (said {line:?})"))?;
        Ok(ServerProc {
            name,
            port,
            child,
            stdin,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far by all the child's threads.
    fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// `VmHWM` (peak resident set) and `VmRSS` of the child, in KiB.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                ensure!(
                    status.success(),
                    "{} server exited with {status}",
                    self.name
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        let _ = self.child.wait();
        bail!("{} server did not stop within 5 s", self.name)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sum of on-CPU nanoseconds of every thread of `pid` (`/proc/<pid>/task/*/schedstat`).
fn cpu_time(pid: u32) -> Duration {
    let mut ns: u64 = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

// ---------------------------------------------------------------- client

#[derive(Clone)]
struct Client {
    port: u16,
    tls: TlsConnector,
    bodies: Arc<Vec<Bytes>>,
}

type Sender = SendRequest<Full<Bytes>>;

impl Client {
    async fn connect(&self) -> Result<Sender> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let stream = self
            .tls
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One POST /mutate; returns the response body.
    async fn send(&self, sender: &mut Sender, i: usize, close: bool) -> Result<Bytes> {
        sender.ready().await?;
        let body = self.bodies[i % self.bodies.len()].clone();
        let mut req = Request::post("/mutate")
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json");
        if close {
            req = req.header(header::CONNECTION, "close");
        }
        let resp = sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        ensure!(
            status == StatusCode::OK,
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(bytes)
    }
}

/// What one load run measured.
#[derive(Debug, Default, Clone)]
struct Run {
    /// Latencies in microseconds.
    lat: Vec<u32>,
    errors: usize,
    elapsed: Duration,
    server_cpu: Duration,
    /// CPU time of this (client) process during the run.
    client_cpu: Duration,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.lat.extend(other.lat);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.server_cpu += other.server_cpu;
        self.client_cpu += other.client_cpu;
    }

    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per request.
    fn cpu_per_req(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / (self.lat.len().max(1) as f64)
    }

    /// Client CPU microseconds per request.
    fn client_cpu_per_req(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / (self.lat.len().max(1) as f64)
    }

    fn pct(&mut self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        self.lat.sort_unstable();
        let idx = ((p * self.lat.len() as f64).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[idx] as f64 / 1000.0
    }
}

/// Closed loop: `conns` connections each send back-to-back for `dur`. With `keep_alive`
/// each connection is opened before the clock starts; otherwise every request opens a
/// new connection (full TLS handshake, no resumption) and latency includes it.
async fn closed_loop(client: &Client, conns: usize, dur: Duration, keep_alive: bool) -> Run {
    let barrier = Arc::new(tokio::sync::Barrier::new(conns));
    let tasks: Vec<_> = (0..conns)
        .map(|k| {
            let client = client.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                let mut sender = if keep_alive {
                    client.connect().await.ok()
                } else {
                    None
                };
                barrier.wait().await;
                let start = Instant::now();
                let deadline = start + dur;
                let mut i = k;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let ok = async {
                        let mut s = match sender.take() {
                            Some(s) => s,
                            None => client.connect().await?,
                        };
                        client.send(&mut s, i, !keep_alive).await?;
                        if keep_alive {
                            sender = Some(s);
                        }
                        anyhow::Ok(())
                    }
                    .await;
                    match ok {
                        Ok(()) => lat.push(t0.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                    i += conns;
                }
                (lat, errors, start, Instant::now())
            })
        })
        .collect();
    let mut run = Run::default();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for t in tasks {
        let (lat, errors, start, end) = t.await.expect("load task");
        run.lat.extend(lat);
        run.errors += errors;
        first = Some(first.map_or(start, |f| f.min(start)));
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    run.elapsed = last.unwrap() - first.unwrap();
    run
}

/// Open loop: requests are due at a fixed `rate` (a pacer thread, not the 1 ms tokio
/// timer, keeps the schedule) and served by `conns` keep-alive connections; latency is
/// measured from the due time, so queueing behind a slow request counts (no coordinated
/// omission).
async fn open_loop(client: &Client, conns: usize, rate: f64, dur: Duration) -> Run {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut senders = Vec::new();
    for _ in 0..conns {
        if let Ok(s) = client.connect().await {
            senders.push(s);
        }
    }
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(k, mut sender)| {
            let client = client.clone();
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                let mut i = k;
                loop {
                    let due = { rx.lock().await.recv().await };
                    let Some(due) = due else { break };
                    match client.send(&mut sender, i, false).await {
                        Ok(_) => lat.push(due.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                    i += conns;
                }
                (lat, errors)
            })
        })
        .collect();
    let start = Instant::now();
    let pacer = std::thread::spawn(move || {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut due = start;
        while due < start + dur {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
            due += interval;
        }
    });
    pacer.join().expect("pacer thread");
    let mut run = Run::default();
    for t in tasks {
        let (lat, errors) = t.await.expect("load task");
        run.lat.extend(lat);
        run.errors += errors;
    }
    run.elapsed = start.elapsed();
    run
}

/// Runs `f` against a server, adding the server's and the client's CPU time to the result.
async fn measured<F: std::future::Future<Output = Run>>(server: &ServerProc, f: F) -> Run {
    let (server_before, client_before) = (server.cpu(), cpu_time(std::process::id()));
    let mut run = f.await;
    run.server_cpu = server.cpu().saturating_sub(server_before);
    run.client_cpu = cpu_time(std::process::id()).saturating_sub(client_before);
    run
}

fn row(scenario: &str, name: &str, run: &mut Run) -> String {
    format!(
        "| {scenario} | {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |",
        run.rps(),
        run.pct(0.50),
        run.pct(0.99),
        run.pct(0.999),
        run.cpu_per_req(),
        run.client_cpu_per_req(),
        run.lat.len(),
        run.errors,
    )
}

fn drive() -> Result<()> {
    let conns: usize = env_or("LOADGEN_CONNS", 16);
    let secs: f64 = env_or("LOADGEN_SECS", 2.0);
    let rounds: usize = env_or("LOADGEN_ROUNDS", 3);
    let round = Duration::from_secs_f64(secs);

    // Corpus, config and the expected answers, computed in-process.
    let dir = tempfile::tempdir()?;
    let yaml = common::config_yaml(ENTRIES);
    std::fs::write(dir.path().join("config.yaml"), &yaml)?;
    let cfg = Config::parse(&yaml, "config.yaml")?;
    let bodies = bodies();
    let facts = NamespaceFacts::default();
    let expected: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| admission::review(Endpoint::Mutate, b, &cfg, &facts))
        .collect::<Result<_, _>>()?;
    std::fs::write(dir.path().join("floor-response.json"), &expected[0])?;
    let bundle = pullsecret_injector::certs::generate(&["localhost".into()], 1)?;
    std::fs::write(dir.path().join("tls.crt"), &bundle.cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &bundle.key_pem)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(bundle.ca_pem.as_bytes())?)?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The API server's webhook client does not resume sessions: every new connection is a
    // full handshake.
    client_tls.resumption = rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(client_tls));

    let ours = ServerProc::start("ours", dir.path())?;
    let floor = ServerProc::start("floor", dir.path())?;
    let (hwm_idle_ours, _) = ours.memory();
    let (hwm_idle_floor, _) = floor.memory();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let bodies = Arc::new(bodies);
    let client_for = |s: &ServerProc| Client {
        port: s.port,
        tls: connector.clone(),
        bodies: bodies.clone(),
    };
    let (c_ours, c_floor) = (client_for(&ours), client_for(&floor));

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let req_sizes: Vec<usize> = bodies.iter().map(Bytes::len).collect();
    println!("# loadgen report");
    println!();
    println!(
        "machine: {cpus} CPUs ({model}); client, both servers (2 tokio workers each) and anything else running share them"
    );
    println!(
        "workload: POST /mutate, {VARIANTS} Pods with {SITES} image sites, requests {}-{} bytes, response {} bytes; config with {ENTRIES} registry entries",
        req_sizes.iter().min().unwrap(),
        req_sizes.iter().max().unwrap(),
        expected[0].len()
    );
    println!(
        "runs: {rounds} alternating rounds of {secs} s per target; keep-alive with {conns} connections; new connection per request with {NEWCONN_CONNS} connections"
    );
    println!();

    let report = rt.block_on(async {
        // Correctness first: both answer, and ours answers exactly what review() does.
        for (i, want) in expected.iter().enumerate() {
            let mut s = c_ours.connect().await?;
            let got = c_ours.send(&mut s, i, true).await?;
            ensure!(
                got.as_ref() == want.as_slice(),
                "ours answered request {i} differently from admission::review"
            );
        }
        let mut s = c_floor.connect().await?;
        let got = c_floor.send(&mut s, 0, true).await?;
        ensure!(got.as_ref() == expected[0].as_slice(), "floor body differs");

        // Warm-up (connections, allocator, caches).
        let warm = Duration::from_millis(300);
        closed_loop(&c_floor, conns, warm, true).await;
        closed_loop(&c_ours, conns, warm, true).await;

        let mut lines = Vec::new();
        let mut ratios = Vec::new();
        let mut ka_ours_rps = 0.0;
        for (scenario, keep_alive, n) in [
            ("keep-alive", true, conns),
            ("new conn/req", false, NEWCONN_CONNS),
        ] {
            let (mut f_all, mut o_all) = (Run::default(), Run::default());
            let (mut best_f, mut best_o) = (0.0f64, 0.0f64);
            let mut per_round = Vec::new();
            for r in 0..rounds {
                // Alternate who goes first so a drift in background load hits both.
                let (first, second) = if r % 2 == 0 {
                    ((&floor, &c_floor), (&ours, &c_ours))
                } else {
                    ((&ours, &c_ours), (&floor, &c_floor))
                };
                let a = measured(first.0, closed_loop(first.1, n, round, keep_alive)).await;
                let b = measured(second.0, closed_loop(second.1, n, round, keep_alive)).await;
                let (f, o) = if r % 2 == 0 { (a, b) } else { (b, a) };
                per_round.push(o.rps() / f.rps());
                best_f = best_f.max(f.rps());
                best_o = best_o.max(o.rps());
                f_all.merge(f);
                o_all.merge(o);
            }
            if keep_alive {
                ka_ours_rps = o_all.rps();
            }
            lines.push(row(scenario, "floor", &mut f_all));
            lines.push(row(scenario, "ours", &mut o_all));
            ratios.push(format!(
                "| {scenario} | {:.2} | {} | {:.2} | {:.2} | {:.2} |",
                o_all.rps() / f_all.rps(),
                per_round
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                o_all.pct(0.99) / f_all.pct(0.99),
                o_all.cpu_per_req() / f_all.cpu_per_req(),
                o_all.cpu_per_req() - f_all.cpu_per_req(),
            ));
        }

        // Half of ours' measured keep-alive saturation, open loop, same rate for both.
        let rate = ka_ours_rps / 2.0;
        let half = Duration::from_secs_f64(secs * 2.0);
        let mut o = measured(&ours, open_loop(&c_ours, conns, rate, half)).await;
        let mut f = measured(&floor, open_loop(&c_floor, conns, rate, half)).await;
        let scenario = format!("open loop {rate:.0}/s");
        lines.push(row(&scenario, "floor", &mut f));
        lines.push(row(&scenario, "ours", &mut o));
        ratios.push(format!(
            "| {scenario} | {:.2} | - | {:.2} | {:.2} | {:.2} |",
            o.rps() / f.rps(),
            o.pct(0.99) / f.pct(0.99),
            o.cpu_per_req() / f.cpu_per_req(),
            o.cpu_per_req() - f.cpu_per_req(),
        ));
        let half_p99 = o.pct(0.99);
        anyhow::Ok((lines, ratios, half_p99, ka_ours_rps))
    })?;
    let (lines, ratios, half_p99, ka_ours_rps) = report;

    let (hwm_ours, rss_ours) = ours.memory();
    let (hwm_floor, rss_floor) = floor.memory();
    println!("## Absolute figures (this run; latency in ms, CPU time in µs per request)");
    println!();
    println!(
        "| scenario | server | req/s | p50 | p99 | p99.9 | server CPU µs/req | client CPU µs/req | requests | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &lines {
        println!("{l}");
    }
    println!();
    println!("## Ratios ours/floor (same run)");
    println!();
    println!(
        "| scenario | throughput | throughput per round | p99 latency | server CPU per request | extra CPU µs/req |"
    );
    println!("|---|---:|---|---:|---:|---:|");
    for r in &ratios {
        println!("{r}");
    }
    println!();
    println!("## Memory of the server processes (KiB; VmHWM = peak RSS over the whole run)");
    println!();
    println!("| server | VmHWM idle | VmHWM after load | VmRSS after load |");
    println!("|---|---:|---:|---:|");
    println!("| floor | {hwm_idle_floor} | {hwm_floor} | {rss_floor} |");
    println!("| ours ({ENTRIES} entries) | {hwm_idle_ours} | {hwm_ours} | {rss_ours} |");
    println!();
    let ka_ratio: f64 = ratios
        .first()
        .and_then(|r| r.split('|').nth(2))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("## Targets");
    println!();
    println!(
        "- keep-alive throughput >= 0.8 x floor: {ka_ratio:.2} -> {}",
        verdict(ka_ratio >= 0.8)
    );
    println!(
        "- p99 < 2 ms at half saturation ({:.0}/s): {half_p99:.2} ms -> {}",
        ka_ours_rps / 2.0,
        verdict(half_p99 < 2.0)
    );
    println!(
        "- peak RSS < 50 MiB with {ENTRIES} entries: {:.1} MiB -> {}",
        hwm_ours as f64 / 1024.0,
        verdict(hwm_ours < 50 * 1024)
    );
    ours.stop()?;
    floor.stop()?;
    Ok(())
}

// ---------------------------------------------------------------- profiling target

/// Runs the full review on the load-test requests `n` times (default 2,000).
fn profile(n: Option<usize>, sites: Option<usize>) -> Result<()> {
    let n = n.unwrap_or(2000);
    let cfg = common::config(ENTRIES);
    let bodies = bodies_of(sites.unwrap_or(SITES));
    let mean = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();
    println!("mean body {mean} bytes");
    let facts = NamespaceFacts::default();
    let mut bytes = 0;
    for i in 0..n {
        let out = admission::review(Endpoint::Mutate, &bodies[i % bodies.len()], &cfg, &facts)
            .map_err(|e| anyhow!("{e}"))?;
        bytes += std::hint::black_box(out).len();
    }
    println!("{n} reviews, {bytes} response bytes");
    Ok(())
}
