//! The secret sync under faults, against a real API server (envtest convention, see
//! `tests/common/envtest.rs`) and through the public surface only: the chart installed,
//! the real binary (`serve`) as its ServiceAccount (`tests/common/install.rs`), its
//! `/readyz` and metrics, and what the API server shows and audits. The shared world
//! (source `creds/tcr-src`, entry `tcr` copying it as `tcr-pull` into `team-*` namespaces
//! labelled `registry-access=tcr`) is `tests/common/sync.rs`.
//!
//! The leader election's documented timings (README, "One writer"): lease duration 15 s,
//! renew deadline 10 s (a leader stops writing, gauge 0, at most 10 s after the start of
//! its last successful renewal), retry period 2 s; a standby takes over at the earliest
//! 15 s after it last saw the Lease record change.
//!
//! Run with `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test
//! e2e_sync_faults -- --test-threads=1`; without it every test prints a skip notice and
//! passes (under `CI=true` it fails instead).

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;
#[path = "common/sync.rs"]
mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use envtest::eventually;
use install::{is_leader, metric, scrape};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::Server;
use sync::{
    LogOnPanic, Request, SECRET, SOURCE, SOURCE_NS, WAIT, auths, create_ns, data_of, entry,
    get_secret, rotate_source, set_in_scope, values, wait_copy, wait_gone, wait_leader,
};

const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Allowance on top of the documented timings: a retry period, scheduling, our polling.
const SLACK: Duration = Duration::from_secs(5);
/// How soon a ready replica acts on a change it is told about by its watches (a
/// debounce and a few requests: well under a second when all is well).
const PROPAGATION: Duration = Duration::from_secs(10);

/// Namespaces in scope throughout the failover test.
const STAY: usize = 40;

/// Creates namespace `name` in the entry's scope, without waiting for its ServiceAccount
/// (no Pod is created there).
async fn create_bare_ns(c: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"registry-access": "tcr"}}
    }))
    .unwrap();
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// Sends SIGKILL to `server`'s process and reaps it.
fn sigkill(mut server: Server) {
    support::unsafe_kill(server.child.id(), "KILL");
    let status = support::wait_with_deadline(&mut server.child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

fn assert_running(server: &mut Server, what: &str) {
    let status = server.child.try_wait().expect("try_wait");
    assert!(
        status.is_none(),
        "{what} exited ({status:?}):\n{}",
        server.log()
    );
}

/// All `pullsecret_injector_sync_copies_total` (every action) `server` reports.
async fn copies(server: &Server) -> f64 {
    let text = scrape(server).await.expect("metrics");
    metric(&text, "pullsecret_injector_sync_copies_total", &[]).unwrap_or(0.0)
}

async fn copies_of(server: &Server, action: &str) -> f64 {
    let text = scrape(server).await.expect("metrics");
    metric(
        &text,
        "pullsecret_injector_sync_copies_total",
        &[("action", action)],
    )
    .unwrap_or(0.0)
}

/// All `pullsecret_injector_sync_api_requests_total` `server` reports, or those of `verb`.
async fn api_requests(server: &Server, verb: Option<&str>) -> f64 {
    let text = scrape(server).await.expect("metrics");
    let labels: Vec<(&str, &str)> = verb.map(|v| ("verb", v)).into_iter().collect();
    metric(
        &text,
        "pullsecret_injector_sync_api_requests_total",
        &labels,
    )
    .unwrap_or(0.0)
}

async fn delete_ns(c: &Client, ns: &str) {
    Api::<Namespace>::all(c.clone())
        .delete(ns, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete namespace {ns}: {e}"));
}

async fn wait_ns_gone(c: &Client, ns: &str) {
    let api = Api::<Namespace>::all(c.clone());
    eventually(
        Duration::from_secs(60),
        &format!("namespace {ns} gone"),
        || async { api.get_opt(ns).await.unwrap().is_none().then_some(()) },
    )
    .await;
}

/// Polls `server` until it reports leader; returns when it first did (`None` after
/// `limit`).
async fn first_leads(server: &Server, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if is_leader(server).await == Some(true) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The audit log's verdict on our writes to the copies, given the source's rotations
/// (`rotations`: when each rotation request was received, in order). Checks, per copy
/// (namespace): at most one successful create (none for a copy that exists already: no
/// namespace here is recreated and no copy deleted while in scope); and no two successful
/// updates for the same source version. The latter as a pigeonhole: each update must
/// move the copy to a version newer than the one it holds, so the k-th successful update
/// of a copy must complete after at least k rotations were received. `ours` are our
/// writes (`sync::our_writes`), in completion order; returns the successful ones by
/// namespace, or what is wrong.
fn check_writes(
    ours: Vec<Request>,
    rotations: &[Timestamp],
) -> Result<BTreeMap<String, Vec<Request>>, String> {
    let mut by_ns: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for r in ours.into_iter().filter(Request::ok) {
        if r.name != SECRET {
            return Err(format!("we write only copies: {r:#?}"));
        }
        by_ns.entry(r.namespace.clone()).or_default().push(r);
    }
    for (ns, writes) in &by_ns {
        let creates = writes.iter().filter(|r| r.verb == "create").count();
        if creates > 1 {
            return Err(format!("{ns}: a copy created twice: {writes:#?}"));
        }
        let updates: Vec<&Request> = writes.iter().filter(|r| r.verb == "update").collect();
        if updates.len() > rotations.len() {
            return Err(format!(
                "{ns}: {} updates for {} rotations: {writes:#?}",
                updates.len(),
                rotations.len()
            ));
        }
        for (k, u) in updates.iter().enumerate() {
            let versions = rotations.iter().filter(|t| **t < u.completed).count();
            if versions <= k {
                return Err(format!(
                    "{ns}: update #{} completed at {} when only {versions} rotation(s) had \
                     been received: some source version was written twice\nrotations: \
                     {rotations:?}\nwrites: {writes:#?}",
                    k + 1,
                    u.completed
                ));
            }
        }
    }
    Ok(by_ns)
}

/// [`check_writes`] itself, on made-up audit records: one update per rotation passes,
/// and a second write of one version (two writers, or a no-op rewrite) is caught.
#[test]
fn check_writes_catches_a_version_written_twice() {
    let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
    let write = |verb: &str, done: i64| Request {
        verb: verb.into(),
        namespace: "team-1".into(),
        name: SECRET.into(),
        user: sync::our_user(),
        code: if verb == "create" { 201 } else { 200 },
        received: at(done) - k8s_openapi::jiff::SignedDuration::from_millis(10),
        completed: at(done),
    };
    let rotations = [at(10), at(20), at(30)];
    // Created, then one update after each of the first two rotations (the third
    // coalesced into the second's pass, say).
    let good = vec![write("create", 0), write("update", 11), write("update", 21)];
    assert_eq!(
        check_writes(good.clone(), &rotations).unwrap()["team-1"].len(),
        3
    );
    // Two updates after only one rotation: one of them rewrote a version.
    let mut twice = good.clone();
    twice.insert(2, write("update", 12));
    let err = check_writes(twice, &rotations).expect_err("two updates after one rotation");
    assert!(err.contains("update #2"), "{err}");
    // A second create of an existing copy.
    let mut recreated = good;
    recreated.push(write("create", 31));
    let err = check_writes(recreated, &rotations).expect_err("created twice");
    assert!(err.contains("created twice"), "{err}");
}

/// Two replicas; the leader is SIGKILLed while the source rotates and namespaces come
/// and go. The standby takes over within one lease duration (and not before the old
/// leader's lease could have run out), every copy converges to the final source, nothing
/// out of scope keeps or gets a copy, an unowned same-name secret is never touched, and
/// the audit log shows no copy written twice for one source version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_rotation_fails_over_without_double_writes() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    // In scope throughout; enough copies that a rotation takes the leader several rounds
    // of parallel writes, so the kill can land in the middle of one.
    let stay: Vec<String> = (1..=STAY).map(|i| format!("team-{i}")).collect();
    let stay: Vec<&str> = stay.iter().map(String::as_str).collect();
    for ns in &stay {
        create_bare_ns(&c, ns).await;
    }
    create_ns(&c, "team-leaving", true).await; // relabelled out during the failover
    create_ns(&c, "team-doomed", true).await; // deleted during the failover
    create_ns(&c, "team-out", false).await; // never in scope
    // In scope, holding an unowned secret of the managed name (planted before it comes
    // into scope, so no copy can be first).
    create_ns(&c, "team-foreign", false).await;
    let foreign = Api::<Secret>::namespaced(c.clone(), "team-foreign")
        .create(
            &PostParams::default(),
            &sync::pull_secret("team-foreign", SECRET, auths("theirs")),
        )
        .await
        .unwrap();
    set_in_scope(&c, "team-foreign", true).await;

    let mut install = sync::install(&env, &values(json!([entry()])), "a", false).await;
    let a = install.server.take().expect("running");
    let b = install.start_replica("b");
    let _logs = [LogOnPanic::new("a", &a), LogOnPanic::new("b", &b)];
    for ns in stay.iter().chain(&["team-leaving", "team-doomed"]) {
        wait_copy(&c, ns, &auths("v1")).await;
    }
    let a_leads = eventually(WAIT, "exactly one of a and b reports leader", || async {
        let (la, lb) = (is_leader(&a).await?, is_leader(&b).await?);
        (la != lb).then_some(la)
    })
    .await;
    let (leader, mut standby) = if a_leads { (a, b) } else { (b, a) };
    let (leader_id, standby_id) = if a_leads { ("a", "b") } else { ("b", "a") };

    // Rotate, and kill the leader as soon as it has written part of the rotation (or at
    // once, had it written all of it before we looked).
    let before = copies(&leader).await;
    let last_seen_leading = Instant::now();
    assert_eq!(is_leader(&leader).await, Some(true), "{leader_id} leads");
    rotate_source(&c, auths("v2")).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while copies(&leader).await == before && Instant::now() < deadline {}
    sigkill(leader);
    let killed_at = Instant::now();
    let mut at_v2 = 0;
    for ns in &stay {
        if get_secret(&c, ns, SECRET)
            .await
            .is_some_and(|s| data_of(&s) == auths("v2"))
        {
            at_v2 += 1;
        }
    }
    eprintln!("killed leader {leader_id} with {at_v2} of {STAY} copies at v2");

    // The failover window: more rotations and namespace churn while the standby waits.
    let churn = async {
        delete_ns(&c, "team-doomed").await;
        rotate_source(&c, auths("v3")).await;
        set_in_scope(&c, "team-leaving", false).await;
        create_ns(&c, "team-late", true).await;
        rotate_source(&c, auths("v4")).await;
        create_ns(&c, "team-brief", true).await;
        delete_ns(&c, "team-brief").await;
        rotate_source(&c, auths("v5")).await;
    };
    let (took_over, ()) = tokio::join!(
        first_leads(&standby, LEASE_DURATION + SLACK + Duration::from_secs(20)),
        churn
    );
    let took_over = took_over.unwrap_or_else(|| {
        panic!(
            "standby {standby_id} never reported leader:\n{}",
            standby.log()
        )
    });
    let after_kill = took_over - killed_at;
    assert!(
        after_kill <= LEASE_DURATION + SLACK,
        "standby {standby_id} took over {after_kill:?} after the kill"
    );
    // The old leader was renewing no earlier than RENEW_DEADLINE before we last saw it
    // lead, and the standby may not take over before LEASE_DURATION after that renewal.
    let after_seen = took_over - last_seen_leading;
    assert!(
        after_seen >= LEASE_DURATION - RENEW_DEADLINE,
        "standby {standby_id} took over {after_seen:?} after {leader_id} was last seen \
         leading: before its lease could have expired"
    );
    eprintln!("standby {standby_id} took over {after_kill:?} after the kill");

    // Convergence.
    for ns in stay.iter().chain(&["team-late"]) {
        wait_copy(&c, ns, &auths("v5")).await;
    }
    wait_gone(&c, "team-leaving").await;
    for ns in ["team-doomed", "team-brief"] {
        wait_ns_gone(&c, ns).await;
    }
    assert!(get_secret(&c, "team-out", SECRET).await.is_none());
    let now = get_secret(&c, "team-foreign", SECRET).await.unwrap();
    assert_eq!(
        now.metadata.resource_version, foreign.metadata.resource_version,
        "the unowned secret was written"
    );
    assert_eq!(now.data, foreign.data);
    assert_running(&mut standby, "the new leader");

    // The audit log.
    let requests = sync::secret_requests(&env);
    let rotations: Vec<Timestamp> = requests
        .iter()
        .filter(|r| r.namespace == SOURCE_NS && r.name == SOURCE)
        .filter(|r| r.verb == "update" && r.ok() && !r.by_us())
        .map(|r| r.received)
        .collect();
    assert_eq!(rotations.len(), 4, "v2..v5 are audited");
    let writes = check_writes(sync::our_writes(&env), &rotations).unwrap_or_else(|e| panic!("{e}"));
    assert!(!writes.is_empty(), "the audit log records our writes");
    let count = |ns: &str, verb: &str| {
        writes
            .get(ns)
            .map_or(0, |w| w.iter().filter(|r| r.verb == verb).count())
    };
    for &ns in &stay {
        assert_eq!(count(ns, "create"), 1, "{ns}: {:#?}", writes.get(ns));
        assert!(count(ns, "update") >= 1, "{ns} followed the rotations");
        assert_eq!(count(ns, "delete"), 0, "{ns}: {:#?}", writes.get(ns));
    }
    assert_eq!(count("team-late", "create"), 1);
    assert_eq!(count("team-leaving", "create"), 1);
    assert_eq!(count("team-leaving", "delete"), 1);
    for ns in ["team-out", "team-foreign"] {
        assert!(!writes.contains_key(ns), "{ns}: {:#?}", writes.get(ns));
    }
    let in_scope: BTreeSet<&str> = stay
        .iter()
        .copied()
        .chain(["team-late", "team-leaving", "team-doomed", "team-brief"])
        .collect();
    for ns in writes.keys() {
        assert!(in_scope.contains(ns.as_str()), "wrote in {ns}");
    }
}

/// The namespaces of the freeze and restart tests.
const NAMESPACES: [&str; 3] = ["team-1", "team-2", "team-3"];

/// One replica leading, with a copy of source `v1` in each of [`NAMESPACES`].
async fn copies_in_three_namespaces(env: &envtest::Envtest) -> install::Install {
    for ns in NAMESPACES {
        create_ns(&env.client, ns, true).await;
    }
    let install = sync::install(env, &values(json!([entry()])), "a", false).await;
    for ns in NAMESPACES {
        wait_copy(&env.client, ns, &auths("v1")).await;
    }
    wait_leader(install.server(), true, WAIT).await;
    install
}

/// The API server freezes (SIGSTOP) for longer than the lease: the leader cannot renew,
/// so it stops writing within the renew deadline and says so on its gauge (its metrics
/// port is its own, and answers); once the API server runs again it leads again and a new
/// rotation reaches every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_frozen_past_the_lease_leader_steps_down_then_resumes() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let mut install = copies_in_three_namespaces(&env).await;
    let _log = LogOnPanic::new("the process", install.server());

    const FREEZE: Duration = Duration::from_secs(25);
    let frozen = env.freeze_apiserver();
    let frozen_at = Instant::now();
    // No API request from here until thawed: it would hang.
    eventually(
        RENEW_DEADLINE + SLACK,
        "the leader gauge drops to 0 while the API server is frozen",
        || async { (is_leader(install.server()).await == Some(false)).then_some(()) },
    )
    .await;
    let stepped_down = frozen_at.elapsed();
    assert!(
        stepped_down <= RENEW_DEADLINE + SLACK,
        "stepped down {stepped_down:?} into the freeze"
    );
    // ...and stays down while frozen.
    while frozen_at.elapsed() < FREEZE {
        assert_eq!(
            is_leader(install.server()).await,
            Some(false),
            "leader again {:?} into the freeze",
            frozen_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    frozen.thaw();
    let thawed = Instant::now();
    wait_leader(install.server(), true, LEASE_DURATION + SLACK).await;
    eprintln!(
        "stepped down {stepped_down:?} into a {FREEZE:?} freeze; leader again {:?} after it",
        thawed.elapsed()
    );
    rotate_source(&c, auths("v2")).await;
    for ns in NAMESPACES {
        wait_copy(&c, ns, &auths("v2")).await;
    }
    sync::wait_ready(&install, install.server(), true, WAIT).await;
    assert_running(install.server.as_mut().unwrap(), "the process");
}

/// The API server is killed and restarted on the same etcd: `/readyz` says 503 while it
/// is unreachable and 200 once it is back; then, with nothing changed, the process writes
/// and re-reads nothing (no re-copy storm: its copy and API-request counters stay, and the
/// audit log has no write of ours on a Secret), and a rotation after the restart reaches
/// every copy with exactly one update each.
#[tokio::test]
async fn api_server_restart_readiness_follows_the_watches_and_nothing_is_recopied() {
    let Some(mut env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let mut install = copies_in_three_namespaces(&env).await;
    let _log = LogOnPanic::new("the process", install.server());

    let before = copies(install.server()).await;
    assert_eq!(before, 3.0, "three copies created");
    let requests_before = api_requests(install.server(), None).await;
    let restarted_at = Timestamp::now();
    let t = Instant::now();
    env.stop_apiserver();
    sync::wait_ready(&install, install.server(), false, Duration::from_secs(15)).await;
    let unready = t.elapsed();
    env.start_apiserver().await;
    let serving = t.elapsed();
    sync::wait_ready(&install, install.server(), true, WAIT).await;
    let ready = t.elapsed();
    wait_leader(install.server(), true, LEASE_DURATION + SLACK).await;
    eprintln!(
        "after stopping the API server: unready at {unready:?}, API server serving at {serving:?}, \
         ready at {ready:?}, leader at {:?}",
        t.elapsed()
    );

    // Nothing changed: watch the counters for a while (an absence cannot be polled for;
    // 3 s is ten reconcile debounces).
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            copies(install.server()).await,
            before,
            "copies written after the restart with nothing changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nor re-read: not one request (watches and Lease rounds are not counted).
    assert_eq!(
        api_requests(install.server(), None).await,
        requests_before,
        "API requests sent after the restart with nothing changed"
    );
    let changed_at = Timestamp::now();
    let storm: Vec<Request> = sync::our_writes(&env)
        .into_iter()
        .filter(|r| r.completed > restarted_at && r.received < changed_at)
        .collect();
    assert!(
        storm.is_empty(),
        "Secret writes after the restart: {storm:#?}"
    );

    let updated = copies_of(install.server(), "updated").await;
    let update_requests = api_requests(install.server(), Some("update")).await;
    // Ready means the caches are live again: the rotation arrives within seconds (a
    // watch still backing off would leave the copies stale behind a 200).
    rotate_source(&c, auths("v2")).await;
    let rotated = Instant::now();
    eventually(
        PROPAGATION,
        "the rotation after the restart in every copy (ready, so the watches are live)",
        || async {
            for ns in NAMESPACES {
                let copy = get_secret(&c, ns, SECRET).await?;
                (data_of(&copy) == auths("v2")).then_some(())?;
            }
            Some(())
        },
    )
    .await;
    eprintln!("the rotation reached every copy in {:?}", rotated.elapsed());
    eventually(WAIT, "three updates counted", || async {
        (copies_of(install.server(), "updated").await >= updated + 3.0).then_some(())
    })
    .await;
    assert_eq!(copies(install.server()).await, before + 3.0);
    assert_eq!(
        api_requests(install.server(), Some("update")).await,
        update_requests + 3.0,
        "one update request per copy"
    );
    let after: Vec<Request> = sync::our_writes(&env)
        .into_iter()
        .filter(|r| r.received >= changed_at)
        .collect();
    assert_eq!(
        after
            .iter()
            .filter(|r| r.ok() && r.verb == "update")
            .count(),
        3,
        "the audit log still records our writes: {after:#?}"
    );
    assert_running(install.server.as_mut().unwrap(), "the process");
}
