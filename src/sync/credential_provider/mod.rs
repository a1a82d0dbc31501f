//! Registry entries whose `source` is a kubelet credential provider plugin (ECR's
//! `ecr-credential-provider`, GCP's `auth-provider-gcp`, `acr-credential-provider`, …),
//! speaking the `credentialprovider.kubelet.k8s.io/v1` exec protocol.
//!
//! The sync leader runs each entry's plugin, validates the answer, and turns it into a
//! `kubernetes.io/dockerconfigjson` [`ValidSource`](super::source::ValidSource) in the
//! cache. From there the planner treats it exactly like a Secret source: the same copies,
//! ownership checks, clash rules and Events. A failed run changes nothing the planner
//! sees, so the copies keep the last good credentials.
//!
//! One job per file:
//! - `exec` runs the plugin once (timeout, bounded output, process group killed);
//! - `response` is the protocol: the request, and the answer's parsing and checks;
//! - `schedule` decides when to run next (a fraction of `cacheDuration`, jittered
//!   backoff);
//! - `refresh` is the per-entry task that ties them together, supervised by
//!   `run::follow_config`.

mod exec;
mod refresh;
mod response;
mod schedule;
#[cfg(test)]
mod tests;

pub(crate) use refresh::{Refresher, forget_metrics};
