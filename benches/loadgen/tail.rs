//! `LOADGEN_TAIL=ROUNDS`: the open loop's tail, taken apart. Instead of the tables, ours
//! and the floor take turns at half of ours' HTTP/1.1 saturation, ROUNDS times per size,
//! and every run prints what its tail was made of: how many requests were late (over
//! 1 ms), in how many episodes (late requests due within 1 ms of each other belong to
//! one), how long the longest lasted, the host's steal time on the client's and the
//! server's CPU meanwhile (`/proc/stat`), how often the server was preempted, and how many
//! requests the pacer released more than 0.5 ms late. Late requests spread thinly over a
//! run point at the server's cost per request; episodes that come with preemptions, steal
//! or a late pacer point at something else taking the server's or the client's CPU
//! (BENCHMARKS.md, "The open loop's tail, taken apart").

use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::{Proto, Run, closed_loop};
use crate::report::median;
use crate::{OPEN_LOADS, Target};

/// Latency over which a request counts as late, in microseconds (the p99 target).
const LATE_US: u32 = 1000;

/// Rounds asked for with `LOADGEN_TAIL`, if any.
pub(crate) fn settings() -> Result<Option<usize>> {
    let Ok(text) = std::env::var("LOADGEN_TAIL") else {
        return Ok(None);
    };
    let rounds = text
        .parse::<usize>()
        .ok()
        .filter(|r| (1..=100).contains(r))
        .with_context(|| format!("LOADGEN_TAIL={text:?}: expected a number of rounds, 1-100"))?;
    Ok(Some(rounds))
}

/// Cumulative steal time of `cpu` (`/proc/stat`, eighth value, in USER_HZ ticks of
/// 10 ms); zero where unreadable.
fn steal(cpu: Option<usize>) -> Duration {
    let Some(cpu) = cpu else {
        return Duration::ZERO;
    };
    let label = format!("cpu{cpu}");
    let ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(label.as_str()))
                    .then(|| f.nth(7).and_then(|v| v.parse::<u64>().ok()))
                    .flatten()
            })
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Late requests of an open-loop run and the episodes they form: (late count, episodes,
/// longest episode's span from its first due time to its last answer, in ms).
fn episodes(run: &Run) -> (usize, usize, f64) {
    let mut late: Vec<(u32, u32)> = run
        .due_us
        .iter()
        .zip(&run.lat)
        .filter(|&(_, &l)| l > LATE_US)
        .map(|(&d, &l)| (d, l))
        .collect();
    late.sort_unstable();
    let (mut count, mut longest) = (0, 0u32);
    let mut current: Option<(u32, u32, u32)> = None; // (first due, last due, last end)
    for &(due, lat) in &late {
        current = match current {
            Some((first, last, end)) if due <= last + LATE_US => {
                Some((first, due, end.max(due + lat)))
            }
            Some((first, _, end)) => {
                longest = longest.max(end - first);
                count += 1;
                Some((due, due, due + lat))
            }
            None => Some((due, due, due + lat)),
        };
    }
    if let Some((first, _, end)) = current {
        longest = longest.max(end - first);
        count += 1;
    }
    (late.len(), count, f64::from(longest) / 1000.0)
}

/// The tail runs; prints one line per run.
pub(crate) async fn run(
    targets: &[Target],
    (ours_i, floor_i): (usize, usize),
    size_name: &[String],
    round: Duration,
    rounds: usize,
    (client_cpu, server_cpu): (Option<usize>, Option<usize>),
) {
    let load = OPEN_LOADS[0];
    println!(
        "| Pod | round | server | rate (req/s) | p50 ms | p99 ms | late (> 1 ms) | episodes | longest ms | core busy | steal ms: client / server CPU | server preempted | pacer late > 0.5 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (si, name) in size_name.iter().enumerate() {
        let mut sat = Vec::new();
        for _ in 0..3 {
            sat.push(
                closed_loop(&targets[ours_i].clients[si], Proto::H1, round)
                    .await
                    .rps(),
            );
        }
        let rate = median(sat) * load;
        for r in 0..rounds {
            for ti in crate::open_turns(r, ours_i, floor_i) {
                let t = &targets[ti];
                let (c0, s0) = (steal(client_cpu), steal(server_cpu));
                let mut run = crate::open_run(t, si, rate, round).await;
                let (c1, s1) = (steal(client_cpu), steal(server_cpu));
                let pacer_late = run.pacer_lag.iter().filter(|&&l| l > LATE_US / 2).count();
                let (late, count, longest) = episodes(&run);
                println!(
                    "| {name} | {} | {} | {rate:.0} | {:.2} | {:.2} | {late} of {} ({:.2} %) | {count} | {longest:.1} | {:.0} % | {} / {} | {} | {pacer_late} |",
                    r + 1,
                    t.name,
                    run.pct(0.5),
                    run.pct(0.99),
                    run.lat.len(),
                    100.0 * late as f64 / run.lat.len().max(1) as f64,
                    100.0 * run.busy(),
                    c1.saturating_sub(c0).as_millis(),
                    s1.saturating_sub(s0).as_millis(),
                    run.preempted,
                );
            }
        }
    }
}
