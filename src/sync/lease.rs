//! Leader election on a `coordination.k8s.io/v1` Lease, so only one replica runs the
//! reconciler's writes. Every write to the Lease carries the resourceVersion it read, so
//! two replicas can never both believe they took it; a holder that cannot renew steps
//! down before the lease could expire for the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

pub const LEASE_NAME: &str = "pullsecret-injector-sync";
pub const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Stop acting this long after the last successful renewal, well before others may take over.
const STEP_DOWN_AFTER: Duration = Duration::from_secs(10);

/// What to do with a Lease as read, for `identity` at time `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Ours: write a fresh renewTime.
    Renew,
    /// Free or expired: take it (transitions + 1).
    Take,
    /// Someone else holds a live lease.
    Wait,
}

pub fn decide(lease: &Lease, identity: &str, now: Timestamp) -> LeaseStep {
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => LeaseStep::Renew,
        None | Some("") => LeaseStep::Take,
        Some(_) => {
            let dur = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            let expired = match spec.renew_time.or(spec.acquire_time) {
                Some(t) => t.0 + SignedDuration::from_secs(dur) < now,
                None => true,
            };
            if expired {
                LeaseStep::Take
            } else {
                LeaseStep::Wait
            }
        }
    }
}

/// One round: returns whether we hold the lease afterwards.
pub async fn try_hold(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let fresh = |transitions: i32, acquire: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: Some(acquire.unwrap_or(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let pp = PostParams {
        field_manager: Some(super::FIELD_MANAGER.into()),
        ..Default::default()
    };
    let current = match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(fresh(0, None)),
            };
            return match api.create(&pp, &lease).await {
                Ok(_) => Ok(true),
                Err(e) if super::controller::is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Some(l) => l,
    };
    let spec = current.spec.clone().unwrap_or_default();
    let new_spec = match decide(&current, identity, now) {
        LeaseStep::Wait => return Ok(false),
        LeaseStep::Renew => fresh(spec.lease_transitions.unwrap_or(0), spec.acquire_time),
        LeaseStep::Take => fresh(spec.lease_transitions.unwrap_or(0) + 1, None),
    };
    let mut next = current;
    next.spec = Some(new_spec);
    match api.replace(LEASE_NAME, &pp, &next).await {
        Ok(_) => Ok(true),
        Err(e) if super::controller::is_status(&e, 409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs forever, keeping `leader` current; calls `gained` on each transition to leader.
pub async fn run(
    client: Client,
    namespace: String,
    identity: String,
    leader: Arc<AtomicBool>,
    gained: impl Fn(),
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renew: Option<Instant> = None;
    loop {
        match try_hold(&api, &identity).await {
            Ok(true) => last_renew = Some(Instant::now()),
            Ok(false) => last_renew = None,
            Err(e) => {
                tracing::warn!(error = %e, lease = LEASE_NAME, %namespace, "leader lease round failed")
            }
        }
        let holding = last_renew.is_some_and(|t| t.elapsed() < STEP_DOWN_AFTER);
        let was = leader.swap(holding, Ordering::AcqRel);
        if holding && !was {
            tracing::info!(%identity, "became sync leader");
            gained();
        } else if was && !holding {
            tracing::warn!(%identity, "lost sync leadership");
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, dur: i32) -> Lease {
        let now = Timestamp::now();
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(dur),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lease_decisions() {
        let now = Timestamp::now();
        assert_eq!(
            decide(&lease(Some("me"), 100, 15), "me", now),
            LeaseStep::Renew
        );
        assert_eq!(
            decide(&lease(Some("other"), 1, 15), "me", now),
            LeaseStep::Wait
        );
        assert_eq!(
            decide(&lease(Some("other"), 30, 15), "me", now),
            LeaseStep::Take
        );
        assert_eq!(decide(&lease(None, 1, 15), "me", now), LeaseStep::Take);
        assert_eq!(decide(&lease(Some(""), 1, 15), "me", now), LeaseStep::Take);
        assert_eq!(decide(&Lease::default(), "me", now), LeaseStep::Take);
    }
}
