//! Load benchmark: our `/mutate` (1,000-entry config) against the bare-TLS floor and two
//! peers, over loopback HTTPS, in one process tree and one run.
//!
//! * This process is the client (hyper over tokio-rustls, trusting a CA generated for the
//!   run, no TLS session resumption, like the API server's webhook client). It starts the
//!   servers as children, each its own process so each has its own CPU time and peak RSS:
//!   - `floor`: `loadgen --serve floor DIR`, the crate's `server::serve_tls` with one POST
//!     route that reads the body and returns a fixed answer (ours' answer to the first
//!     request of that size, byte for byte);
//!   - `ours`: `loadgen --serve ours DIR`, `server::router` + `Webhook` + `NoCluster`;
//!   - `kube-rs`: `loadgen --serve kube-rs DIR`, the kube-rs-example-style peer of
//!     `benches/peers/kube_rs.rs` behind the same `serve_tls`;
//!   - `Go`: the Go peer of `benches/peers/go` (`k8s.io/api` types, `encoding/json`,
//!     `net/http`), built by `benches/peers/build.sh`; `LOADGEN_GO_PEER` names the binary
//!     (default `target/peers/go-peer`; without it the Go column is left out and said so).
//! * Where the machine has two or more CPUs, the client is pinned to one and every server
//!   to another (`sched_setaffinity` before exec, so every thread inherits it; tokio and
//!   Go size their worker pools from that mask: one worker each). The primary figure is
//!   server CPU per review (`/proc/<pid>/task/*/schedstat`), far less noisy than req/s.
//! * Every cell is measured `LOADGEN_ROUNDS` times (default 3), the targets taking turns
//!   in a rotating order, and reported as median [min–max]. Scenarios: HTTP/1.1
//!   keep-alive (16 connections), HTTP/2 (2 connections, 8 streams each, as the API
//!   server's client multiplexes), and HTTP/1.1 with a new connection per request (8
//!   connections, full handshake each); then an open loop at half of ours' HTTP/1.1
//!   saturation (latency from each request's due time, so queueing counts).
//! * Before any load: ours' HTTP answers must equal `admission::review()` in-process, and
//!   each peer's patch, applied to the Pod, must give the same `imagePullSecrets` and
//!   pull policies as ours'.
//!
//! Run: `benches/run.sh` (builds the Go peer, then this). Tunables (environment):
//! `LOADGEN_SECS` (seconds per cell and round, default 2), `LOADGEN_ROUNDS` (default 3),
//! `LOADGEN_PIN=0` (no pinning).
//!
//! `loadgen --profile-review N [SITES]` runs `admission::review` N times in-process on the
//! same requests (Pods of SITES image sites, default 5; a target for
//! `valgrind --tool=callgrind`). It also prints the wall time per review: the mean over
//! all N and the fastest of 10 equal chunks (the one least disturbed by other load).

mod common;
#[path = "peers/kube_rs.rs"]
mod kube_peer;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _};
use std::os::unix::process::CommandExt as _;
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
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pullsecret_injector::admission::{self, Endpoint, NamespaceFacts};
use pullsecret_injector::cluster::NoCluster;
use pullsecret_injector::config::Config;
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::server::{self, Limits, tls};
use pullsecret_injector::webhook::Webhook;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// Registry entries in the served config.
const ENTRIES: usize = 1000;
/// Image sites of the Pods measured: 4.4 KB and 22.2 KB reviews.
const SIZES: [usize; 2] = [1, 30];
/// Image sites of the default profiling Pod.
const PROFILE_SITES: usize = 5;
/// Distinct request bodies the client rotates through, per size.
const VARIANTS: u64 = 16;
/// HTTP/1.1 keep-alive connections.
const H1_CONNS: usize = 16;
/// HTTP/2 connections and concurrent streams on each.
const H2_CONNS: usize = 2;
const H2_STREAMS: usize = 8;
/// Connections for the new-connection-per-request runs.
const NEWCONN_CONNS: usize = 8;
/// Seconds the idle server's CPU is watched for.
const IDLE_SECS: u64 = 3;

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

fn bodies_of(sites: usize) -> Vec<Bytes> {
    (0..VARIANTS)
        .map(|seed| Bytes::from(common::review_body(seed, sites)))
        .collect()
}

/// The peers' form of the served config: `{"entries": [{"match", "secret", "alwaysPull"}]}`.
/// Namespace scopes are left out: every request comes from a namespace all of them include.
fn peer_config(yaml: &str) -> Result<String> {
    let v: Value = serde_saphyr::from_str(yaml).context("reading the generated config")?;
    let entries: Vec<Value> = v["registries"]
        .as_array()
        .ok_or_else(|| anyhow!("config has no registries"))?
        .iter()
        .map(|r| {
            serde_json::json!({
                "match": r["match"],
                "secret": r["secret"],
                "alwaysPull": r["alwaysPull"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    Ok(serde_json::json!({ "entries": entries }).to_string())
}

// ---------------------------------------------------------------- pinning

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set the call fills in; its size is passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (and every thread it starts later) to `cpu`.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as above; async-signal-safe, so usable between fork and exec.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- server children

/// `--serve ours|floor|kube-rs DIR`: serve until stdin closes.
fn serve(args: &[String]) -> Result<()> {
    let [kind, dir] = args else {
        bail!("usage: loadgen --serve ours|floor|kube-rs DIR");
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
                // One fixed answer per size: a request up to `split` bytes gets the first.
                let small = Bytes::from(std::fs::read(dir.join("floor-small.json"))?);
                let large = Bytes::from(std::fs::read(dir.join("floor-large.json"))?);
                let split: usize = std::fs::read_to_string(dir.join("floor-split"))?
                    .trim()
                    .parse()?;
                Router::new().route(
                    "/mutate",
                    post(move |body: Bytes| {
                        let fixed = if body.len() <= split {
                            small.clone()
                        } else {
                            large.clone()
                        };
                        async move { ([(header::CONTENT_TYPE, "application/json")], fixed) }
                    }),
                )
            }
            "kube-rs" => {
                let rules = kube_peer::Rules::from_json(&std::fs::read_to_string(
                    dir.join("peer-config.json"),
                )?)?;
                kube_peer::router(Arc::new(rules))
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
    /// Starts `program args…`, pinned to `cpu` if given, and reads its `PORT n` line.
    fn start(
        name: &'static str,
        program: &Path,
        args: &[&std::ffi::OsStr],
        cpu: Option<usize>,
    ) -> Result<ServerProc> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cpu) = cpu {
            // SAFETY: `pin_to` only calls sched_setaffinity, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || pin_to(cpu));
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} server ({})", program.display()))?;
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

/// How requests reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    /// HTTP/1.1, `H1_CONNS` keep-alive connections.
    H1,
    /// HTTP/2, `H2_CONNS` connections with `H2_STREAMS` concurrent streams each.
    H2,
    /// HTTP/1.1, a new connection (full TLS handshake) per request.
    NewConn,
}

impl Proto {
    const ALL: [Proto; 3] = [Proto::H1, Proto::H2, Proto::NewConn];

    fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1 keep-alive",
            Proto::H2 => "HTTP/2",
            Proto::NewConn => "HTTP/1.1 new conn/req",
        }
    }

    /// Requests in flight at once.
    fn concurrency(self) -> usize {
        match self {
            Proto::H1 => H1_CONNS,
            Proto::H2 => H2_CONNS * H2_STREAMS,
            Proto::NewConn => NEWCONN_CONNS,
        }
    }
}

#[derive(Clone)]
struct Client {
    port: u16,
    h1: TlsConnector,
    h2: TlsConnector,
    bodies: Arc<Vec<Bytes>>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Client {
    async fn connect(&self, proto: Proto) -> Result<Sender> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = if proto == Proto::H2 {
            &self.h2
        } else {
            &self.h1
        };
        let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
        let io = TokioIo::new(stream);
        Ok(if proto == Proto::H2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(sender)
        })
    }

    /// One POST /mutate; returns the response body.
    async fn send(&self, sender: &mut Sender, i: usize, close: bool) -> Result<Bytes> {
        let body = self.bodies[i % self.bodies.len()].clone();
        let req = Request::post(match sender {
            Sender::H1(_) => "/mutate",
            Sender::H2(_) => "https://localhost/mutate",
        })
        .header(header::CONTENT_TYPE, "application/json");
        let req = match sender {
            Sender::H1(_) if close => req
                .header(header::HOST, "localhost")
                .header(header::CONNECTION, "close"),
            Sender::H1(_) => req.header(header::HOST, "localhost"),
            Sender::H2(_) => req,
        };
        let req = req.body(Full::new(body))?;
        let resp = match sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
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

    /// Latency percentile in milliseconds.
    fn pct(&mut self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        self.lat.sort_unstable();
        let idx = ((p * self.lat.len() as f64).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[idx] as f64 / 1000.0
    }
}

/// Closed loop for `dur`: `proto.concurrency()` tasks each send back to back. Keep-alive
/// and HTTP/2 connections are opened before the clock starts; with `NewConn` every
/// request opens its own and its latency includes the handshake.
async fn closed_loop(client: &Client, proto: Proto, dur: Duration) -> Run {
    let tasks_n = proto.concurrency();
    let mut shared = Vec::new();
    if proto == Proto::H2 {
        for _ in 0..H2_CONNS {
            if let Ok(Sender::H2(s)) = client.connect(proto).await {
                shared.push(s);
            }
        }
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks_n));
    let tasks: Vec<_> = (0..tasks_n)
        .map(|k| {
            let client = client.clone();
            let barrier = barrier.clone();
            let h2 = shared.get(k % shared.len().max(1)).cloned();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                let mut sender = match proto {
                    Proto::H1 => client.connect(proto).await.ok(),
                    Proto::H2 => h2.map(Sender::H2),
                    Proto::NewConn => None,
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
                            None => client.connect(proto).await?,
                        };
                        client.send(&mut s, i, proto == Proto::NewConn).await?;
                        if proto != Proto::NewConn {
                            sender = Some(s);
                        }
                        anyhow::Ok(())
                    }
                    .await;
                    match ok {
                        Ok(()) => lat.push(t0.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                    i += tasks_n;
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
/// timer, keeps the schedule) and served by `H1_CONNS` keep-alive connections; latency is
/// measured from the due time, so queueing behind a slow request counts (no coordinated
/// omission).
async fn open_loop(client: &Client, rate: f64, dur: Duration) -> Run {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut senders = Vec::new();
    for _ in 0..H1_CONNS {
        if let Ok(s) = client.connect(Proto::H1).await {
            senders.push(s);
        }
    }
    let conns = senders.len().max(1);
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

// ---------------------------------------------------------------- checks and statistics

/// What an answer does to the Pod of `request`: the names in `imagePullSecrets` (sorted,
/// duplicates kept) and every container's pull policy, once its patch is applied.
type Effect = (Vec<String>, Vec<Option<String>>);

fn effect(request: &[u8], answer: &[u8]) -> Result<Effect> {
    let req: Value = serde_json::from_slice(request)?;
    let ans: Value = serde_json::from_slice(answer).context("answer is not JSON")?;
    let resp = &ans["response"];
    ensure!(resp["allowed"] == true, "not allowed: {resp}");
    ensure!(
        resp["uid"] == req["request"]["uid"],
        "answer for another uid"
    );
    let mut pod = req["request"]["object"].clone();
    // base64, as Go's encoding/json writes a `[]byte`; kube-core 5 writes its `Vec<u8>`
    // as an array of numbers, which Go's decoder (the API server's) reads as well.
    let bytes = match &resp["patch"] {
        Value::Null => None,
        Value::String(p) => Some(base64::engine::general_purpose::STANDARD.decode(p)?),
        Value::Array(a) => Some(
            a.iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| anyhow!("patch array holds a non-byte"))?,
        ),
        other => bail!("patch is {other}"),
    };
    if let Some(bytes) = bytes {
        let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
        json_patch::patch(&mut pod, &patch.0)?;
    }
    let mut secrets: Vec<String> = pod["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .collect();
    secrets.sort();
    let policies = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| {
            pod["spec"][*l]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["imagePullPolicy"].as_str().map(String::from))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((secrets, policies))
}

/// How many `imagePullSecrets` the request's Pod has.
fn secrets_in(request: &[u8]) -> Result<usize> {
    let req: Value = serde_json::from_slice(request)?;
    Ok(req["request"]["object"]["spec"]["imagePullSecrets"]
        .as_array()
        .map_or(0, Vec::len))
}

/// (min, median, max); the median of an even count is the mean of the middle two.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], med, v[n - 1])
}

fn median(v: Vec<f64>) -> f64 {
    spread(v).1
}

/// `median [min–max]` with `prec` decimals.
fn show(v: Vec<f64>, prec: usize) -> String {
    let (lo, med, hi) = spread(v);
    format!("{med:.prec$} [{lo:.prec$}–{hi:.prec$}]")
}

// ---------------------------------------------------------------- the run

struct Target {
    name: &'static str,
    proc: ServerProc,
    /// One client per Pod size.
    clients: Vec<Client>,
    /// Ours' answers are compared byte for byte; the others' by their effect.
    exact: bool,
}

fn drive() -> Result<()> {
    let secs: f64 = env_or("LOADGEN_SECS", 2.0);
    let rounds: usize = env_or("LOADGEN_ROUNDS", 3).max(1);
    let pin: bool = env_or("LOADGEN_PIN", 1) != 0;
    let round = Duration::from_secs_f64(secs);

    // Pin before any thread exists: the runtime's workers inherit the mask.
    let cpus = allowed_cpus();
    let (client_cpu, server_cpu) = if pin && cpus.len() >= 2 {
        (Some(cpus[0]), Some(cpus[1]))
    } else {
        (None, None)
    };
    if let Some(c) = client_cpu {
        pin_to(c).context("pinning the client")?;
    }

    // Corpus, config and the expected answers, computed in-process.
    let dir = tempfile::tempdir()?;
    let yaml = common::config_yaml(ENTRIES);
    std::fs::write(dir.path().join("config.yaml"), &yaml)?;
    std::fs::write(dir.path().join("peer-config.json"), peer_config(&yaml)?)?;
    let cfg = Config::parse(&yaml, "config.yaml")?;
    let facts = NamespaceFacts::default();
    let bodies: Vec<Arc<Vec<Bytes>>> = SIZES.iter().map(|&s| Arc::new(bodies_of(s))).collect();
    let expected: Vec<Vec<Vec<u8>>> = bodies
        .iter()
        .map(|bs| {
            bs.iter()
                .map(|b| admission::review(Endpoint::Mutate, b, &cfg, &facts))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;
    let size_name: Vec<String> = bodies
        .iter()
        .map(|bs| {
            let mean = bs.iter().map(Bytes::len).sum::<usize>() as f64 / bs.len() as f64;
            format!("{:.1} KB", mean / 1000.0)
        })
        .collect();
    let split = bodies[0].iter().map(Bytes::len).max().unwrap_or(0);
    ensure!(
        bodies[1].iter().all(|b| b.len() > split),
        "the two sizes overlap"
    );
    std::fs::write(dir.path().join("floor-small.json"), &expected[0][0])?;
    std::fs::write(dir.path().join("floor-large.json"), &expected[1][0])?;
    std::fs::write(dir.path().join("floor-split"), split.to_string())?;
    let bundle = pullsecret_injector::certs::generate(&["localhost".into()], 1)?;
    std::fs::write(dir.path().join("tls.crt"), &bundle.cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &bundle.key_pem)?;

    let connector = |alpn: &[u8]| -> Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(bundle.ca_pem.as_bytes())?)?;
        let mut c = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        // The API server's webhook client does not resume sessions: every new connection
        // is a full handshake.
        c.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConnector::from(Arc::new(c)))
    };
    let (h1, h2) = (connector(b"http/1.1")?, connector(b"h2")?);

    let exe = std::env::current_exe()?;
    let ours_arg = |kind: &'static str| -> Vec<&std::ffi::OsStr> {
        vec!["--serve".as_ref(), kind.as_ref(), dir.path().as_os_str()]
    };
    let mut procs = vec![
        (
            "floor",
            ServerProc::start("floor", &exe, &ours_arg("floor"), server_cpu)?,
            false,
        ),
        (
            "ours",
            ServerProc::start("ours", &exe, &ours_arg("ours"), server_cpu)?,
            true,
        ),
        (
            "kube-rs",
            ServerProc::start("kube-rs", &exe, &ours_arg("kube-rs"), server_cpu)?,
            false,
        ),
    ];
    let go_peer = std::env::var_os("LOADGEN_GO_PEER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/peers/go-peer"));
    let go_note = if go_peer.is_file() {
        procs.push((
            "Go",
            ServerProc::start(
                "Go",
                &go_peer,
                &["--serve".as_ref(), dir.path().as_os_str()],
                server_cpu,
            )?,
            false,
        ));
        format!("Go peer: {}", go_peer.display())
    } else {
        format!(
            "Go peer: NOT MEASURED ({} is missing; benches/peers/build.sh builds it)",
            go_peer.display()
        )
    };
    let targets: Vec<Target> = procs
        .into_iter()
        .map(|(name, proc, exact)| {
            let clients = bodies
                .iter()
                .map(|b| Client {
                    port: proc.port,
                    h1: h1.clone(),
                    h2: h2.clone(),
                    bodies: b.clone(),
                })
                .collect();
            Target {
                name,
                proc,
                clients,
                exact,
            }
        })
        .collect();
    let idx = |name: &str| targets.iter().position(|t| t.name == name).expect("target");
    let (floor_i, ours_i) = (idx("floor"), idx("ours"));
    let peers: Vec<usize> = (0..targets.len())
        .filter(|&i| i != floor_i && i != ours_i)
        .collect();
    let hwm_idle: Vec<u64> = targets.iter().map(|t| t.proc.memory().0).collect();

    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("# loadgen report");
    println!();
    println!(
        "machine: {} CPUs ({model}); {}",
        cpus.len(),
        match (client_cpu, server_cpu) {
            (Some(c), Some(s)) => format!(
                "client pinned to CPU {c}, every server to CPU {s} (one at a time under load)"
            ),
            _ => "nothing pinned; client and servers share the CPUs".into(),
        }
    );
    for (si, sites) in SIZES.iter().enumerate() {
        println!(
            "workload {}: POST /mutate, {VARIANTS} Pods with {sites} image site(s), requests {}-{} bytes, ours' answers {}-{} bytes; config with {ENTRIES} registry entries",
            size_name[si],
            bodies[si].iter().map(Bytes::len).min().unwrap_or(0),
            bodies[si].iter().map(Bytes::len).max().unwrap_or(0),
            expected[si].iter().map(Vec::len).min().unwrap_or(0),
            expected[si].iter().map(Vec::len).max().unwrap_or(0),
        );
    }
    println!("{go_note}");
    println!(
        "runs: {rounds} rounds of {secs} s per cell, targets in rotating order; HTTP/1.1 keep-alive with {H1_CONNS} connections; HTTP/2 with {H2_CONNS} connections x {H2_STREAMS} streams; new connection per request with {NEWCONN_CONNS} connections"
    );
    println!();

    // One client worker per client core: two workers time-sliced on one pinned core
    // stall each other for milliseconds, which showed up as the servers' tail latency.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if client_cpu.is_some() { 1 } else { 2 })
        .enable_all()
        .build()?;
    type Cells = BTreeMap<(usize, Proto, usize), Vec<Run>>;
    let (cells, open): (Cells, Cells) = rt.block_on(async {
        // Correctness first, over both protocols: ours answers exactly what review() does,
        // the floor its fixed answer, and each peer's patch has ours' effect.
        for (si, exp) in expected.iter().enumerate() {
            let mut injected = 0;
            for (i, want) in exp.iter().enumerate() {
                let req = &bodies[si][i];
                let want_effect = effect(req, want)?;
                if want_effect.0.len() > secrets_in(req)? {
                    injected += 1;
                }
                for t in &targets {
                    for proto in [Proto::H1, Proto::H2] {
                        let mut s = t.clients[si].connect(proto).await?;
                        let got = t.clients[si].send(&mut s, i, proto == Proto::H1).await?;
                        if t.name == "floor" {
                            ensure!(i > 0 || got.as_ref() == want.as_slice(), "floor body differs");
                        } else if t.exact {
                            ensure!(
                                got.as_ref() == want.as_slice(),
                                "{} answered request {i} ({}) differently from admission::review",
                                t.name,
                                size_name[si]
                            );
                        } else {
                            let e = effect(req, &got)
                                .with_context(|| format!("{}'s answer to request {i}", t.name))?;
                            ensure!(
                                e == want_effect,
                                "{} injects differently from ours on request {i} ({}): {e:?} vs {want_effect:?}",
                                t.name,
                                size_name[si]
                            );
                        }
                    }
                }
            }
            ensure!(injected > 0, "no request of {} gets a secret", size_name[si]);
        }

        // Warm-up (connections, allocators, caches, Go's heap).
        for t in &targets {
            for c in &t.clients {
                closed_loop(c, Proto::H1, Duration::from_millis(300)).await;
            }
        }

        let mut cells = Cells::new();
        for si in 0..SIZES.len() {
            for proto in Proto::ALL {
                for r in 0..rounds {
                    // A rotating order, so a drift in background load hits everyone.
                    for k in 0..targets.len() {
                        let ti = (k + r) % targets.len();
                        let t = &targets[ti];
                        let run = measured(&t.proc, closed_loop(&t.clients[si], proto, round)).await;
                        cells.entry((si, proto, ti)).or_default().push(run);
                    }
                }
            }
        }

        // Open loop at half of ours' HTTP/1.1 saturation, same rate for ours and the floor.
        let mut open = Cells::new();
        for si in 0..SIZES.len() {
            let rate = median(cells[&(si, Proto::H1, ours_i)].iter().map(Run::rps).collect()) / 2.0;
            for r in 0..rounds {
                let order = if r % 2 == 0 { [ours_i, floor_i] } else { [floor_i, ours_i] };
                for ti in order {
                    let t = &targets[ti];
                    let run = measured(&t.proc, open_loop(&t.clients[si], rate, round.mul_f64(1.5))).await;
                    open.entry((si, Proto::H1, ti)).or_default().push(run);
                }
            }
        }
        anyhow::Ok((cells, open))
    })?;
    drop(rt); // closes every connection

    // Idle: what each server burns with nothing to do.
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<Duration> = targets.iter().map(|t| t.proc.cpu()).collect();
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let idle: Vec<Duration> = targets
        .iter()
        .zip(&before)
        .map(|(t, b)| t.proc.cpu().saturating_sub(*b))
        .collect();

    report(
        &targets, &size_name, &cells, &open, rounds, floor_i, ours_i, &peers, &hwm_idle, &idle,
    );
    for t in targets {
        t.proc.stop()?;
    }
    Ok(())
}

/// Prints the report: every figure is median [min–max] over the rounds.
#[allow(clippy::too_many_arguments)]
fn report(
    targets: &[Target],
    size_name: &[String],
    cells: &BTreeMap<(usize, Proto, usize), Vec<Run>>,
    open: &BTreeMap<(usize, Proto, usize), Vec<Run>>,
    rounds: usize,
    floor_i: usize,
    ours_i: usize,
    peers: &[usize],
    hwm_idle: &[u64],
    idle: &[Duration],
) {
    let per_round = |si: usize, p: Proto, ti: usize, f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
        cells[&(si, p, ti)].iter().map(f).collect()
    };
    // Paired by round: `num` of round r over `den` of round r.
    let ratio =
        |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> { a.iter().zip(&b).map(|(x, y)| x / y).collect() };
    // The best peer of each round: least CPU, or most req/s.
    let best_peer = |si: usize, p: Proto, f: &dyn Fn(&Run) -> f64, most: bool| -> Vec<f64> {
        (0..rounds)
            .map(|r| {
                let vals = peers.iter().map(|&ti| f(&cells[&(si, p, ti)][r]));
                if most {
                    vals.fold(f64::NAN, f64::max)
                } else {
                    vals.fold(f64::NAN, f64::min)
                }
            })
            .collect()
    };
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let header = |extra: &[&str]| {
        let cols: Vec<&str> = ["Pod", "protocol"]
            .iter()
            .copied()
            .chain(names.iter().copied())
            .chain(extra.iter().copied())
            .collect();
        println!("| {} |", cols.join(" | "));
        println!("|---|---|{}", "---:|".repeat(cols.len() - 2));
    };
    let cpu = |r: &Run| r.cpu_per_req();
    let rps = |r: &Run| r.rps();

    println!("## Server CPU per review (µs; median [min–max] of {rounds} rounds)");
    println!();
    header(&["ours ÷ floor", "best peer ÷ ours"]);
    for (si, name) in size_name.iter().enumerate() {
        for p in Proto::ALL {
            let mut row = vec![name.clone(), p.label().to_string()];
            for ti in 0..targets.len() {
                row.push(show(per_round(si, p, ti, &cpu), 1));
            }
            let ours = per_round(si, p, ours_i, &cpu);
            row.push(show(
                ratio(ours.clone(), per_round(si, p, floor_i, &cpu)),
                2,
            ));
            row.push(show(ratio(best_peer(si, p, &cpu, false), ours), 1));
            println!("| {} |", row.join(" | "));
        }
    }
    println!();
    println!("## Throughput (req/s; median [min–max]) and ours' client CPU");
    println!();
    header(&["ours ÷ best peer", "client CPU µs/req (ours)"]);
    for (si, name) in size_name.iter().enumerate() {
        for p in Proto::ALL {
            let mut row = vec![name.clone(), p.label().to_string()];
            for ti in 0..targets.len() {
                row.push(show(per_round(si, p, ti, &rps), 0));
            }
            row.push(show(
                ratio(per_round(si, p, ours_i, &rps), best_peer(si, p, &rps, true)),
                1,
            ));
            row.push(show(
                per_round(si, p, ours_i, &|r: &Run| r.client_cpu_per_req()),
                1,
            ));
            println!("| {} |", row.join(" | "));
        }
    }
    println!();
    println!("## Closed-loop latency (ms; p50 / p99, medians of the rounds)");
    println!();
    header(&[]);
    let mut errors = vec![0usize; targets.len()];
    for (si, name) in size_name.iter().enumerate() {
        for p in Proto::ALL {
            let mut row = vec![name.clone(), p.label().to_string()];
            for (ti, e) in errors.iter_mut().enumerate() {
                let mut runs = cells[&(si, p, ti)].clone();
                *e += runs.iter().map(|r| r.errors).sum::<usize>();
                let p50 = median(runs.iter_mut().map(|r| r.pct(0.50)).collect());
                let p99 = median(runs.iter_mut().map(|r| r.pct(0.99)).collect());
                row.push(format!("{p50:.2} / {p99:.2}"));
            }
            println!("| {} |", row.join(" | "));
        }
    }
    println!();
    println!("## Open loop at half of ours' HTTP/1.1 keep-alive saturation ({rounds} runs each)");
    println!();
    println!("| Pod | rate (req/s) | ours p50 ms | ours p99 ms | ours p99.9 ms | floor p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut open_p99 = Vec::new();
    for (si, name) in size_name.iter().enumerate() {
        let mut o = open[&(si, Proto::H1, ours_i)].clone();
        let mut f = open[&(si, Proto::H1, floor_i)].clone();
        errors[ours_i] += o.iter().map(|r| r.errors).sum::<usize>();
        errors[floor_i] += f.iter().map(|r| r.errors).sum::<usize>();
        let rate = median(
            o.iter()
                .map(|r| r.lat.len() as f64 / r.elapsed.as_secs_f64())
                .collect(),
        );
        let p99: Vec<f64> = o.iter_mut().map(|r| r.pct(0.99)).collect();
        open_p99.push((name.clone(), spread(p99.clone())));
        println!(
            "| {name} | {rate:.0} | {} | {} | {} | {} |",
            show(o.iter_mut().map(|r| r.pct(0.50)).collect(), 2),
            show(p99, 2),
            show(o.iter_mut().map(|r| r.pct(0.999)).collect(), 2),
            show(f.iter_mut().map(|r| r.pct(0.99)).collect(), 2),
        );
    }
    println!();
    println!("## Memory and idle CPU of the server processes");
    println!();
    println!(
        "| server | VmHWM at start (KiB) | VmHWM after load (KiB) | VmRSS after load (KiB) | CPU in {IDLE_SECS} s idle (µs) | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (ti, t) in targets.iter().enumerate() {
        let (hwm, rss) = t.proc.memory();
        println!(
            "| {} | {} | {hwm} | {rss} | {} | {} |",
            t.name,
            hwm_idle[ti],
            idle[ti].as_micros(),
            errors[ti]
        );
    }
    println!();

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let cpu_ratio = |si: usize, p: Proto| {
        median(ratio(
            per_round(si, p, ours_i, &cpu),
            per_round(si, p, floor_i, &cpu),
        ))
    };
    let thr_ratio = |si: usize, p: Proto| {
        median(ratio(
            per_round(si, p, ours_i, &rps),
            best_peer(si, p, &rps, true),
        ))
    };
    let last = size_name.len() - 1;
    println!("## Targets (medians)");
    println!();
    for (si, limit) in [(0, 1.6), (last, 2.5)] {
        for p in [Proto::H1, Proto::H2] {
            let r = cpu_ratio(si, p);
            println!(
                "- server CPU per review <= {limit} x floor at {}, {}: {r:.2} -> {}",
                size_name[si],
                p.label(),
                verdict(r <= limit)
            );
        }
    }
    for p in [Proto::H1, Proto::H2] {
        let r = thr_ratio(last, p);
        println!(
            "- throughput >= 5 x best peer at {}, {}: {r:.1} -> {}",
            size_name[last],
            p.label(),
            verdict(r >= 5.0)
        );
    }
    for (name, (lo, med, hi)) in &open_p99 {
        println!(
            "- open-loop p99 < 1 ms at half saturation, {name}: {med:.2} ms (range {lo:.2}–{hi:.2}) -> {}",
            verdict(*med < 1.0)
        );
    }
    let hwm = targets[ours_i].proc.memory().0;
    println!(
        "- peak RSS < 30 MiB with {ENTRIES} entries: {:.1} MiB -> {}",
        hwm as f64 / 1024.0,
        verdict(hwm < 30 * 1024)
    );
    println!(
        "- idle CPU zero (under 1 ms in {IDLE_SECS} s): {} µs -> {}",
        idle[ours_i].as_micros(),
        verdict(idle[ours_i] < Duration::from_millis(1))
    );
    let total: usize = errors.iter().sum();
    if total > 0 {
        println!("- WARNING: {total} requests failed (see the errors column)");
    }
}

// ---------------------------------------------------------------- profiling target

/// Runs the full review on the load-test requests `n` times (default 2,000).
fn profile(n: Option<usize>, sites: Option<usize>) -> Result<()> {
    let n = n.unwrap_or(2000);
    let cfg = common::config(ENTRIES);
    let bodies = bodies_of(sites.unwrap_or(PROFILE_SITES));
    let mean = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();
    println!("mean body {mean} bytes");
    let facts = NamespaceFacts::default();
    let mut bytes = 0;
    let chunk = n.div_ceil(10).max(1);
    let (start, mut chunk_start, mut best) = (Instant::now(), Instant::now(), Duration::MAX);
    for i in 0..n {
        let out = admission::review(Endpoint::Mutate, &bodies[i % bodies.len()], &cfg, &facts)
            .map_err(|e| anyhow!("{e}"))?;
        bytes += std::hint::black_box(out).len();
        if (i + 1) % chunk == 0 {
            best = best.min(chunk_start.elapsed());
            chunk_start = Instant::now();
        }
    }
    let total = start.elapsed();
    println!("{n} reviews, {bytes} response bytes");
    println!(
        "wall per review: mean {:.2} us, best chunk of {chunk} {:.2} us",
        total.as_secs_f64() * 1e6 / n as f64,
        best.as_secs_f64() * 1e6 / chunk as f64
    );
    Ok(())
}
