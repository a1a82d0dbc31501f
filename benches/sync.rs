//! The secret-sync controller at scale against a real kube-apiserver: 500 namespaces and
//! 20 registry entries with sources, each entry with its own namespace scope.
//!
//! The control plane is the pinned one from `tests/envtest/install.sh` (set
//! `KUBEBUILDER_ASSETS`), audit log on. The chart is installed as in the e2e tests
//! (`tests/common/install.rs`): its ServiceAccount and RBAC, our release binary running as
//! that ServiceAccount, leading (no other replica) and syncing. Measured, each from the
//! process's own metrics (`pullsecret_injector_sync_api_requests_total{verb}`,
//! `…_sync_reconciles_total{result}`, `…_sync_copies_total{action}`), the API server's
//! audit log (our ServiceAccount's requests on Secrets) and a watch of the copies the bench
//! keeps itself (when each copy arrived with which data):
//! 1. **initial fill**: from the controller process's start (its exec, from `/proc`) until
//!    every wanted copy exists with its source's data;
//! 2. **idle**: a quiet period with nothing changing: requests sent (Lease renewals are not
//!    in that metric) and passes run;
//! 3. **rotation**, `SYNC_BENCH_ROUNDS` rounds: one source's data rewritten (the entry
//!    scoped to every namespace), until all its copies hold the new data; then all 20
//!    sources rewritten at once, until every copy does. Each phase ends when the
//!    controller has settled (no pass, request or write for 3 s), so its follow-up passes
//!    are counted in it.
//!
//! The metrics are sampled every 100 ms, so each pass's requests are seen on their own
//! (passes are at least the 300 ms debounce apart); CPU time of the controller and of
//! kube-apiserver + etcd comes from `/proc`.
//!
//! A controller doing only what it must writes each changed copy once and nothing else:
//! requests per copy written 1.0, no write to a copy that did not change, no failed pass,
//! nothing while idle. Deviations are printed under "Anomalies".
//!
//! Knobs: `SYNC_BENCH_NAMESPACES` (default 500), `SYNC_BENCH_ROUNDS` (default 5),
//! `SYNC_BENCH_IDLE_SECS` (default 20).
//!
//! Run: `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo bench --bench sync`.

#[path = "../tests/common/envtest.rs"]
mod envtest;
#[path = "../tests/common/install.rs"]
mod install;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};

const ENTRIES: usize = 20;
const SOURCE_NS: &str = "registry-creds";
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pullsecret-injector";
/// Namespaces created at once.
const PARALLEL_CREATES: usize = 16;
/// The controller has settled when no pass ends and no request or write is counted for
/// this long (10× its 300 ms debounce).
const QUIET: Duration = Duration::from_secs(3);
/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(300);
/// The entry whose source is rotated alone (scoped to every namespace).
const SINGLE: usize = 0;

type Key = (String, String);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------- the world: namespaces, entries, scopes ----------

struct Ns {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Namespace `i`: half `team-*`, 30 % `prod-*`, 20 % `dev-*` (interleaved); every 4th
/// labelled `tier=gold` (the rest `tier=silver`), every 7th `pci=true`.
fn namespaces(n: usize) -> Vec<Ns> {
    (0..n)
        .map(|i| {
            let prefix = match i % 10 {
                0..=4 => "team",
                5..=7 => "prod",
                _ => "dev",
            };
            let mut labels = BTreeMap::new();
            let tier = if i % 4 == 0 { "gold" } else { "silver" };
            labels.insert("tier".to_string(), tier.to_string());
            if i % 7 == 0 {
                labels.insert("pci".to_string(), "true".to_string());
            }
            Ns {
                name: format!("{prefix}-{i:03}"),
                labels,
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Teams,
    Gold,
    TeamsProdButTeam1,
    PciNotDev,
    ProdDevNotGold,
}

const SCOPES: [Scope; 6] = [
    Scope::All,
    Scope::Teams,
    Scope::Gold,
    Scope::TeamsProdButTeam1,
    Scope::PciNotDev,
    Scope::ProdDevNotGold,
];

impl Scope {
    fn of(entry: usize) -> Scope {
        match entry {
            0..=4 => Scope::All,
            5..=8 => Scope::Teams,
            9..=11 => Scope::Gold,
            12..=14 => Scope::TeamsProdButTeam1,
            15..=17 => Scope::PciNotDev,
            _ => Scope::ProdDevNotGold,
        }
    }

    /// The entry's `namespaces` chart value.
    fn values(self) -> Option<Value> {
        match self {
            Scope::All => None,
            Scope::Teams => Some(json!({"include": ["team-*"]})),
            Scope::Gold => Some(json!({"selector": {"matchLabels": {"tier": "gold"}}})),
            Scope::TeamsProdButTeam1 => {
                Some(json!({"include": ["team-*", "prod-*"], "exclude": ["team-1*"]}))
            }
            Scope::PciNotDev => Some(json!({
                "exclude": ["dev-*"],
                "selector": {"matchExpressions": [{"key": "pci", "operator": "Exists"}]}
            })),
            Scope::ProdDevNotGold => Some(json!({
                "include": ["prod-*", "dev-*"],
                "selector": {"matchExpressions": [
                    {"key": "tier", "operator": "NotIn", "values": ["gold"]}]}
            })),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Scope::All => "every namespace (no scope)",
            Scope::Teams => "`include: [team-*]`",
            Scope::Gold => "`selector: tier=gold`",
            Scope::TeamsProdButTeam1 => "`include: [team-*, prod-*], exclude: [team-1*]`",
            Scope::PciNotDev => "`exclude: [dev-*]`, `selector: pci Exists`",
            Scope::ProdDevNotGold => "`include: [prod-*, dev-*]`, `selector: tier NotIn (gold)`",
        }
    }

    /// Whether the entry wants a copy in `ns`: written out here from the namespaces'
    /// construction, not asked of the product, so the bench checks its scoping too.
    fn contains(self, ns: &Ns) -> bool {
        let n = ns.name.as_str();
        let label = |k: &str| ns.labels.get(k).map(String::as_str);
        match self {
            Scope::All => true,
            Scope::Teams => n.starts_with("team-"),
            Scope::Gold => label("tier") == Some("gold"),
            Scope::TeamsProdButTeam1 => {
                (n.starts_with("team-") || n.starts_with("prod-")) && !n.starts_with("team-1")
            }
            Scope::PciNotDev => !n.starts_with("dev-") && label("pci").is_some(),
            Scope::ProdDevNotGold => {
                (n.starts_with("prod-") || n.starts_with("dev-")) && label("tier") != Some("gold")
            }
        }
    }
}

fn host(e: usize) -> String {
    format!("reg{e:02}.bench.example")
}
fn copy_name(e: usize) -> String {
    format!("reg-{e:02}-pull")
}
fn source_name(e: usize) -> String {
    format!("reg-{e:02}-src")
}

/// `.dockerconfigjson` of entry `e` at source version `version` (the user names both).
fn auths(e: usize, version: u64) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("v{version}-e{e}:pw"));
    json!({"auths": {host(e): {"auth": auth}}})
        .to_string()
        .into_bytes()
}

fn values() -> Value {
    let registries: Vec<Value> = (0..ENTRIES)
        .map(|e| {
            let mut r = json!({
                "name": format!("reg-{e:02}"),
                "match": [host(e)],
                "secret": copy_name(e),
                "source": {"namespace": SOURCE_NS, "name": source_name(e)}
            });
            if let Some(s) = Scope::of(e).values() {
                r["namespaces"] = s;
            }
            r
        })
        .collect();
    json!({
        "registries": registries,
        // "Every namespace" means the benchmark's: not the system ones, the sources', the
        // release's, nor the install's webhook probe namespace `psi-probe` (a glob, so the
        // chart does not also exclude it from the webhook, which the install must see
        // called).
        "namespaces": {"exclude": ["kube-*", "default", SOURCE_NS, install::RELEASE_NS, "psi-*"]},
        "logFormat": "json"
    })
}

// ---------- the bench's own view of the copies ----------

#[derive(Default)]
struct Seen {
    /// Every managed copy: its `.dockerconfigjson` and when the watch first showed it.
    copies: HashMap<Key, (Vec<u8>, Instant)>,
    /// Watch events that created a copy or changed its data.
    changes: u64,
    deletes: u64,
    synced: bool,
}

impl Seen {
    fn apply(&mut self, s: Secret, at: Instant) {
        let (Some(ns), Some(name)) = (s.metadata.namespace, s.metadata.name) else {
            return;
        };
        let data = s
            .data
            .and_then(|mut d| d.remove(".dockerconfigjson"))
            .map(|b| b.0)
            .unwrap_or_default();
        let key = (ns, name);
        if self.copies.get(&key).is_none_or(|(d, _)| *d != data) {
            self.changes += 1;
            self.copies.insert(key, (data, at));
        }
    }
}

/// Watches every copy carrying the managed-by label (cluster-wide), timestamping changes.
fn watch_copies(c: Client) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        let api = Api::<Secret>::all(c);
        let cfg = watcher::Config::default().labels(MANAGED_SELECTOR);
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let at = Instant::now();
            let mut s = seen.lock().unwrap();
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => s.apply(o, at),
                Ok(watcher::Event::Delete(o)) => {
                    if let (Some(ns), Some(name)) = (o.metadata.namespace, o.metadata.name) {
                        s.copies.remove(&(ns, name));
                    }
                    s.deletes += 1;
                }
                Ok(watcher::Event::InitDone) => s.synced = true,
                Ok(watcher::Event::Init) => {}
                Err(e) => eprintln!("bench: copy watch error (retrying): {e}"),
            }
        }
    });
    (out, task)
}

/// Arrival of the awaited copies, relative to a start instant.
struct Arrival {
    first: Duration,
    median: Duration,
    last: Duration,
}

/// When every copy in `want` came to hold its data (relative to `since`), or how many
/// do not yet.
fn arrived(
    seen: &Mutex<Seen>,
    want: &HashMap<Key, Vec<u8>>,
    since: Instant,
) -> Result<Arrival, usize> {
    let s = seen.lock().unwrap();
    let mut missing = 0usize;
    let mut at = Vec::with_capacity(want.len());
    for (k, data) in want {
        match s.copies.get(k) {
            Some((d, t)) if d == data => at.push(t.saturating_duration_since(since)),
            _ => missing += 1,
        }
    }
    if missing > 0 || at.is_empty() {
        return Err(missing);
    }
    at.sort();
    Ok(Arrival {
        first: at[0],
        median: median(&at),
        last: at[at.len() - 1],
    })
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

// ---------- the process: metrics, CPU, start time ----------

#[derive(Clone, Default, Debug)]
struct Snap {
    requests: BTreeMap<String, f64>,
    reconciles: BTreeMap<String, f64>,
    copies: BTreeMap<String, f64>,
    cpu: Duration,
    /// kube-apiserver + etcd.
    plane_cpu: Duration,
}

impl Snap {
    /// The sum over labels. Event publishes (`verb="event"`) are left out: they are
    /// diagnostics, sent by a separate bounded queue that drops on bursts, and are shown
    /// by verb in the tables instead.
    fn total(m: &BTreeMap<String, f64>) -> f64 {
        m.iter()
            .filter(|(k, _)| k.as_str() != "event")
            .map(|(_, v)| v)
            .sum()
    }

    fn counters(&self) -> (f64, f64, f64) {
        (
            Snap::total(&self.requests),
            Snap::total(&self.reconciles),
            Snap::total(&self.copies),
        )
    }
}

/// The samples of counter `name` summed by the value of `label`.
fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let prefix = format!("{name}{{");
    let key = format!("{label}=\"");
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let (Ok(v), Some(i)) = (value.trim().parse::<f64>(), labels.find(&key)) else {
            continue;
        };
        let val = &labels[i + key.len()..];
        let val = &val[..val.find('"').unwrap_or(val.len())];
        *out.entry(val.to_string()).or_default() += v;
    }
    out
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// `/proc/<pid>/stat` fields from the 3rd on (after the command name).
fn stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after.split_whitespace().map(str::to_string).collect()
}

/// User + system CPU time of `pid` so far.
fn cpu_of(pid: u32, tck: f64) -> Duration {
    let f = stat(pid);
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    Duration::from_secs_f64(ticks / tck)
}

/// The pids of this run's kube-apiserver and etcd: the processes of those names whose
/// arguments name the control plane's temp dir.
fn control_plane(dir: &std::path::Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = args[0].rsplit('/').next().unwrap_or_default();
        if matches!(exe, "kube-apiserver" | "etcd") && args.iter().any(|a| a.contains(&dir)) {
            out.push(pid);
        }
    }
    assert_eq!(
        out.len(),
        2,
        "kube-apiserver and etcd of {dir} not found: {out:?}"
    );
    out
}

/// Passes that ended between two samples of the metrics and the requests sent in that
/// interval: the reconciler runs one pass at a time and sends every request of the sync
/// (no Pod is admitted here), so with samples 100 ms apart each pass is its own sample
/// (passes are at least the 300 ms debounce apart).
#[derive(Clone, Copy)]
struct PassSample {
    passes: f64,
    requests: f64,
}

struct Observed {
    snap: Snap,
    arrival: Option<Arrival>,
    passes: Vec<PassSample>,
}

struct Proc {
    pid: u32,
    metrics_url: String,
    tck: f64,
    plane: Vec<u32>,
}

impl Proc {
    fn cpu(&self) -> Duration {
        cpu_of(self.pid, self.tck)
    }

    /// How long ago the process was started (10 ms resolution).
    fn age(&self) -> Duration {
        let start: f64 = stat(self.pid)[19].parse().unwrap();
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Duration::from_secs_f64((uptime - start / self.tck).max(0.0))
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    async fn snap(&self) -> Snap {
        let get = async {
            reqwest::get(&self.metrics_url)
                .await?
                .error_for_status()?
                .text()
                .await
        };
        let text = tokio::time::timeout(Duration::from_secs(10), get)
            .await
            .unwrap_or_else(|_| panic!("{} did not answer within 10 s", self.metrics_url))
            .unwrap_or_else(|e| panic!("scraping {}: {e}", self.metrics_url));
        Snap {
            requests: by_label(&text, "pullsecret_injector_sync_api_requests_total", "verb"),
            reconciles: by_label(&text, "pullsecret_injector_sync_reconciles_total", "result"),
            copies: by_label(&text, "pullsecret_injector_sync_copies_total", "action"),
            cpu: self.cpu(),
            plane_cpu: self.plane.iter().map(|&p| cpu_of(p, self.tck)).sum(),
        }
    }

    /// Samples the metrics every 100 ms from `before` on until every copy in `want` has
    /// arrived (relative to `since`) and no pass ended and no request or copy write was
    /// counted for [`QUIET`]; returns the last sample, the arrival and the passes.
    async fn observe(
        &self,
        what: &str,
        before: &Snap,
        seen: &Mutex<Seen>,
        want: &HashMap<Key, Vec<u8>>,
        since: Instant,
    ) -> Observed {
        let deadline = Instant::now() + WAIT;
        let mut last = before.clone();
        let mut quiet_since = Instant::now();
        let mut passes = Vec::new();
        // Requests counted at the end of the last pass seen.
        let mut requests_at_pass = Snap::total(&before.requests);
        let mut arrival = None;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let s = self.snap().await;
            let (req, rec, _) = s.counters();
            if rec > last.counters().1 {
                passes.push(PassSample {
                    passes: rec - last.counters().1,
                    requests: req - requests_at_pass,
                });
                requests_at_pass = req;
            }
            if s.counters() != last.counters() {
                quiet_since = Instant::now();
            }
            last = s;
            if arrival.is_none() && !want.is_empty() {
                match arrived(seen, want, since) {
                    Ok(a) => arrival = Some(a),
                    Err(missing) => assert!(
                        Instant::now() < deadline,
                        "{what}: {missing} of {} copies still missing or stale after {WAIT:?}",
                        want.len()
                    ),
                }
            }
            if (arrival.is_some() || want.is_empty()) && quiet_since.elapsed() >= QUIET {
                return Observed {
                    snap: last,
                    arrival,
                    passes,
                };
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the controller did not settle (3 s without a pass or request) within \
                 {WAIT:?}; last counters {:?}",
                last.counters()
            );
        }
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------- the audit log: our ServiceAccount's requests on Secrets ----------

/// Reads the audit log on from where it last stopped.
struct Audit {
    path: PathBuf,
    offset: u64,
    /// The last line read, when not yet complete.
    partial: Vec<u8>,
    user: String,
}

#[derive(Default)]
struct AuditCount {
    /// Our requests on Secrets by verb (any outcome; watches included).
    by_verb: BTreeMap<String, u64>,
    /// Failed writes, by `verb code`.
    failed: BTreeMap<String, u64>,
    /// Successful writes (create, update, patch, delete) per secret.
    written: HashMap<Key, u64>,
}

impl AuditCount {
    fn ok_writes(&self) -> u64 {
        self.written.values().sum()
    }
    fn failed_writes(&self) -> u64 {
        self.failed.values().sum()
    }
}

impl Audit {
    fn read(&mut self) -> AuditCount {
        let mut f = std::fs::File::open(&self.path).expect("audit log");
        f.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut text = std::mem::take(&mut self.partial);
        let read = f.read_to_end(&mut text).unwrap();
        self.offset += read as u64;
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.partial = text.split_off(complete);
        let mut out = AuditCount::default();
        for line in text.split(|&b| b == b'\n') {
            let Ok(e) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if e["stage"] != "ResponseComplete"
                || e["objectRef"]["resource"] != "secrets"
                || !e["objectRef"]["subresource"].is_null()
                || e["user"]["username"].as_str() != Some(self.user.as_str())
            {
                continue;
            }
            let verb = e["verb"].as_str().unwrap_or_default().to_string();
            *out.by_verb.entry(verb.clone()).or_default() += 1;
            if !matches!(verb.as_str(), "create" | "update" | "patch" | "delete") {
                continue;
            }
            let code = e["responseStatus"]["code"].as_i64().unwrap_or_default();
            if (200..300).contains(&code) {
                let s = |f: &str| e["objectRef"][f].as_str().unwrap_or_default().to_string();
                *out.written.entry((s("namespace"), s("name"))).or_default() += 1;
            } else {
                *out.failed.entry(format!("{verb} {code}")).or_default() += 1;
            }
        }
        out
    }
}

// ---------- one measured phase ----------

struct Phase {
    name: String,
    /// Copies that had to be written (created or changed).
    wanted: usize,
    arrival: Option<Arrival>,
    before: Snap,
    after: Snap,
    audit: AuditCount,
    /// The keys that had to change, to find writes to any other.
    changed: HashSet<Key>,
    /// Creates or data changes the bench's watch saw.
    seen_changes: u64,
    passes: Vec<PassSample>,
    /// From the phase's start to its last sample.
    elapsed: Duration,
}

impl Phase {
    fn requests(&self) -> BTreeMap<String, f64> {
        delta(&self.before.requests, &self.after.requests)
    }
    fn reconciles(&self) -> BTreeMap<String, f64> {
        delta(&self.before.reconciles, &self.after.reconciles)
    }
    fn copies(&self) -> BTreeMap<String, f64> {
        delta(&self.before.copies, &self.after.copies)
    }
    fn written(&self) -> f64 {
        Snap::total(&self.copies())
    }
    fn passes(&self) -> (f64, f64) {
        let r = self.reconciles();
        (
            r.get("success").copied().unwrap_or(0.0),
            r.get("failure").copied().unwrap_or(0.0),
        )
    }
    /// Successful writes by us to secrets that did not have to change, plus repeated
    /// writes to those that did.
    fn needless_writes(&self) -> u64 {
        self.audit
            .written
            .iter()
            .map(|(k, n)| if self.changed.contains(k) { n - 1 } else { *n })
            .sum()
    }
    /// Requests of each pass, in order ("2 passes: n" when two ended within one sample).
    fn per_pass(&self) -> String {
        if self.passes.is_empty() {
            return "–".into();
        }
        self.passes
            .iter()
            .map(|p| {
                if p.passes == 1.0 {
                    format!("{}", p.requests)
                } else {
                    format!("({} passes) {}", p.passes, p.requests)
                }
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }

    fn cpu(&self) -> Duration {
        self.after.cpu.saturating_sub(self.before.cpu)
    }

    fn plane_cpu(&self) -> Duration {
        self.after.plane_cpu.saturating_sub(self.before.plane_cpu)
    }

    fn per_copy(&self) -> String {
        let w = self.written();
        if w == 0.0 {
            "–".into()
        } else {
            format!("{:.3}", Snap::total(&self.requests()) / w)
        }
    }
}

/// A row of the rotation summary: its label, the value of one phase, decimals shown.
type SummaryRow<'a> = (&'a str, &'a dyn Fn(&Phase) -> f64, usize);

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn counts(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_u(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn write_source(c: &Client, e: usize, data: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    Api::<Secret>::namespaced(c.clone(), SOURCE_NS)
        .patch(
            &source_name(e),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {".dockerconfigjson": b64}})),
        )
        .await
        .unwrap_or_else(|err| panic!("rewrite source {SOURCE_NS}/{}: {err}", source_name(e)));
}

/// Every wanted copy of `entries` → the data it must hold.
fn want_of(
    entries: &[usize],
    wanted: &[Vec<usize>],
    nss: &[Ns],
    data: &[Vec<u8>],
) -> HashMap<Key, Vec<u8>> {
    let mut out = HashMap::new();
    for &e in entries {
        for &i in &wanted[e] {
            out.insert((nss[i].name.clone(), copy_name(e)), data[e].clone());
        }
    }
    out
}

/// How many of `objects` are in a namespace of `names`.
fn in_names<'a>(objects: impl Iterator<Item = &'a ObjectMeta>, names: &HashSet<String>) -> usize {
    objects
        .filter(|m| m.namespace.as_ref().is_some_and(|n| names.contains(n)))
        .count()
}

/// Waits until kube-controller-manager has done its per-namespace work (the `default`
/// ServiceAccount and the `kube-root-ca.crt` ConfigMap) in every namespace in `names`, so
/// it does not run during the fill.
async fn wait_namespaces_settled(c: &Client, names: &HashSet<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let sas = Api::<ServiceAccount>::all(c.clone())
            .list_metadata(&ListParams::default().fields("metadata.name=default"))
            .await
            .expect("list serviceaccounts");
        let cms = Api::<ConfigMap>::all(c.clone())
            .list_metadata(&ListParams::default().fields("metadata.name=kube-root-ca.crt"))
            .await
            .expect("list configmaps");
        let (s, m) = (
            in_names(sas.items.iter().map(|o| &o.metadata), names),
            in_names(cms.items.iter().map(|o| &o.metadata), names),
        );
        if s == names.len() && m == names.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kube-controller-manager did not finish the new namespaces within {WAIT:?} \
             ({s} default ServiceAccounts, {m} root CA ConfigMaps of {})",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than ours means "not us".
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "sync")
    {
        return;
    }
    if std::env::var_os("KUBEBUILDER_ASSETS").is_none() {
        eprintln!("sync bench: set KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) to run it");
        return;
    }
    let wall = Instant::now();
    let n = env_usize("SYNC_BENCH_NAMESPACES", 500).max(10);
    let rounds = env_usize("SYNC_BENCH_ROUNDS", 5).max(1);
    let idle = Duration::from_secs(env_usize("SYNC_BENCH_IDLE_SECS", 20) as u64);

    let env = envtest::start().await.expect("control plane");
    let c = env.client.clone();
    let server_version = c.apiserver_version().await.unwrap().git_version;

    // Namespaces, created PARALLEL_CREATES at a time (plain creates: the bench needs no
    // ServiceAccount in them).
    let nss = namespaces(n);
    let t = Instant::now();
    let ns_api = Api::<Namespace>::all(c.clone());
    futures_util::stream::iter(nss.iter().map(|ns| {
        let api = ns_api.clone();
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.name.clone()),
                labels: Some(ns.labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        async move {
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("create namespace {:?}: {e}", obj.metadata.name));
        }
    }))
    .buffer_unordered(PARALLEL_CREATES)
    .collect::<Vec<()>>()
    .await;
    let created_in = t.elapsed();
    let names: HashSet<String> = nss.iter().map(|n| n.name.clone()).collect();
    wait_namespaces_settled(&c, &names).await;
    eprintln!(
        "sync bench: {n} namespaces created in {} ({} with kube-controller-manager's work)",
        secs(created_in),
        secs(t.elapsed())
    );

    // Sources at version 0.
    envtest::create_namespace(&c, SOURCE_NS, None).await;
    let mut data: Vec<Vec<u8>> = (0..ENTRIES).map(|e| auths(e, 0)).collect();
    for (e, d) in data.iter().enumerate() {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some(source_name(e)),
                ..Default::default()
            },
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(d.clone()),
            )])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(c.clone(), SOURCE_NS)
            .create(&PostParams::default(), &s)
            .await
            .unwrap_or_else(|err| panic!("create source {e}: {err}"));
    }
    let wanted: Vec<Vec<usize>> = (0..ENTRIES)
        .map(|e| (0..n).filter(|&i| Scope::of(e).contains(&nss[i])).collect())
        .collect();
    let all: Vec<usize> = (0..ENTRIES).collect();
    let total: usize = wanted.iter().map(Vec::len).sum();

    let (seen, watch_task) = watch_copies(c.clone());
    envtest::eventually(
        Duration::from_secs(30),
        "the bench's copy watch",
        || async { seen.lock().unwrap().synced.then_some(()) },
    )
    .await;

    // 1. Initial fill, from the process's start.
    let before_install = Instant::now();
    let install = install::Install::new(&env, &values(), &["--identity", "bench-0"]).await;
    let p = Proc {
        pid: install.server().child.id(),
        metrics_url: format!("http://{}/metrics", install.server().metrics_addr),
        tck: clock_ticks(),
        plane: control_plane(env.dir.path()),
    };
    let started = Instant::now() - p.age();
    let mut audit = Audit {
        path: env.audit_log.clone(),
        offset: 0,
        partial: Vec::new(),
        user: format!(
            "system:serviceaccount:{}:{}",
            install::RELEASE_NS,
            install::FULLNAME
        ),
    };
    let want = want_of(&all, &wanted, &nss, &data);
    // The control plane's CPU before the process started is not the fill's: take it now
    // (the fill's first second or two of it is lost; the process's own CPU is all counted).
    let zero = Snap {
        plane_cpu: p.snap().await.plane_cpu,
        ..Snap::default()
    };
    let o = p
        .observe("initial fill", &zero, &seen, &want, started)
        .await;
    let after = o.snap.clone();
    let mut phases = vec![Phase {
        name: "initial fill (from process start)".into(),
        wanted: total,
        arrival: o.arrival,
        before: zero,
        after: after.clone(),
        audit: audit.read(),
        changed: want.keys().cloned().collect(),
        seen_changes: seen.lock().unwrap().changes,
        passes: o.passes,
        elapsed: started.elapsed(),
    }];
    let mut anomalies: Vec<String> = Vec::new();
    {
        let s = seen.lock().unwrap();
        let extra: Vec<&Key> = s.copies.keys().filter(|k| !want.contains_key(*k)).collect();
        if !extra.is_empty() {
            anomalies.push(format!(
                "{} managed copies exist that no entry wants, e.g. {:?}",
                extra.len(),
                &extra[..extra.len().min(5)]
            ));
        }
    }

    // 2. Idle.
    let before = after;
    let changes = seen.lock().unwrap().changes;
    let t0 = Instant::now();
    tokio::time::sleep(idle).await;
    let after = p.snap().await;
    let idle_passes = after.counters().1 - before.counters().1;
    let passes = if idle_passes > 0.0 {
        vec![PassSample {
            passes: idle_passes,
            requests: after.counters().0 - before.counters().0,
        }]
    } else {
        Vec::new()
    };
    phases.push(Phase {
        name: format!("idle {} s", idle.as_secs()),
        wanted: 0,
        arrival: None,
        before,
        after: after.clone(),
        audit: audit.read(),
        changed: HashSet::new(),
        seen_changes: seen.lock().unwrap().changes - changes,
        passes,
        elapsed: t0.elapsed(),
    });

    // 3. Rotations.
    let mut version = 0u64;
    let mut before = after;
    for round in 1..=rounds {
        for (label, entries) in [
            (
                format!("rotate 1 source ({} copies)", wanted[SINGLE].len()),
                vec![SINGLE],
            ),
            (format!("rotate all {ENTRIES} sources"), all.clone()),
        ] {
            version += 1;
            for &e in &entries {
                data[e] = auths(e, version);
            }
            let want = want_of(&entries, &wanted, &nss, &data);
            let changes = seen.lock().unwrap().changes;
            let t0 = Instant::now();
            futures_util::future::join_all(entries.iter().map(|&e| write_source(&c, e, &data[e])))
                .await;
            let what = format!("{label}, round {round}");
            let o = p.observe(&what, &before, &seen, &want, t0).await;
            let after = o.snap.clone();
            phases.push(Phase {
                name: what,
                wanted: want.len(),
                arrival: o.arrival,
                before,
                after: after.clone(),
                audit: audit.read(),
                changed: want.keys().cloned().collect(),
                seen_changes: seen.lock().unwrap().changes - changes,
                passes: o.passes,
                elapsed: t0.elapsed(),
            });
            before = after;
        }
    }

    // Afterwards: Events the process left, and what its log says about dropped ones.
    // The Recorder folds Events of one reason about one object into a series (one create,
    // then a patch per repeat), so the sum of series counts is the publishes that landed.
    let events = Api::<Event>::all(c.clone())
        .list(&ListParams::default())
        .await
        .expect("list events");
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut event_namespaces: BTreeMap<String, u64> = BTreeMap::new();
    for ev in events
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("pullsecret-injector"))
    {
        *event_namespaces
            .entry(ev.metadata.namespace.clone().unwrap_or_default())
            .or_default() += 1;
        let n = ev.series.as_ref().map_or(1, |s| s.count.max(1)) as u64;
        *reasons
            .entry(ev.reason.clone().unwrap_or_default())
            .or_default() += n;
    }
    let log = install.server().log();
    let dropped = log.matches("event dropped").count();
    let write_failures = log.matches("sync write failed").count();
    let final_deletes = seen.lock().unwrap().deletes;
    watch_task.abort();
    let rss = p.peak_rss_kib();

    // ---------- report ----------
    println!(
        "Secret sync through kube-apiserver {server_version}: {n} namespaces, {ENTRIES} registry entries \
         with sources, {total} wanted copies, {rounds} rotation rounds"
    );
    println!();
    println!("| entries | scope | copies per entry |");
    println!("|---|---|---:|");
    for scope in SCOPES {
        let es: Vec<usize> = (0..ENTRIES).filter(|&e| Scope::of(e) == scope).collect();
        let per: Vec<String> = es.iter().map(|&e| wanted[e].len().to_string()).collect();
        let mut per_unique = per.clone();
        per_unique.dedup();
        println!(
            "| {}–{} | {} | {} |",
            es[0],
            es[es.len() - 1],
            scope.describe(),
            per_unique.join(", ")
        );
    }
    println!();
    println!(
        "| phase | copies to write | first copy | median copy | last copy | phase length \
         (until settled) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for ph in &phases {
        let (first, med, last) = match &ph.arrival {
            Some(a) => (secs(a.first), secs(a.median), secs(a.last)),
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!(
            "| {} | {} | {first} | {med} | {last} | {} |",
            ph.name,
            ph.wanted,
            secs(ph.elapsed)
        );
    }
    println!();
    println!(
        "| phase | passes ok / failed | requests of each pass | requests (by verb) \
         | copies written (metric) | requests / copy written \
         | audit: our Secret writes ok / failed | needless writes \
         | controller CPU | API server + etcd CPU |"
    );
    println!("|---|---:|---|---|---|---:|---:|---:|---:|---:|");
    for ph in &phases {
        let (ok, failed) = ph.passes();
        println!(
            "| {} | {ok} / {failed} | {} | {} | {} | {} | {} / {} | {} | {:.2} s | {:.2} s |",
            ph.name,
            ph.per_pass(),
            counts(&ph.requests()),
            counts(&ph.copies()),
            ph.per_copy(),
            ph.audit.ok_writes(),
            ph.audit.failed_writes(),
            ph.needless_writes(),
            ph.cpu().as_secs_f64(),
            ph.plane_cpu().as_secs_f64(),
        );
    }
    println!();

    // Sorted values of `f` over the phases whose name starts with `prefix`.
    let over = |prefix: &str, f: &dyn Fn(&Phase) -> f64| -> Vec<f64> {
        let mut v: Vec<f64> = phases
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    // CPU net of what the processes burn while idle (the control plane's background work,
    // Lease renewals, the bench's scrapes), over each phase's duration.
    let idle_ph = &phases[1];
    let rate = |cpu: Duration| cpu.as_secs_f64() / idle_ph.elapsed.as_secs_f64();
    let (ctl_idle, plane_idle) = (rate(idle_ph.cpu()), rate(idle_ph.plane_cpu()));
    let net = move |cpu: Duration, p: &Phase, idle_rate: f64| {
        (cpu.as_secs_f64() - idle_rate * p.elapsed.as_secs_f64()).max(0.0)
    };
    let med_f = |v: &[f64]| {
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    println!("| rotation ({rounds} rounds) | median | max |");
    println!("|---|---:|---:|");
    for (prefix, label) in [
        (
            "rotate 1 source",
            format!("1 source ({} copies)", wanted[SINGLE].len()),
        ),
        (
            "rotate all",
            format!("all {ENTRIES} sources ({total} copies)"),
        ),
    ] {
        let rows: [SummaryRow; 6] = [
            (
                "last copy updated, s",
                &|p: &Phase| p.arrival.as_ref().unwrap().last.as_secs_f64(),
                2,
            ),
            (
                "copies updated per second (first to last copy)",
                &|p: &Phase| {
                    let a = p.arrival.as_ref().unwrap();
                    p.wanted as f64 / (a.last - a.first).as_secs_f64().max(1e-3)
                },
                0,
            ),
            (
                "requests / copy written",
                &|p: &Phase| Snap::total(&p.requests()) / p.written().max(1.0),
                3,
            ),
            (
                "passes",
                &|p: &Phase| {
                    let (ok, failed) = p.passes();
                    ok + failed
                },
                0,
            ),
            (
                "controller CPU per copy written (net of idle), µs",
                &|p: &Phase| net(p.cpu(), p, ctl_idle) * 1e6 / p.written().max(1.0),
                0,
            ),
            (
                "API server + etcd CPU per copy written (net of idle), µs",
                &|p: &Phase| net(p.plane_cpu(), p, plane_idle) * 1e6 / p.written().max(1.0),
                0,
            ),
        ];
        for (what, f, decimals) in rows {
            let v = over(prefix, f);
            let show = |x: f64| format!("{x:.decimals$}");
            println!(
                "| {label}: {what} | {} | {} |",
                show(med_f(&v)),
                show(v[v.len() - 1])
            );
        }
    }
    println!();
    let fill = &phases[0];
    let a = fill.arrival.as_ref().unwrap();
    println!(
        "Initial fill: {} copies in {} from process start ({:.0} copies/s over the whole fill, \
         {:.0} copies/s from first to last copy); the chart's setup before the process \
         started took {}.",
        total,
        secs(a.last),
        total as f64 / a.last.as_secs_f64(),
        (total as f64 - 1.0) / (a.last - a.first).as_secs_f64().max(1e-3),
        secs(started.saturating_duration_since(before_install))
    );
    println!(
        "Our ServiceAccount's requests on Secrets in the audit log, initial fill: {} \
         (list and watch are the caches' own).",
        counts_u(&fill.audit.by_verb)
    );
    println!(
        "Events published by the controller (each one API request, not in the requests \
         metric): {} in Event objects by namespace: {}; {dropped} more dropped for a full \
         queue (log); controller peak RSS {:.1} MiB; bench wall time {}.",
        counts_u(&reasons),
        counts_u(&event_namespaces),
        rss as f64 / 1024.0,
        secs(wall.elapsed())
    );

    // ---------- anomalies ----------
    for ph in &phases {
        let (_, failed) = ph.passes();
        if failed > 0.0 {
            anomalies.push(format!("{}: {failed} failed passes", ph.name));
        }
        if ph.audit.failed_writes() > 0 {
            anomalies.push(format!(
                "{}: failed writes in the audit log: {}",
                ph.name,
                counts_u(&ph.audit.failed)
            ));
        }
        if ph.needless_writes() > 0 {
            anomalies.push(format!(
                "{}: {} successful writes to copies that did not need one",
                ph.name,
                ph.needless_writes()
            ));
        }
        let w = ph.written();
        if (w - ph.wanted as f64).abs() > 0.5 {
            anomalies.push(format!(
                "{}: {} copies had to change but the controller counts {w} written",
                ph.name, ph.wanted
            ));
        }
        if ph.audit.ok_writes() as f64 != w {
            anomalies.push(format!(
                "{}: the controller counts {w} copies written, the audit log {} successful writes",
                ph.name,
                ph.audit.ok_writes()
            ));
        }
        if ph.seen_changes != ph.wanted as u64 {
            anomalies.push(format!(
                "{}: the bench's watch saw {} copies change, {} had to",
                ph.name, ph.seen_changes, ph.wanted
            ));
        }
        let req = Snap::total(&ph.requests());
        if ph.wanted == 0 && (req > 0.0 || !ph.audit.by_verb.is_empty()) {
            anomalies.push(format!(
                "{}: {req} requests counted while nothing changed (audit: {})",
                ph.name,
                counts_u(&ph.audit.by_verb)
            ));
        }
        if ph.wanted > 0 && req > w {
            anomalies.push(format!(
                "{}: {req} requests for {w} copies written ({})",
                ph.name,
                counts(&ph.requests())
            ));
        }
    }
    if final_deletes > 0 {
        anomalies.push(format!("{final_deletes} copies deleted during the run"));
    }
    if dropped > 0 {
        anomalies.push(format!(
            "{dropped} Events dropped by the controller (its queue was full)"
        ));
    }
    if write_failures > 0 {
        anomalies.push(format!("{write_failures} `sync write failed` log lines"));
    }
    println!();
    if anomalies.is_empty() {
        println!("Anomalies: none.");
    } else {
        println!("Anomalies:");
        for a in &anomalies {
            println!("- {a}");
        }
    }
    drop(install);
}
