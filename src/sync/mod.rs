//! Credential delivery: keeps each registry entry's source pull secret copied into every
//! namespace in its scope, refreshed on rotation and removed when no longer wanted.
//!
//! `desired` decides (pure), `source` validates, `cache` holds what the watches saw and
//! answers the webhook, `controller` executes the decisions on the Lease holder (`lease`).

pub mod cache;
pub mod controller;
pub mod desired;
pub mod lease;
pub mod source;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use controller::KubeCluster;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;

/// Field manager and Event reporter name.
pub const FIELD_MANAGER: &str = "pullsecret-injector";

/// Starts the watches, the leader election and the reconciler, and returns the webhook's
/// view of the cluster. Every replica keeps the caches (for `facts`) and may create
/// missing copies at admission time; only the holder of the Lease
/// `pullsecret-injector-sync` in `release_namespace` reconciles. `config_changed` ticking
/// re-reads `config` (new sources are watched, everything is re-reconciled).
pub async fn start(
    client: kube::Client,
    config: Arc<ArcSwap<Config>>,
    config_changed: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    identity: String,
    release_namespace: String,
) -> anyhow::Result<Arc<dyn Cluster>> {
    let c = start_cluster(
        client,
        config,
        config_changed,
        metrics,
        identity,
        release_namespace,
    )
    .await?;
    Ok(c)
}

/// As [`start`], keeping the concrete type (tests ask it whether it leads).
pub async fn start_cluster(
    client: kube::Client,
    config: Arc<ArcSwap<Config>>,
    config_changed: tokio::sync::watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    identity: String,
    release_namespace: String,
) -> anyhow::Result<Arc<KubeCluster>> {
    controller::start_inner(
        client,
        config,
        config_changed,
        metrics,
        identity,
        release_namespace,
    )
    .await
}
