//! Every request the controller sends, each conflict-safe on its own:
//! - create is create-if-absent (AlreadyExists is checked for ownership, never overwritten);
//! - update is a replace carrying the resourceVersion at which the cache saw our label;
//! - delete carries uid + resourceVersion preconditions;
//! - a ServiceAccount patch tests the resourceVersion and only appends;
//!
//! so a stale cache, a second replica or a human editing the same secret can make a write
//! fail, never land on a secret we do not own.
//!
//! Writes run under a [`Gate`]: the reconciler's only while this replica leads, each
//! bounded by what remains of its leadership (a write cannot outlive the lease it was
//! started under); the admission-time create under the webhook's own timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::Status;
use kube::{Api, Client};

use super::desired::{self, Key, SaPatch, source_annotation, source_string};
use super::error::{WriteError, is};
use super::lease::Leadership;
use super::report::Reporter;
use super::source::ValidSource;
use crate::config::{SecretRef, Source};
use crate::metrics::{ActionLabels, Metrics, VerbLabels};

/// Reads the controller makes outside leadership (the admission path, `terminating`) are
/// bounded by this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Under what authority a request runs.
#[derive(Clone, Copy)]
pub(crate) enum Gate<'a> {
    /// The reconciler: only while leading, cancelled when leadership runs out.
    Leader(&'a Leadership),
    /// The admission-time create-if-absent, which every replica may do (it never
    /// overwrites anything); the webhook bounds the whole call.
    Admission,
}

impl Gate<'_> {
    fn limit(&self, what: &str) -> Result<Duration, WriteError> {
        match self {
            Gate::Leader(l) => l.remaining().ok_or_else(|| WriteError::NotLeader {
                what: what.to_string(),
            }),
            Gate::Admission => Ok(READ_TIMEOUT),
        }
    }
}

/// Outcome of one create-if-absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Created {
    New,
    AlreadyOurs,
    Foreign,
    /// The namespace is gone or terminating.
    Gone,
}

pub(crate) struct Writer {
    client: Client,
    metrics: Arc<Metrics>,
    reporter: Arc<Reporter>,
}

use crate::ownership::post_params as pp;

fn api_is(e: &WriteError, pred: fn(&Status) -> bool) -> bool {
    matches!(e, WriteError::Api { source, .. } if is(source, pred))
}

impl Writer {
    pub(crate) fn new(client: Client, metrics: Arc<Metrics>, reporter: Arc<Reporter>) -> Writer {
        Writer {
            client,
            metrics,
            reporter,
        }
    }

    /// Sends one request under `gate`, counted by verb.
    async fn call<T>(
        &self,
        gate: Gate<'_>,
        verb: &'static str,
        what: impl Fn() -> String,
        req: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, WriteError> {
        let limit = gate.limit(&what())?;
        self.metrics
            .sync_api_requests
            .get_or_create(&VerbLabels { verb })
            .inc();
        match tokio::time::timeout(limit, req).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(WriteError::Api {
                what: what(),
                source,
            }),
            Err(_) => Err(match gate {
                Gate::Leader(l) if !l.is_leader() => WriteError::NotLeader { what: what() },
                _ => WriteError::Timeout {
                    what: what(),
                    after: limit,
                },
            }),
        }
    }

    fn counted(&self, action: &'static str) {
        self.metrics
            .sync_copies
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    /// Create-if-absent of the managed copy; an existing secret is inspected, never
    /// written.
    pub(crate) async fn create_copy(
        &self,
        gate: Gate<'_>,
        ns: &str,
        name: &str,
        src: &Source,
        v: &ValidSource,
        registry: &str,
    ) -> Result<Created, WriteError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let what = || format!("creating secret {ns}/{name}");
        let copy = desired::build_copy(ns, name, src, v);
        match self
            .call(gate, "create", what, api.create(&pp(), &copy))
            .await
        {
            Ok(_) => {
                self.counted("created");
                self.reporter.copied(ns, name, src, registry);
                Ok(Created::New)
            }
            Err(e) if api_is(&e, Status::is_already_exists) => {
                let what = || format!("reading secret {ns}/{name}");
                match self.call(gate, "get", what, api.get_opt(name)).await? {
                    Some(s) if crate::ownership::is_ours(&s.metadata) => Ok(Created::AlreadyOurs),
                    Some(_) => {
                        self.reporter
                            .mark_foreign((ns.to_string(), name.to_string()));
                        self.reporter.conflict(ns, name, registry);
                        Ok(Created::Foreign)
                    }
                    // Deleted between the two requests: the next pass creates it.
                    None => Err(e),
                }
            }
            // Namespace deleted, or terminating (creates there are forbidden).
            Err(e)
                if api_is(&e, Status::is_not_found)
                    || api_is(&e, Status::is_forbidden) && self.terminating(gate, ns).await =>
            {
                Ok(Created::Gone)
            }
            Err(e) => Err(e),
        }
    }

    async fn terminating(&self, gate: Gate<'_>, ns: &str) -> bool {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let what = || format!("reading namespace {ns}");
        match self.call(gate, "get", what, api.get_opt(ns)).await {
            Ok(Some(n)) => super::cache::namespace_info(&n).is_some_and(|(_, i)| i.terminating),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Replace of our copy, guarded by the resourceVersion the cache saw it at.
    pub(crate) async fn update_copy(
        &self,
        gate: Gate<'_>,
        key: &Key,
        src: &Source,
        v: &ValidSource,
        resource_version: &Option<String>,
    ) -> Result<(), WriteError> {
        let (ns, name) = key;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut obj = desired::build_copy(ns, name, src, v);
        obj.metadata.resource_version = resource_version.clone();
        let what = || format!("updating secret {ns}/{name}");
        match self
            .call(gate, "update", what, api.replace(name, &pp(), &obj))
            .await
        {
            Ok(_) => {
                self.counted("updated");
                tracing::info!(namespace = %ns, secret = %name, source = %source_annotation(src), "updated pull secret copy");
                Ok(())
            }
            Err(e) if api_is(&e, Status::is_not_found) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delete of our copy, guarded by uid and resourceVersion.
    pub(crate) async fn delete_copy(
        &self,
        gate: Gate<'_>,
        key: &Key,
        resource_version: &Option<String>,
        uid: &Option<String>,
    ) -> Result<(), WriteError> {
        let (ns, name) = key;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: resource_version.clone(),
                uid: uid.clone(),
            }),
            ..Default::default()
        };
        let what = || format!("deleting secret {ns}/{name}");
        match self.call(gate, "delete", what, api.delete(name, &dp)).await {
            Ok(_) => {
                self.counted("deleted");
                tracing::info!(namespace = %ns, secret = %name, "deleted pull secret copy no longer wanted");
                Ok(())
            }
            Err(e) if api_is(&e, Status::is_not_found) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn patch_account(
        &self,
        gate: Gate<'_>,
        p: &SaPatch,
    ) -> Result<(), WriteError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &p.namespace);
        let patch = Patch::Json::<()>(desired::sa_patch(p));
        let what = || {
            format!(
                "patching serviceaccount {}/{}",
                p.namespace, p.service_account
            )
        };
        let params = PatchParams::default();
        let req = api.patch(&p.service_account, &params, &patch);
        match self.call(gate, "patch", what, req).await {
            Ok(_) => {
                tracing::info!(namespace = %p.namespace, service_account = %p.service_account, secret = %p.secret, "added pull secret to service account");
                Ok(())
            }
            Err(e) if api_is(&e, Status::is_not_found) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn pending_pods(&self, gate: Gate<'_>) -> Result<Vec<Pod>, WriteError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let lp = ListParams::default().fields("status.phase=Pending");
        let what = || "listing pending pods".to_string();
        Ok(self.call(gate, "list", what, api.list(&lp)).await?.items)
    }

    /// Deletes a pod by uid precondition; false when it was already gone or replaced.
    pub(crate) async fn delete_pod(
        &self,
        gate: Gate<'_>,
        ns: &str,
        name: &str,
        uid: &Option<String>,
    ) -> Result<bool, WriteError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let what = || format!("deleting pod {ns}/{name}");
        match self.call(gate, "delete", what, api.delete(name, &dp)).await {
            Ok(_) => Ok(true),
            Err(e) if api_is(&e, Status::is_not_found) || api_is(&e, Status::is_conflict) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// A namespace read for the admission path (the cache may not have it yet).
    pub(crate) async fn namespace(&self, ns: &str) -> Result<Option<Namespace>, WriteError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let what = || format!("reading namespace {ns}");
        self.call(Gate::Admission, "get", what, api.get_opt(ns))
            .await
    }

    /// A source read for the admission path (its watch may not have listed yet).
    pub(crate) async fn source(&self, src: &SecretRef) -> Result<Option<Secret>, WriteError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &src.namespace);
        let what = || format!("reading source {}", source_string(src));
        self.call(Gate::Admission, "get", what, api.get_opt(&src.name))
            .await
    }
}
