//! Glue between the server and the pure decision: takes the current config snapshot,
//! asks the cluster cache what it knows, runs the decision, performs the one permitted
//! side effect (creating a missing managed secret before the pod is admitted), and counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::admission::{self, Endpoint, ReviewError};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::{
    EndpointLabels, Metrics, ModeLabels, RegistryLabels, RequestLabels, ResultLabels,
};
use crate::server::ReviewHandler;

pub struct Webhook {
    pub config: Arc<ArcSwap<Config>>,
    pub cluster: Arc<dyn Cluster>,
    pub metrics: Arc<Metrics>,
    /// Upper bound for creating a missing secret at admission; the pod is admitted anyway.
    pub ensure_timeout: Duration,
    /// Set once the TLS certificate is loaded and the listener is up.
    pub serving: AtomicBool,
}

impl Webhook {
    pub fn new(
        config: Arc<ArcSwap<Config>>,
        cluster: Arc<dyn Cluster>,
        metrics: Arc<Metrics>,
    ) -> Webhook {
        Webhook {
            config,
            cluster,
            metrics,
            ensure_timeout: Duration::from_secs(2),
            serving: AtomicBool::new(false),
        }
    }

    pub async fn review(&self, endpoint: Endpoint, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let started = Instant::now();
        let (api_version, req) = match admission::parse_review(body) {
            Ok(x) => x,
            Err(e) => {
                self.count(endpoint, "", "invalid");
                // As a `&str` field, like every request-derived value logged here.
                let error = e.to_string();
                tracing::debug!(
                    endpoint = endpoint.as_str(),
                    error = error.as_str(),
                    "rejected review"
                );
                return Err(e);
            }
        };
        let cfg = self.config.load();
        let ns_cow = req.namespace();
        let ns: &str = &ns_cow;
        let facts = self.cluster.facts(ns);
        let decided = admission::decide(endpoint, &req, &cfg, &facts);
        let v = &decided.verdict;

        if let Some(plan) = &decided.plan {
            // Every needed secret, not only the ones added now: a Pod that already lists
            // ours (its ServiceAccount does, say) would otherwise be admitted before its
            // namespace has the copy and sit in ImagePullBackOff until the reconciler
            // catches up. Names the cache shows present cost a lookup, no request.
            if !plan.needed_secrets.is_empty() && !req.dry_run() {
                let ensured = tokio::time::timeout(
                    self.ensure_timeout,
                    self.cluster.ensure_secrets(&cfg, ns, &plan.needed_secrets),
                )
                .await;
                let result = match ensured {
                    Ok(Ok(())) => "success",
                    Ok(Err(e)) => {
                        tracing::warn!(namespace = ns, error = %e, "could not create pull secret before admission");
                        "failure"
                    }
                    Err(_) => {
                        tracing::warn!(
                            namespace = ns,
                            "timed out creating pull secret before admission"
                        );
                        "failure"
                    }
                };
                self.metrics
                    .admission_secret_ensures
                    .get_or_create(&ResultLabels { result })
                    .inc();
            }
            for (_, registry) in &plan.added_by {
                self.metrics
                    .secrets_injected
                    .get_or_create(&RegistryLabels {
                        registry: registry.to_string(),
                    })
                    .inc();
            }
            self.metrics
                .always_pull_forced
                .inc_by(plan.force_always.len() as u64);
        }

        let outcome = if !v.allowed {
            "denied"
        } else if !v.patch.is_empty() {
            "patched"
        } else if !v.warnings.is_empty() {
            "warned"
        } else {
            "allowed"
        };
        if endpoint == Endpoint::Validate
            && let Some(rules) = cfg.policy.as_ref().and_then(|p| p.rules_for(ns))
        {
            let n = decided.offences as u64;
            if n > 0 {
                self.metrics
                    .policy_offences
                    .get_or_create(&ModeLabels {
                        mode: rules.mode.as_str(),
                    })
                    .inc_by(n);
            }
        }
        let op = req.operation.as_str();
        self.count(endpoint, op, outcome);
        self.metrics
            .admission_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        // Request-derived values are recorded as `&str`, never with `%`: the text format
        // then writes them quoted and escaped (`{:?}`), so a tenant's CR/LF, ANSI escape or
        // bidi override in `generateName` (or a caller's in `uid`) cannot forge a line;
        // the JSON format escapes them as JSON and keeps them readable as they were.
        tracing::debug!(
            uid = &*req.uid,
            endpoint = endpoint.as_str(),
            operation = op,
            namespace = ns,
            pod = &*req.display_name(),
            decision = outcome,
            injected = ?decided.plan.as_ref().map(|p| &p.add_secrets),
            warnings = v.warnings.len(),
            "admission"
        );
        Ok(admission::response_json(api_version, &req.uid, v))
    }

    fn count(&self, endpoint: Endpoint, operation: &'static str, outcome: &'static str) {
        self.metrics
            .admission_requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                operation,
                outcome,
            })
            .inc();
    }
}

impl ReviewHandler for Webhook {
    fn handle<'a>(
        &'a self,
        path: &'a str,
        body: &'a [u8],
    ) -> crate::cluster::BoxFuture<'a, Option<Result<Vec<u8>, String>>> {
        Box::pin(async move {
            let endpoint = match path {
                "/mutate" => Endpoint::Mutate,
                "/validate" => Endpoint::Validate,
                _ => return None,
            };
            let _inflight = InflightGuard::new(&self.metrics);
            Some(self.review(endpoint, body).await.map_err(|e| e.to_string()))
        })
    }

    fn ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && self.cluster.ready()
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

struct InflightGuard<'a>(&'a Metrics);

impl<'a> InflightGuard<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.inflight.inc();
        InflightGuard(m)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}
