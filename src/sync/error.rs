//! Errors at the sync module's boundaries: what a write, the admission-time create or the
//! controller as a whole can fail with, typed so callers decide by kind, not by text.

use std::time::Duration;

use crate::config::SecretRef;

/// Whether `e` is an API status answer satisfying `pred` (kube-core's `Status::is_*`).
pub(crate) fn is(e: &kube::Error, pred: fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(s) if pred(s))
}

/// One request to the API server that did not do what it was for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer within {after:?}")]
    Timeout { what: String, after: Duration },
    /// Leadership lapsed before the write could start or finish; it was not sent or was
    /// cancelled.
    #[error("{what}: not the sync leader any more; not written")]
    NotLeader { what: String },
}

/// Why the admission-time create could not deliver a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("source {} does not exist", super::desired::source_string(.0))]
    SourceMissing(SecretRef),
    #[error("source {} is not a usable pull secret: {reason}", super::desired::source_string(.secret))]
    SourceInvalid {
        secret: SecretRef,
        reason: super::source::InvalidSource,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Everything the admission-time create could not deliver, for one pod.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct EnsureError(pub(crate) Vec<DeliveryError>);

/// The controller could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync needs a non-empty identity for leader election")]
    NoIdentity,
    #[error("sync task {task} ended unexpectedly")]
    TaskEnded { task: &'static str },
    #[error("sync task {task} panicked: {message}")]
    TaskPanicked { task: &'static str, message: String },
}
