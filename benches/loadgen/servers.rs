//! The server children of the load benchmark: what `loadgen --serve KIND DIR` runs, and
//! the parent's handle on a child (start pinned, CPU time, memory, stop).

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
use axum::http::header;
use axum::routing::post;
use pullsecret_injector::cluster::NoCluster;
use pullsecret_injector::config::Config;
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::server::{self, Limits, tls};
use pullsecret_injector::webhook::Webhook;
use tokio::net::TcpListener;

use crate::kube_peer;

// ---------------------------------------------------------------- pinning

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
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
pub(crate) fn pin_to(cpu: usize) -> std::io::Result<()> {
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

// ---------------------------------------------------------------- isolation

/// Keeps the host's own threads from preempting the measured processes, where this
/// process may (root or `CAP_SYS_NICE`): every server runs at `SCHED_FIFO` priority 1,
/// the client at nice -20.
///
/// Why: on the VM these figures come from, kernel threads share the two CPUs (DAMON's
/// `kdamond` samples memory every 500 ms for about 1.4 ms a time; kworkers, RCU). Each
/// one that wakes on a busy measured CPU takes it for a slice, and the open loop's
/// requests queue behind that pause: 60-150 preemptions of a server per 3 s run, late
/// requests (over 1 ms) in 6-17 episodes of up to 34 ms, about as many for the floor as
/// for ours (`LOADGEN_TAIL`, BENCHMARKS.md "The open loop's tail, taken apart"). A real-time
/// server is not preempted by them: they run when it waits for the next request. The
/// client at nice -20 still yields to them, for a far shorter share. Busy loops are not
/// a risk here: every server blocks when it has nothing to do, and the kernel keeps 5 %
/// of each CPU for other tasks (`sched_rt_runtime_us`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// `LOADGEN_ISOLATE=0`.
    Off,
    /// Asked for and applied.
    On,
    /// Asked for, and the kernel refused (no `CAP_SYS_NICE`).
    Refused,
}

impl Isolation {
    /// Applies the client's half to the calling thread (and every thread it starts later),
    /// unless `LOADGEN_ISOLATE=0`. The servers' half is `ServerProc::start`'s.
    pub(crate) fn client() -> Isolation {
        if crate::env_or("LOADGEN_ISOLATE", 1) == 0 {
            return Isolation::Off;
        }
        // SAFETY: plain syscall on the calling thread (`who` 0), no pointers.
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } == 0;
        if niced {
            Isolation::On
        } else {
            Isolation::Refused
        }
    }

    pub(crate) fn describe(self, servers_fifo: bool) -> &'static str {
        match (self, servers_fifo) {
            (Isolation::Off, _) => {
                "off (LOADGEN_ISOLATE=0): host threads may preempt client and servers"
            }
            (Isolation::On, true) => {
                "servers at SCHED_FIFO priority 1, client at nice -20 (host threads wait for an idle moment)"
            }
            (Isolation::On, false) => "client at nice -20; the servers' SCHED_FIFO was refused",
            (Isolation::Refused, _) => {
                "refused (needs root or CAP_SYS_NICE): host threads may preempt client and servers"
            }
        }
    }
}

/// Makes the calling thread (and every thread it starts later) `SCHED_FIFO` priority 1.
fn real_time() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` outlives the call; async-signal-safe, so usable between fork and exec.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------- server children

/// `--serve ours|floor|kube-rs DIR`: serve until stdin closes.
pub(crate) fn serve(args: &[String]) -> Result<()> {
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
pub(crate) struct ServerProc {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
}

impl ServerProc {
    /// Starts `program args…`, pinned to `cpu` if given and real-time if `isolation` is
    /// on (see `Isolation`; a refusal leaves it an ordinary process, which
    /// `is_real_time` tells), and reads its `PORT n` line.
    pub(crate) fn start(
        name: &'static str,
        program: &Path,
        args: &[&std::ffi::OsStr],
        cpu: Option<usize>,
        isolation: Isolation,
    ) -> Result<ServerProc> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let fifo = isolation == Isolation::On;
        // SAFETY: `pin_to` and `real_time` only make async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu)?;
                }
                if fifo {
                    let _ = real_time(); // checked by the parent, `is_real_time`
                }
                Ok(())
            });
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child runs at `SCHED_FIFO`.
    pub(crate) fn is_real_time(&self) -> bool {
        // SAFETY: plain syscall on a pid, no pointers.
        unsafe { libc::sched_getscheduler(self.pid() as libc::pid_t) == libc::SCHED_FIFO }
    }

    /// Times the child's threads were switched out while still runnable, so far
    /// (`nonvoluntary_ctxt_switches` over `/proc/<pid>/task/*/status`): another task
    /// took their CPU.
    pub(crate) fn preempted(&self) -> u64 {
        sum_over_threads(self.pid(), "status", |s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// CPU time used so far by all the child's threads.
    pub(crate) fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// `VmHWM` (peak resident set) and `VmRSS` of the child, in KiB.
    pub(crate) fn memory(&self) -> (u64, u64) {
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

    pub(crate) fn stop(mut self) -> Result<()> {
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
pub(crate) fn cpu_time(pid: u32) -> Duration {
    Duration::from_nanos(sum_over_threads(pid, "schedstat", |s| {
        s.split_whitespace().next().and_then(|v| v.parse().ok())
    }))
}

/// The sum over every thread of `pid` of what `value` reads from its
/// `/proc/<pid>/task/<tid>/<file>`; threads gone or unreadable count 0.
fn sum_over_threads(pid: u32, file: &str, value: impl Fn(&str) -> Option<u64>) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join(file)).ok())
        .filter_map(|s| value(&s))
        .sum()
}
