//! Leader election on the `coordination.k8s.io/v1` Lease `pullsecret-injector-sync`, by
//! the rules of client-go's `tools/leaderelection` (the reference every Kubernetes
//! controller follows):
//!
//! - **Expiry is judged by local observation, never by the remote `renewTime`.** A standby
//!   remembers the Lease record it last saw and the local monotonic instant at which it
//!   saw it change; it may take the Lease only once `leaseDurationSeconds` have passed on
//!   its own clock with no change. Clock skew between replicas cannot shorten that wait.
//! - **Leading is a deadline, not a flag.** A successful round (take or renew) that began
//!   at instant `t` lets this replica write until `t + RENEW_DEADLINE`. Nothing has to
//!   flip a flag for leadership to end: a renew that hangs, a dead election task or a
//!   frozen API server all make it lapse by itself. Every write in `sync` checks it and is
//!   cancelled when it runs out (`Leadership::remaining`).
//! - **Step down before anyone can take over.** A standby waits at least `LEASE_DURATION`
//!   after observing our last write, and that write happened after `t`; we stop at
//!   `t + RENEW_DEADLINE`, 5 s earlier. The margin covers the time between our deadline
//!   check and a request reaching the API server.
//! - **Every round is bounded**: by what remains of our leadership while leading (so a
//!   hung renew ends exactly when leadership does), else by `RENEW_DEADLINE`. kube's
//!   client has no read timeout by default.
//! - Writes to the Lease carry the resourceVersion they read, so two replicas can never
//!   both believe they took it.
//!
//! Upstream: k8s.io/client-go/tools/leaderelection/leaderelection.go (`tryAcquireOrRenew`:
//! `le.observedTime.Add(time.Second * time.Duration(oldLeaderElectionRecord.LeaseDurationSeconds)).After(now.Time)`,
//! defaults LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s).
//!
//! The kept crates were checked first: `kube-lease-manager` 0.13 (kube 5) computes expiry
//! as the remote `renewTime + leaseDuration` against the local wall clock and keeps its
//! lock state without a per-round deadline; `kube-leader-election` supports kube ≤ 4 and
//! kubert's lease kube ≤ 1.x. So this file stays ours.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ObjectMeta;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::is;
use crate::metrics::Metrics;

pub(crate) const LEASE_NAME: &str = "pullsecret-injector-sync";

/// How long a holder's record stays valid for the others (client-go `LeaseDuration`).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long after the start of its last successful round the holder may write
/// (client-go `RenewDeadline`).
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Between rounds (client-go `RetryPeriod`).
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// A replica whose rounds have all failed for this long cannot reach the API server and
/// reports itself unready.
const UNREACHABLE_AFTER: Duration = RENEW_DEADLINE;

/// Who may write right now, shared by the election and every writer.
#[derive(Clone)]
pub(crate) struct Leadership {
    state: Arc<Mutex<State>>,
    /// Bumped whenever this replica gains the Lease, so the reconciler runs at once.
    gained: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Until when we may write; `None` when not leading.
    until: Option<Instant>,
    /// The start of the last round that reached the API server (any outcome).
    last_contact: Option<Instant>,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            state: Arc::new(Mutex::new(State::default())),
            gained: watch::channel(0).0,
        }
    }
}

impl Leadership {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How much longer this replica may write, or `None` when it does not lead.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let until = self.lock().until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.remaining().is_some()
    }

    /// Whether a round reached the API server recently (the process can talk to it).
    pub(crate) fn reachable(&self) -> bool {
        self.lock()
            .last_contact
            .is_some_and(|t| t.elapsed() < UNREACHABLE_AFTER)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.gained.subscribe()
    }

    /// Records a round that began at `started`; `held` says whether we hold the Lease
    /// after it. Returns true on a transition to leading.
    fn round(&self, started: Instant, held: bool) -> bool {
        let gained = {
            let mut s = self.lock();
            s.last_contact = Some(started);
            let was = s.until.is_some_and(|u| u > Instant::now());
            s.until = held.then_some(started + RENEW_DEADLINE);
            held && !was
        };
        if gained {
            self.gained.send_modify(|n| *n += 1);
        }
        gained
    }

    fn contact(&self, started: Instant) {
        self.lock().last_contact = Some(started);
    }

    /// Stops writing now (shutdown, or a round that could not tell).
    fn revoke(&self) {
        self.lock().until = None;
    }
}

#[cfg(test)]
impl Leadership {
    /// As an election round that took (`true`) or lost (`false`) the Lease just now.
    pub(crate) fn set_for_test(&self, held: bool) {
        self.round(Instant::now(), held);
    }
}

/// The parts of a Lease record whose change proves its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew: Option<MicroTime>,
    acquire: Option<MicroTime>,
    duration: Option<i32>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew: spec.renew_time.clone(),
            acquire: spec.acquire_time.clone(),
            duration: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

/// The last record seen and when (local monotonic time) it last changed.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    seen: Option<(Record, Instant)>,
}

/// What one round does with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Ours: write a fresh renewTime.
    Renew,
    /// Free, or unchanged for a whole lease duration on our clock: take it.
    Take,
    /// Someone else holds it and was seen alive recently.
    Wait,
}

impl Observer {
    /// Decides for `identity`, observing `spec` at local instant `now`.
    pub(crate) fn decide(&mut self, spec: &LeaseSpec, identity: &str, now: Instant) -> Step {
        let record = Record::of(spec);
        let changed_at = match &self.seen {
            Some((r, at)) if *r == record => *at,
            _ => now,
        };
        let holder = record.holder.clone();
        let duration = record
            .duration
            .and_then(|d| u64::try_from(d).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        self.seen = Some((record, changed_at));
        match holder.as_deref() {
            Some(h) if h == identity => Step::Renew,
            None => Step::Take,
            Some(_) if now.saturating_duration_since(changed_at) >= duration => Step::Take,
            Some(_) => Step::Wait,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error("lease {LEASE_NAME}: {0}")]
    Api(#[from] kube::Error),
    #[error("lease {LEASE_NAME}: no answer within {0:?}")]
    Timeout(Duration),
}

pub(crate) struct Election {
    api: Api<Lease>,
    identity: String,
    observer: Observer,
    leadership: Leadership,
    metrics: Arc<Metrics>,
}

use crate::ownership::post_params as pp;

impl Election {
    pub(crate) fn new(
        client: kube::Client,
        namespace: &str,
        identity: String,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            identity,
            observer: Observer::default(),
            leadership,
            metrics,
        }
    }

    fn fresh(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: whether we hold the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(self.fresh(0, None)),
            };
            return match self.api.create(&pp(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is(&e, kube::core::Status::is_already_exists) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next_spec = match self.observer.decide(&spec, &self.identity, Instant::now()) {
            Step::Wait => return Ok(false),
            Step::Renew => self.fresh(transitions, spec.acquire_time.clone()),
            Step::Take => self.fresh(transitions + 1, None),
        };
        let mut next = current;
        next.spec = Some(next_spec);
        // `replace` carries the resourceVersion read above: a concurrent writer makes it
        // fail with 409 instead of both believing they hold the Lease.
        match self.api.replace(LEASE_NAME, &pp(), &next).await {
            Ok(_) => Ok(true),
            Err(e) if is(&e, kube::core::Status::is_conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One bounded round, recorded in the shared leadership.
    pub(crate) async fn round(&mut self) -> Result<bool, LeaseError> {
        let started = Instant::now();
        let limit = self.leadership.remaining().unwrap_or(RENEW_DEADLINE);
        let result = match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(r) => r.map_err(LeaseError::Api),
            Err(_) => Err(LeaseError::Timeout(limit)),
        };
        match &result {
            Ok(held) => {
                if self.leadership.round(started, *held) {
                    tracing::info!(identity = %self.identity, "became sync leader");
                }
            }
            // Leadership keeps its deadline: one failed round is not a reason to stop
            // early, and the deadline ends it if the failures go on.
            Err(e) => {
                if matches!(e, LeaseError::Api(kube::Error::Api(_))) {
                    // Refused (RBAC, say), but the API server answered: it is reachable.
                    self.leadership.contact(started);
                }
                tracing::warn!(error = %e, "leader election round failed")
            }
        }
        result
    }

    /// Runs forever. Never returns while the process is meant to run; the caller treats
    /// a return as a fault.
    pub(crate) async fn run(mut self) {
        let mut was_leader = false;
        loop {
            let _ = self.round().await;
            let leading = self.leadership.is_leader();
            if was_leader && !leading {
                tracing::warn!(identity = %self.identity, "lost sync leadership; stopped writing");
            }
            was_leader = leading;
            self.metrics.sync_leader.set(i64::from(leading));
            // Wake at the deadline too, so the gauge drops the moment leadership lapses.
            let wake = match self.leadership.remaining() {
                Some(left) => RETRY_PERIOD.min(left),
                None => RETRY_PERIOD,
            };
            tokio::time::sleep(wake).await;
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once instead of after a
    /// lease duration (client-go `ReleaseOnCancel`): holder cleared, duration 1 s.
    pub(crate) async fn release(
        client: kube::Client,
        namespace: &str,
        identity: &str,
        leadership: &Leadership,
    ) -> Result<(), LeaseError> {
        let was_leader = leadership.is_leader();
        leadership.revoke();
        if !was_leader {
            return Ok(());
        }
        let api: Api<Lease> = Api::namespaced(client, namespace);
        let work = async {
            let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(identity) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match api.replace(LEASE_NAME, &pp(), &lease).await {
                Ok(_) => Ok(()),
                Err(e) if is(&e, kube::core::Status::is_conflict) => Ok(()),
                Err(e) => Err(LeaseError::Api(e)),
            }
        };
        let limit = Duration::from_secs(2);
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or(Err(LeaseError::Timeout(limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renew_marker: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(1_700_000_000 + renew_marker).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn our_own_or_a_free_lease_is_acted_on_at_once() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        assert_eq!(o.decide(&spec(Some("me"), 0), "me", t0), Step::Renew);
        assert_eq!(o.decide(&spec(None, 0), "me", t0), Step::Take);
        assert_eq!(o.decide(&spec(Some(""), 0), "me", t0), Step::Take);
        assert_eq!(o.decide(&LeaseSpec::default(), "me", t0), Step::Take);
    }

    #[test]
    fn expiry_is_judged_by_local_observation_not_remote_time() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        // A renewTime far in the past (a skewed clock): still a whole lease duration of
        // waiting from when we first saw it.
        let stale = spec(Some("other"), -3600);
        assert_eq!(o.decide(&stale, "me", t0), Step::Wait);
        assert_eq!(
            o.decide(&stale, "me", t0 + Duration::from_secs(14)),
            Step::Wait
        );
        assert_eq!(
            o.decide(&stale, "me", t0 + Duration::from_secs(15)),
            Step::Take
        );
    }

    #[test]
    fn every_change_of_the_record_restarts_the_wait() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        assert_eq!(o.decide(&spec(Some("other"), 0), "me", t0), Step::Wait);
        // Renewed at t0+10 s (a renewTime in the future, skew again): wait restarts.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(o.decide(&spec(Some("other"), 9999), "me", t1), Step::Wait);
        assert_eq!(
            o.decide(
                &spec(Some("other"), 9999),
                "me",
                t0 + Duration::from_secs(20)
            ),
            Step::Wait
        );
        assert_eq!(
            o.decide(
                &spec(Some("other"), 9999),
                "me",
                t1 + Duration::from_secs(15)
            ),
            Step::Take
        );
    }

    #[test]
    fn the_records_own_duration_is_honoured() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        let mut s = spec(Some("other"), 0);
        s.lease_duration_seconds = Some(60);
        assert_eq!(o.decide(&s, "me", t0), Step::Wait);
        assert_eq!(o.decide(&s, "me", t0 + Duration::from_secs(59)), Step::Wait);
        assert_eq!(o.decide(&s, "me", t0 + Duration::from_secs(60)), Step::Take);
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_by_itself_before_others_may_take_over() {
        let l = Leadership::default();
        let mut gained = l.subscribe();
        let t = Instant::now();
        assert!(l.round(t, true));
        assert!(gained.has_changed().unwrap());
        gained.borrow_and_update();
        assert!(l.is_leader() && l.reachable());
        // renewing while leading is not a new gain
        assert!(!l.round(t, true));
        assert!(!gained.has_changed().unwrap());
        tokio::time::advance(RENEW_DEADLINE - Duration::from_millis(1)).await;
        assert!(l.is_leader());
        tokio::time::advance(Duration::from_millis(1)).await;
        // nobody revoked anything: the deadline alone ended it, well before a standby
        // that saw our write could take over
        assert!(!l.is_leader());
        assert!(RENEW_DEADLINE + Duration::from_secs(3) < LEASE_DURATION);
        assert!(!l.reachable());
        // a round that found someone else holding it ends leadership at once
        let t = Instant::now();
        l.round(t, true);
        l.round(t, false);
        assert!(!l.is_leader() && l.reachable());
    }
}
