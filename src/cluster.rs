//! What the webhook may ask of the cluster while answering a review. Kept as a small trait
//! so the admission path stays testable without an API server and the HTTP layer never
//! sees a Kubernetes client.

use std::future::Future;
use std::pin::Pin;

use crate::admission::NamespaceFacts;
use crate::config::Config;
use crate::sync::EnsureError;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Cluster knowledge and side effects available to the webhook.
pub trait Cluster: Send + Sync {
    /// Labels of the namespace and the pull secrets present in it, from a local cache
    /// (never a network round trip on the request path).
    fn facts(&self, namespace: &str) -> NamespaceFacts;

    /// Makes sure the managed copies of `secrets` exist in `namespace` before the pod is
    /// admitted (no pod-before-secret race). Only secrets of registry entries that have a
    /// `source` are created; others are left alone. Called only when the request is not a
    /// dry run; the caller bounds it with a timeout and admits the pod whatever happens.
    fn ensure_secrets<'a>(
        &'a self,
        config: &'a Config,
        namespace: &'a str,
        secrets: &'a [&'a str],
    ) -> BoxFuture<'a, Result<(), EnsureError>>;

    /// True once caches are synced and the API server is reachable; readiness follows it.
    fn ready(&self) -> bool;
}

/// No cluster access: nothing known, nothing done.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCluster;

impl Cluster for NoCluster {
    fn facts(&self, _namespace: &str) -> NamespaceFacts {
        NamespaceFacts::default()
    }

    fn ensure_secrets<'a>(
        &'a self,
        _config: &'a Config,
        _namespace: &'a str,
        _secrets: &'a [&'a str],
    ) -> BoxFuture<'a, Result<(), EnsureError>> {
        Box::pin(async { Ok(()) })
    }

    fn ready(&self) -> bool {
        true
    }
}
