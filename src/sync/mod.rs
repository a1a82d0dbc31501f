//! Credential delivery: keeps each registry entry's source pull secret copied into every
//! namespace in its scope, refreshed on rotation and removed when no longer wanted.
//!
//! One job per file:
//! - `desired` decides, purely: the plan, who delivers which secret where, conversions;
//! - `source` validates a source secret;
//! - `credential_provider` runs kubelet credential provider plugins (on the leader) and
//!   turns their answers into sources like any other;
//! - `cache` holds what the watches saw and answers the webhook;
//! - `lease` elects the one writer;
//! - `reconcile` runs the plan on the Lease holder, through `writes` (every request,
//!   conflict-safe) and `report` (logs, Events, once per change);
//! - `repair` deletes controller-owned pods stuck pulling before their secret existed;
//! - `audit` judges running pods on the Lease holder and writes PolicyReports;
//! - `ensure` is the admission-time create;
//! - `run` wires and supervises the tasks; `error` holds the boundary errors.

mod audit;
mod cache;
mod credential_provider;
mod desired;
mod ensure;
mod error;
mod lease;
mod reconcile;
mod repair;
mod report;
mod run;
mod source;
mod writes;

pub use error::{EnsureError, SyncError};
pub use run::{Access, Running};

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::Metrics;

pub(crate) use crate::ownership::FIELD_MANAGER;

/// Starts the watches and, with [`Access::ReadWrite`], the leader election and the
/// reconciler. Every replica keeps the
/// caches (for the webhook's `facts`) and may create missing copies at admission time;
/// only the holder of the Lease `pullsecret-injector-sync` in `release_namespace`
/// reconciles. `config_changed` ticking re-reads `config` (new sources are watched,
/// everything is re-reconciled). The caller must watch [`Running::failed`] and stop the
/// process when it resolves.
pub async fn start(
    client: kube::Client,
    config: Arc<ArcSwap<Config>>,
    config_changed: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    identity: String,
    release_namespace: String,
    access: Access,
) -> Result<Running, SyncError> {
    run::start(
        client,
        config,
        config_changed,
        metrics,
        identity,
        release_namespace,
        access,
    )
    .await
}
