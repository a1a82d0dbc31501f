//! Stuck-pod repair (`repairStuckPods: true`): a controller-owned Pod created before its
//! pull secret existed sits in `ImagePullBackOff` for minutes; deleting it lets its
//! controller recreate it, and the webhook injects the now-present copy. Which pods
//! qualify is decided purely in [`desired::stuck_pods`]; this file lists and deletes.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::time::Instant;

use super::cache::Cache;
use super::desired::{self, ExistingSecret, Key, PodInfo};
use super::error::WriteError;
use super::report::Reporter;
use super::writes::{Gate, Writer};
use crate::config::Config;

/// Listing every pending Pod is the most expensive read we make; at most this often.
const REPAIR_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(crate) struct Repair {
    last: Option<Instant>,
}

impl Repair {
    pub(crate) async fn run(
        &mut self,
        gate: Gate<'_>,
        writer: &Writer,
        reporter: &Reporter,
        cache: &Cache,
        cfg: &Config,
        existing: &HashMap<Key, ExistingSecret>,
    ) -> Result<(), WriteError> {
        if !cfg.repair_stuck_pods || self.last.is_some_and(|t| t.elapsed() < REPAIR_EVERY) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let pods = writer.pending_pods(gate).await?;
        let infos: Vec<PodInfo> = pods.iter().filter_map(desired::pod_info).collect();
        let namespaces = cache
            .namespace_list()
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        for p in desired::stuck_pods(cfg, &infos, &namespaces, existing) {
            if writer
                .delete_pod(gate, &p.namespace, &p.name, &p.uid)
                .await?
            {
                tracing::info!(namespace = %p.namespace, pod = %p.name, "deleted controller-owned pod stuck pulling; its owner recreates it with the secret");
                let pod = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    namespace: Some(p.namespace.clone()),
                    name: Some(p.name.clone()),
                    uid: p.uid.clone(),
                    ..Default::default()
                };
                reporter.repaired(pod, &p.stuck_images);
            }
        }
        Ok(())
    }
}
