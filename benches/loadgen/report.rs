//! The load benchmark's checks of the answers and its report: every figure median
//! [min–max] over the rounds, ratios paired by round, and the targets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use base64::Engine as _;
use serde_json::Value;

use crate::client::{Proto, Run};
use crate::{ENTRIES, IDLE_SECS, OPEN_LOADS, OpenCells, Role, Target};

// ---------------------------------------------------------------- checks and statistics

/// What an answer does to the Pod of `request`: the names in `imagePullSecrets` (sorted,
/// duplicates kept) and every container's pull policy, once its patch is applied.
pub(crate) type Effect = (Vec<String>, Vec<Option<String>>);

pub(crate) fn effect(request: &[u8], answer: &[u8]) -> Result<Effect> {
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
pub(crate) fn secrets_in(request: &[u8]) -> Result<usize> {
    let req: Value = serde_json::from_slice(request)?;
    Ok(req["request"]["object"]["spec"]["imagePullSecrets"]
        .as_array()
        .map_or(0, Vec::len))
}

/// (min, median, max); the median of an even count is the mean of the middle two.
pub(crate) fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
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

pub(crate) fn median(v: Vec<f64>) -> f64 {
    spread(v).1
}

/// `median [min–max]` with `prec` decimals.
pub(crate) fn show(v: Vec<f64>, prec: usize) -> String {
    let (lo, med, hi) = spread(v);
    format!("{med:.prec$} [{lo:.prec$}–{hi:.prec$}]")
}

/// Prints the report: every figure is median [min–max] over the rounds.
pub(crate) fn report(
    targets: &[Target],
    size_name: &[String],
    cells: &BTreeMap<(usize, Proto, usize), Vec<Run>>,
    open: &OpenCells,
    rounds: usize,
    hwm_idle: &[u64],
    idle: &[Duration],
) {
    let (floor_i, ours_i) = (
        Target::index(targets, Role::Floor),
        Target::index(targets, Role::Ours),
    );
    let peers: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].role == Role::Peer)
        .collect();
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
    // One row per size and protocol: the Pod and protocol cells, then `cells(si, p)`.
    let rows = |cells: &mut dyn FnMut(usize, Proto) -> Vec<String>| {
        for (si, name) in size_name.iter().enumerate() {
            for p in Proto::ALL {
                let mut row = vec![name.clone(), p.label().to_string()];
                row.extend(cells(si, p));
                println!("| {} |", row.join(" | "));
            }
        }
    };

    println!("## Server CPU per review (µs; median [min–max] of {rounds} rounds)");
    println!();
    header(&["ours ÷ floor", "best peer ÷ ours"]);
    rows(&mut |si, p| {
        let mut row: Vec<String> = (0..targets.len())
            .map(|ti| show(per_round(si, p, ti, &cpu), 1))
            .collect();
        let ours = per_round(si, p, ours_i, &cpu);
        row.push(show(
            ratio(ours.clone(), per_round(si, p, floor_i, &cpu)),
            2,
        ));
        row.push(show(ratio(best_peer(si, p, &cpu, false), ours), 1));
        row
    });
    println!();
    println!("## Throughput (req/s; median [min–max])");
    println!();
    header(&["ours ÷ best peer"]);
    rows(&mut |si, p| {
        let mut row: Vec<String> = (0..targets.len())
            .map(|ti| show(per_round(si, p, ti, &rps), 0))
            .collect();
        row.push(show(
            ratio(per_round(si, p, ours_i, &rps), best_peer(si, p, &rps, true)),
            1,
        ));
        row
    });
    println!();
    println!("## Closed-loop latency (ms; p50 / p99, medians of the rounds)");
    println!();
    header(&[]);
    let mut errors = vec![0usize; targets.len()];
    rows(&mut |si, p| {
        errors
            .iter_mut()
            .enumerate()
            .map(|(ti, e)| {
                let mut runs = cells[&(si, p, ti)].clone();
                *e += runs.iter().map(|r| r.errors).sum::<usize>();
                let p50 = median(runs.iter_mut().map(|r| r.pct(0.50)).collect());
                let p99 = median(runs.iter_mut().map(|r| r.pct(0.99)).collect());
                format!("{p50:.2} / {p99:.2}")
            })
            .collect()
    });
    println!();
    println!(
        "## Open loop at fractions of ours' HTTP/1.1 keep-alive saturation ({rounds} runs each)"
    );
    println!();
    println!(
        "| Pod | load | rate (req/s) | ours p50 ms | ours p99 ms | ours p99.9 ms | floor p99 ms | pacer lateness p99 ms | server CPU µs/review: floor / ours (ratio) | server core busy: floor / ours | server preempted: floor / ours |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut open_p99 = Vec::new();
    let cells_of_open = size_name.iter().enumerate().flat_map(|(si, name)| {
        OPEN_LOADS
            .iter()
            .enumerate()
            .map(move |(li, l)| (si, name, li, *l))
    });
    for (si, name, li, load) in cells_of_open {
        let mut o = open[&(si, li, ours_i)].clone();
        let mut f = open[&(si, li, floor_i)].clone();
        errors[ours_i] += o.iter().map(|r| r.errors).sum::<usize>();
        errors[floor_i] += f.iter().map(|r| r.errors).sum::<usize>();
        let rate = median(o.iter().map(Run::rps).collect());
        let p99: Vec<f64> = o.iter_mut().map(|r| r.pct(0.99)).collect();
        if li == 0 {
            open_p99.push((name.clone(), spread(p99.clone())));
        }
        // The same rate for both, so neither profits from the client being too busy to
        // sleep: at saturation a faster server finds the client awake more often and is
        // spared the cost of waking it (see BENCHMARKS.md).
        let (f_cpu, o_cpu): (Vec<f64>, Vec<f64>) = (
            f.iter().map(Run::cpu_per_req).collect(),
            o.iter().map(Run::cpu_per_req).collect(),
        );
        let equal_rate_ratio = median(ratio(o_cpu.clone(), f_cpu.clone()));
        // How much of its core each server needed at this rate: a request arriving alone
        // costs more than one of a saturated batch (wakeups, cold caches), so half of the
        // closed loop's rate can keep a core far more than half busy, and the tail of an
        // open loop grows steeply with that share.
        let busy = |runs: &[Run]| median(runs.iter().map(|r| 100.0 * r.busy()).collect());
        // Times another task took the server's core in a run: host threads, unless the
        // servers run real-time (`servers::Isolation`).
        let preempted = |runs: &[Run]| median(runs.iter().map(|r| r.preempted as f64).collect());
        println!(
            "| {name} | {:.0} % | {rate:.0} | {} | {} | {} | {} | {} | {:.1} / {:.1} ({equal_rate_ratio:.2}) | {:.0} % / {:.0} % | {:.0} / {:.0} |",
            load * 100.0,
            show(o.iter_mut().map(|r| r.pct(0.50)).collect(), 2),
            show(p99, 2),
            show(o.iter_mut().map(|r| r.pct(0.999)).collect(), 2),
            show(f.iter_mut().map(|r| r.pct(0.99)).collect(), 2),
            show(o.iter_mut().map(|r| r.pacer_pct(0.99)).collect(), 3),
            median(f_cpu),
            median(o_cpu),
            busy(&f),
            busy(&o),
            preempted(&f),
            preempted(&o),
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
