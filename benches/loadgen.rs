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
//! * Where allowed (root or `CAP_SYS_NICE`), the servers run at `SCHED_FIFO` priority 1
//!   and the client at nice -20, so the host's kernel threads stop preempting them under
//!   load (`servers::Isolation`; `LOADGEN_ISOLATE=0` turns it off). The report says which.
//! * The client never sleeps while it measures: the closed loop runs a yielding spinner
//!   beside its connections (`LOADGEN_SPIN=0` turns it off), the open loop's pacer
//!   yields until each due time. Over loopback a server pays, in its own CPU time, for
//!   waking a sleeping client, an IPI on a VM; see `client::Spinner`.
//! * Every cell is measured `LOADGEN_ROUNDS` times (default 3), the targets taking turns
//!   in a rotating order, and reported as median [min–max]. Scenarios: HTTP/1.1
//!   keep-alive (16 connections), HTTP/2 (2 connections, 8 streams each, as the API
//!   server's client multiplexes), and HTTP/1.1 with a new connection per request (8
//!   connections, full handshake each); then an open loop at half and at a quarter of
//!   ours' HTTP/1.1 saturation (latency from each request's due time, so queueing
//!   counts), ours and the floor at the same rate, with how busy each kept its core.
//! * Before any load: ours' HTTP answers must equal `admission::review()` in-process, and
//!   each peer's patch, applied to the Pod, must give the same `imagePullSecrets` and
//!   pull policies as ours'.
//!
//! Run: `benches/run.sh` (builds the Go peer, then this). Tunables (environment):
//! `LOADGEN_SECS` (seconds per cell and round, default 2), `LOADGEN_ROUNDS` (default 3),
//! `LOADGEN_PIN=0` (no pinning), `LOADGEN_ISOLATE=0` (no real-time servers, no nice
//! client), `LOADGEN_SPIN=0` (a client that sleeps between answers);
//! `LOADGEN_HOLD=SECS` holds ours and the floor at saturation for a profiler instead (see
//! `hold_settings`); `LOADGEN_TAIL=ROUNDS` takes the open loop's tail apart instead (see
//! `loadgen/tail.rs`).
//!
//! `loadgen --profile-review N [SITES [EVICT_MIB]]` runs `admission::review` N times
//! in-process on the same requests (Pods of SITES image sites, default 5; a target for
//! `valgrind --tool=callgrind`). It also prints the time per review: the mean over all N
//! and the fastest of 10 equal chunks (the one least disturbed by other load). EVICT_MIB
//! (default 0) evicts the caches before each review by writing a buffer that large: the
//! cold review, as between requests on a shared host (`valgrind --tool=cachegrind
//! --cache-sim=yes` then counts the cache lines it misses).

#[path = "loadgen/client.rs"]
mod client;
mod common;
#[path = "peers/kube_rs.rs"]
mod kube_peer;
#[path = "loadgen/report.rs"]
mod report;
#[path = "loadgen/servers.rs"]
mod servers;
#[path = "loadgen/tail.rs"]
mod tail;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use axum::body::Bytes;
use pullsecret_injector::admission::{self, Endpoint, NamespaceFacts};
use pullsecret_injector::config::Config;
use pullsecret_injector::server::tls;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio_rustls::TlsConnector;

use crate::client::{Client, Proto, Run, closed_loop, measured, open_loop};
use crate::report::{effect, median, report, secrets_in};
use crate::servers::{Isolation, ServerProc, allowed_cpus, pin_to};

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
/// The open loop's rates, as fractions of ours' HTTP/1.1 keep-alive saturation: first the
/// target's half (the report's verdict reads the first), then a quarter, for where the
/// tail stands at a lighter load.
const OPEN_LOADS: [f64; 2] = [0.5, 0.25];
/// Open-loop runs by (size, index into `OPEN_LOADS`, target).
type OpenCells = BTreeMap<(usize, usize, usize), Vec<Run>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match args.get(1).map(String::as_str) {
        Some("--serve") => servers::serve(&args[2..]),
        Some("--profile-review") => {
            profile_args(&args[2..]).and_then(|(n, sites, evict)| profile(n, sites, evict))
        }
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

/// `LOADGEN_HOLD=SECS` (with `LOADGEN_HOLD_SITES`, 1 or 30, default 30): instead of the
/// tables, hold ours and then the floor at HTTP/1.1 keep-alive saturation for SECS each,
/// twice in turn, after printing every server's pid so that a profiler can attach
/// (`perf record -p PID`); each hold's CPU per review goes to stderr. Returns the hold
/// time and the index of the size.
fn hold_settings() -> Result<Option<(Duration, usize)>> {
    let Ok(text) = std::env::var("LOADGEN_HOLD") else {
        return Ok(None);
    };
    let secs = text
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .with_context(|| format!("LOADGEN_HOLD={text:?}: expected a number of seconds > 0"))?;
    let sites: usize = match std::env::var("LOADGEN_HOLD_SITES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("LOADGEN_HOLD_SITES={v:?}: expected one of {SIZES:?}"))?,
        Err(_) => SIZES[SIZES.len() - 1],
    };
    let si = SIZES
        .iter()
        .position(|&s| s == sites)
        .with_context(|| format!("LOADGEN_HOLD_SITES={sites}: expected one of {SIZES:?}"))?;
    Ok(Some((Duration::from_secs_f64(secs), si)))
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

// ---------------------------------------------------------------- the run

pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) proc: ServerProc,
    /// One client per Pod size.
    clients: Vec<Client>,
    pub(crate) role: Role,
}

/// What a server is in the comparison, and so how its answers are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Answers a fixed body: ours' answer to the first request of each size.
    Floor,
    /// Answers exactly what `admission::review()` gives in-process, byte for byte.
    Ours,
    /// Its patch, applied to the Pod, has the effect of ours'.
    Peer,
}

impl Target {
    /// The index of the one target in `role` (`Floor` or `Ours`).
    pub(crate) fn index(targets: &[Target], role: Role) -> usize {
        targets
            .iter()
            .position(|t| t.role == role)
            .expect("one of each")
    }
}

fn drive() -> Result<()> {
    let secs: f64 = env_or("LOADGEN_SECS", 2.0);
    let rounds: usize = env_or("LOADGEN_ROUNDS", 3).max(1);
    let pin: bool = env_or("LOADGEN_PIN", 1) != 0;
    let round = Duration::from_secs_f64(secs);
    let hold = hold_settings()?;
    let tail_rounds = tail::settings()?;

    // Pin and isolate before any thread exists: the runtime's workers inherit the mask
    // and the nice value.
    let isolation = Isolation::client();
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
            ServerProc::start("floor", &exe, &ours_arg("floor"), server_cpu, isolation)?,
            Role::Floor,
        ),
        (
            "ours",
            ServerProc::start("ours", &exe, &ours_arg("ours"), server_cpu, isolation)?,
            Role::Ours,
        ),
        (
            "kube-rs",
            ServerProc::start("kube-rs", &exe, &ours_arg("kube-rs"), server_cpu, isolation)?,
            Role::Peer,
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
                isolation,
            )?,
            Role::Peer,
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
        .map(|(name, proc, role)| {
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
                role,
            }
        })
        .collect();
    let (floor_i, ours_i) = (
        Target::index(&targets, Role::Floor),
        Target::index(&targets, Role::Ours),
    );
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
    let servers_fifo = targets.iter().all(|t| t.proc.is_real_time());
    println!("isolation: {}", isolation.describe(servers_fifo));
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
    let measured_cells: Option<(Cells, OpenCells)> = rt.block_on(async {
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
                        match t.role {
                            Role::Floor => ensure!(
                                i > 0 || got.as_ref() == want.as_slice(),
                                "floor body differs"
                            ),
                            Role::Ours => ensure!(
                                got.as_ref() == want.as_slice(),
                                "{} answered request {i} ({}) differently from admission::review",
                                t.name,
                                size_name[si]
                            ),
                            Role::Peer => {
                                let e = effect(req, &got).with_context(|| {
                                    format!("{}'s answer to request {i}", t.name)
                                })?;
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
            }
            ensure!(injected > 0, "no request of {} gets a secret", size_name[si]);
        }

        // Warm-up (connections, allocators, caches, Go's heap).
        for t in &targets {
            for c in &t.clients {
                closed_loop(c, Proto::H1, Duration::from_millis(300)).await;
            }
        }

        if let Some(tail_rounds) = tail_rounds {
            tail::run(
                &targets,
                (ours_i, floor_i),
                &size_name,
                round,
                tail_rounds,
                (client_cpu, server_cpu),
            )
            .await;
            return anyhow::Ok(None);
        }

        if let Some((secs, si)) = hold {
            for t in &targets {
                eprintln!("hold: {} pid {}", t.name, t.proc.pid());
            }
            for ti in [ours_i, floor_i, ours_i, floor_i] {
                let t = &targets[ti];
                eprintln!("hold: start {}", t.name);
                let run = measured(&t.proc, closed_loop(&t.clients[si], Proto::H1, secs)).await;
                eprintln!(
                    "hold: {} {:.1} µs server CPU per review, {:.0} req/s, {} errors",
                    t.name,
                    run.cpu_per_req(),
                    run.rps(),
                    run.errors
                );
            }
            return anyhow::Ok(None);
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

        // Open loop at fractions of ours' HTTP/1.1 saturation (`OPEN_LOADS`), the same rate
        // for ours and the floor.
        let mut open = OpenCells::new();
        for si in 0..SIZES.len() {
            let saturation = median(cells[&(si, Proto::H1, ours_i)].iter().map(Run::rps).collect());
            for (li, load) in OPEN_LOADS.iter().enumerate() {
                for r in 0..rounds {
                    for ti in open_turns(r, ours_i, floor_i) {
                        let run = open_run(&targets[ti], si, saturation * load, round).await;
                        open.entry((si, li, ti)).or_default().push(run);
                    }
                }
            }
        }
        anyhow::Ok(Some((cells, open)))
    })?;
    drop(rt); // closes every connection

    // `None` after the holds or the tail runs, which print their own figures.
    if let Some((cells, open)) = measured_cells {
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
            &targets, &size_name, &cells, &open, rounds, &hwm_idle, &idle,
        );
    }
    for t in targets {
        t.proc.stop()?;
    }
    Ok(())
}

/// Ours and the floor in round `r` of an open loop: alternating which goes first, so a
/// drift in background load hits both.
fn open_turns(r: usize, ours_i: usize, floor_i: usize) -> [usize; 2] {
    if r.is_multiple_of(2) {
        [ours_i, floor_i]
    } else {
        [floor_i, ours_i]
    }
}

/// One open-loop run of `target` at `rate` with the Pods of size `si`, with its server's
/// CPU time; 1.5 rounds long, for enough requests in the tail.
async fn open_run(target: &Target, si: usize, rate: f64, round: Duration) -> Run {
    measured(
        &target.proc,
        open_loop(&target.clients[si], rate, round.mul_f64(1.5)),
    )
    .await
}

// ---------------------------------------------------------------- profiling target

/// `N [SITES [EVICT_MIB]]` of `--profile-review`, each a whole number if given.
fn profile_args(args: &[String]) -> Result<(Option<usize>, Option<usize>, Option<usize>)> {
    let names = ["N", "SITES", "EVICT_MIB"];
    ensure!(
        args.len() <= names.len(),
        "usage: loadgen --profile-review [N [SITES [EVICT_MIB]]]"
    );
    let mut parsed = [None; 3];
    for ((slot, name), arg) in parsed.iter_mut().zip(names).zip(args) {
        *slot = Some(arg.parse().with_context(|| {
            format!("--profile-review {name}={arg:?}: expected a whole number")
        })?);
    }
    let [n, sites, evict] = parsed;
    // Enough to flush any cache this runs on, and bounded so a typo cannot exhaust memory.
    ensure!(
        evict.unwrap_or(0) <= 1024,
        "--profile-review EVICT_MIB: at most 1024 (MiB)"
    );
    Ok((n, sites, evict))
}

/// Runs the full review on the load-test requests `n` times (default 2,000). With
/// `evict_mib`, a buffer of that many MiB is written (one byte per cache line) before
/// each review, so that every review starts with cold caches, as it does between requests
/// on a shared host; only the reviews are timed.
fn profile(n: Option<usize>, sites: Option<usize>, evict_mib: Option<usize>) -> Result<()> {
    let n = n.unwrap_or(2000);
    let cfg = common::config(ENTRIES);
    let bodies = bodies_of(sites.unwrap_or(PROFILE_SITES));
    let mean = bodies.iter().map(Bytes::len).sum::<usize>() / bodies.len();
    println!("mean body {mean} bytes");
    let mut evict = vec![0u8; evict_mib.unwrap_or(0) << 20];
    let facts = NamespaceFacts::default();
    let mut bytes = 0;
    let chunk = n.div_ceil(10).max(1);
    let (mut total, mut this_chunk, mut best) = (Duration::ZERO, Duration::ZERO, Duration::MAX);
    for i in 0..n {
        for line in evict.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        std::hint::black_box(&mut evict);
        let start = Instant::now();
        let out = admission::review(Endpoint::Mutate, &bodies[i % bodies.len()], &cfg, &facts)
            .map_err(|e| anyhow!("{e}"))?;
        bytes += std::hint::black_box(out).len();
        this_chunk += start.elapsed();
        if (i + 1) % chunk == 0 {
            best = best.min(this_chunk);
            total += std::mem::take(&mut this_chunk);
        }
    }
    total += this_chunk;
    println!(
        "{n} reviews, {bytes} response bytes{}",
        match evict_mib {
            Some(m) if m > 0 => format!(", caches evicted ({m} MiB written) before each"),
            _ => String::new(),
        }
    );
    println!(
        "time per review: mean {:.2} us, best chunk of {chunk} {:.2} us",
        total.as_secs_f64() * 1e6 / n as f64,
        best.as_secs_f64() * 1e6 / chunk as f64
    );
    Ok(())
}
