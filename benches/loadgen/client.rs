//! The load benchmark's client: connections over HTTP/1.1 and HTTP/2, closed and open
//! loops, and what one run measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::servers::ServerProc;
use crate::{H1_CONNS, H2_CONNS, H2_STREAMS, NEWCONN_CONNS};

// ---------------------------------------------------------------- client

/// How requests reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Proto {
    /// HTTP/1.1, `H1_CONNS` keep-alive connections.
    H1,
    /// HTTP/2, `H2_CONNS` connections with `H2_STREAMS` concurrent streams each.
    H2,
    /// HTTP/1.1, a new connection (full TLS handshake) per request.
    NewConn,
}

impl Proto {
    pub(crate) const ALL: [Proto; 3] = [Proto::H1, Proto::H2, Proto::NewConn];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1 keep-alive",
            Proto::H2 => "HTTP/2",
            Proto::NewConn => "HTTP/1.1 new conn/req",
        }
    }

    /// Requests in flight at once.
    pub(crate) fn concurrency(self) -> usize {
        match self {
            Proto::H1 => H1_CONNS,
            Proto::H2 => H2_CONNS * H2_STREAMS,
            Proto::NewConn => NEWCONN_CONNS,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) port: u16,
    pub(crate) h1: TlsConnector,
    pub(crate) h2: TlsConnector,
    pub(crate) bodies: Arc<Vec<Bytes>>,
}

pub(crate) enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub(crate) async fn connect(&self, proto: Proto) -> Result<Sender> {
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
    pub(crate) async fn send(&self, sender: &mut Sender, i: usize, close: bool) -> Result<Bytes> {
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
pub(crate) struct Run {
    /// Latencies in microseconds.
    pub(crate) lat: Vec<u32>,
    pub(crate) errors: usize,
    pub(crate) elapsed: Duration,
    pub(crate) server_cpu: Duration,
    /// Times the server was preempted during the run (`ServerProc::preempted`).
    pub(crate) preempted: u64,
    /// Open loop: how late the pacer released each request, in microseconds (the
    /// harness's own share of the latencies).
    pub(crate) pacer_lag: Vec<u32>,
    /// Open loop: each answered request's due time, in microseconds from the start, in
    /// the order of `lat` (for `LOADGEN_TAIL`'s episodes).
    pub(crate) due_us: Vec<u32>,
}

impl Run {
    pub(crate) fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Share of its core the server kept busy over the run (its CPU time over the run's
    /// length), 0-1.
    pub(crate) fn busy(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per request.
    pub(crate) fn cpu_per_req(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / (self.lat.len().max(1) as f64)
    }

    /// Latency percentile in milliseconds.
    pub(crate) fn pct(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.lat, p)
    }

    /// Percentile of the pacer's lateness in milliseconds (open loop only).
    pub(crate) fn pacer_pct(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.pacer_lag, p)
    }
}

/// Percentile `p` of microsecond samples, in milliseconds.
fn percentile_ms(us: &mut [u32], p: f64) -> f64 {
    if us.is_empty() {
        return f64::NAN;
    }
    us.sort_unstable();
    let idx = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1;
    us[idx] as f64 / 1000.0
}

/// Closed loop for `dur`: `proto.concurrency()` tasks each send back to back. Keep-alive
/// and HTTP/2 connections are opened before the clock starts; with `NewConn` every
/// request opens its own and its latency includes the handshake.
pub(crate) async fn closed_loop(client: &Client, proto: Proto, dur: Duration) -> Run {
    let spinner = Spinner::start();
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
    if let Some(s) = spinner {
        s.stop().await;
    }
    run
}

/// Keeps the client's worker busy for the length of a closed-loop run, as the open loop's
/// pacer does, so that no server pays for waking the client.
///
/// Over loopback, a server's send runs the delivery to the client in the server's own
/// time, including the wakeup of a client asleep in `epoll_wait`; on a VM, waking an
/// idle vCPU is an inter-processor interrupt the hypervisor handles (a VM exit, several
/// µs, seen as `sock_def_readable` → `_raw_spin_unlock_irqrestore` in the server's
/// profile). How often a server pays it depends on its speed: the floor answers while
/// the client is still busy with the previous answer, a slower server finds it asleep
/// nearly every time. That skewed the comparison (BENCHMARKS.md, "The client's wakeup,
/// isolated"); a spinning client is never asleep. The spinner yields, so the worker
/// polls its sockets between turns (tokio defers a yielded task until the I/O driver has
/// been polled).
struct Spinner {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Spinner {
    /// Starts spinning unless `LOADGEN_SPIN=0` (the sleeping client of earlier rounds,
    /// kept for comparison).
    fn start() -> Option<Spinner> {
        if crate::env_or("LOADGEN_SPIN", 1) == 0 {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                tokio::task::yield_now().await;
            }
        });
        Some(Spinner { stop, task })
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("spinner task");
    }
}

/// Open loop: requests are due at a fixed `rate` (a pacer task that yields until each
/// due time keeps the schedule; the tokio timer's resolution is 1 ms) and served by `H1_CONNS` keep-alive connections; latency is
/// measured from the due time, so queueing behind a slow request counts (no coordinated
/// omission).
pub(crate) async fn open_loop(client: &Client, rate: f64, dur: Duration) -> Run {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, u32)>();
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
                let mut due_us = Vec::with_capacity(1 << 14);
                let mut errors = 0;
                let mut i = k;
                loop {
                    let due = { rx.lock().await.recv().await };
                    let Some((due, offset)) = due else { break };
                    match client.send(&mut sender, i, false).await {
                        Ok(_) => {
                            lat.push(due.elapsed().as_micros() as u32);
                            due_us.push(offset);
                        }
                        Err(_) => errors += 1,
                    }
                    i += conns;
                }
                (lat, due_us, errors)
            })
        })
        .collect();
    // The pacer is a task on the client's own worker that yields until each due time. A
    // pacer thread sleeping between requests woke up to 2 ms late at p99 on a busy client
    // core (its lateness counted as the server's latency); spinning here keeps the
    // client's one core busy instead, which the open loop does not report.
    let start = Instant::now();
    let pacer = tokio::spawn(async move {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut due = start;
        let mut lag = Vec::with_capacity((rate * dur.as_secs_f64()) as usize + 1);
        while due < start + dur {
            while Instant::now() < due {
                tokio::task::yield_now().await;
            }
            lag.push(due.elapsed().as_micros() as u32);
            if tx.send((due, (due - start).as_micros() as u32)).is_err() {
                break;
            }
            due += interval;
        }
        lag
    });
    let pacer_lag = pacer.await.expect("pacer task");
    let mut run = Run::default();
    for t in tasks {
        let (lat, due_us, errors) = t.await.expect("load task");
        run.lat.extend(lat);
        run.due_us.extend(due_us);
        run.errors += errors;
    }
    run.elapsed = start.elapsed();
    run.pacer_lag = pacer_lag;
    run
}

/// Runs `f` against a server, adding the server's CPU time to the result. (The client's
/// is not measured: it keeps its core busy, see `Spinner`.)
pub(crate) async fn measured<F: std::future::Future<Output = Run>>(
    server: &ServerProc,
    f: F,
) -> Run {
    let (cpu_before, preempted_before) = (server.cpu(), server.preempted());
    let mut run = f.await;
    run.server_cpu = server.cpu().saturating_sub(cpu_before);
    run.preempted = server.preempted().saturating_sub(preempted_before);
    run
}
