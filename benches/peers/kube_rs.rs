//! The Rust peer of the load benchmark: a webhook written the way kube-rs's own
//! `admission_controller` example is (`AdmissionReview<DynamicObject>` read whole with
//! serde_json, `DynamicObject::try_parse::<Pod>()` into k8s-openapi's `Pod`,
//! `AdmissionResponse::with_patch`, `into_review`), doing the same injection as ours.
//! Not part of the product: `loadgen --serve kube-rs DIR` serves it through the crate's
//! own `server::serve_tls`, so against ours only the handler differs.
//!
//! The injection, as `benches/peers/go` does it too: every image of `initContainers`,
//! `containers` and `ephemeralContainers` is normalised (Docker Hub short names,
//! `library/`), looked up by `host[:port]` and by `*.` + its parent domain in a hash map
//! built at start (no scan over the entries), path prefixes matched on `/` boundaries;
//! matched secrets not already in `imagePullSecrets` are appended, and a container whose
//! image matched an `alwaysPull` entry gets `imagePullPolicy: Always`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct PeerConfig {
    entries: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(rename = "match")]
    patterns: Vec<String>,
    secret: String,
    #[serde(default)]
    always_pull: bool,
}

struct Rule {
    path: String,
    secret: String,
    always_pull: bool,
}

/// Rules by `host[:port]` (exact patterns) and `*.parent[:port]` (wildcards).
pub struct Rules {
    by_key: HashMap<String, Vec<Rule>>,
}

impl Rules {
    /// Reads `peer-config.json` (`{"entries": [{"match": [...], "secret", "alwaysPull"}]}`).
    pub fn from_json(text: &str) -> Result<Rules> {
        let cfg: PeerConfig = serde_json::from_str(text).context("peer config")?;
        let mut by_key: HashMap<String, Vec<Rule>> = HashMap::new();
        for e in cfg.entries {
            for p in e.patterns {
                let (key, path) = p.split_once('/').unwrap_or((p.as_str(), ""));
                by_key.entry(key.to_lowercase()).or_default().push(Rule {
                    path: path.trim_matches('/').to_string(),
                    secret: e.secret.clone(),
                    always_pull: e.always_pull,
                });
            }
        }
        Ok(Rules { by_key })
    }

    /// The rules that match `image`, exact ones first.
    fn lookup(&self, image: &str) -> Vec<&Rule> {
        let (host_port, path) = normalise(image);
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port.as_str(), None),
        };
        let mut keys = vec![host_port.clone()];
        if let Some((_, parent)) = host.split_once('.') {
            keys.push(match port {
                Some(p) => format!("*.{parent}:{p}"),
                None => format!("*.{parent}"),
            });
        }
        keys.iter()
            .filter_map(|k| self.by_key.get(k))
            .flatten()
            .filter(|r| {
                r.path.is_empty()
                    || path == r.path
                    || (path.starts_with(&r.path)
                        && path.as_bytes().get(r.path.len()) == Some(&b'/'))
            })
            .collect()
    }
}

/// `(lower-cased host[:port], path)` of an image reference, as the kubelet reads it.
fn normalise(image: &str) -> (String, String) {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let name = match (name.rfind(':'), name.rfind('/')) {
        (Some(c), Some(s)) if c > s => &name[..c],
        (Some(c), None) => &name[..c],
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_lowercase(), rest.to_string())
        }
        Some(_) => ("docker.io".into(), name.to_string()),
        None => ("docker.io".into(), format!("library/{name}")),
    }
}

/// The JSON Patch for one Pod.
fn plan(rules: &Rules, pod: &Pod) -> Vec<Value> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let present: Vec<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    let mut visit = |list: &str, i: usize, image: Option<&str>, policy: Option<&str>| {
        let hits = image.map(|img| rules.lookup(img)).unwrap_or_default();
        if hits.iter().any(|r| r.always_pull) && policy != Some("Always") {
            ops.push(json!({"op": "add", "path": format!("/spec/{list}/{i}/imagePullPolicy"), "value": "Always"}));
        }
        for r in hits {
            if !present.contains(&r.secret.as_str()) && !secrets.contains(&r.secret) {
                secrets.push(r.secret.clone());
            }
        }
    };
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        visit(
            "initContainers",
            i,
            c.image.as_deref(),
            c.image_pull_policy.as_deref(),
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        visit(
            "containers",
            i,
            c.image.as_deref(),
            c.image_pull_policy.as_deref(),
        );
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        visit(
            "ephemeralContainers",
            i,
            c.image.as_deref(),
            c.image_pull_policy.as_deref(),
        );
    }
    if present.is_empty() {
        if !secrets.is_empty() {
            let names: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
            ops.push(json!({"op": "add", "path": "/spec/imagePullSecrets", "value": names}));
        }
    } else {
        for s in secrets {
            ops.push(
                json!({"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": s}}),
            );
        }
    }
    ops
}

async fn mutate(
    State(rules): State<Arc<Rules>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Response {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut res = AdmissionResponse::from(&req);
    if let Some(obj) = req.object {
        res = match obj.try_parse::<Pod>() {
            Ok(pod) => {
                let ops = plan(&rules, &pod);
                if ops.is_empty() {
                    res
                } else {
                    match serde_json::from_value::<json_patch::Patch>(Value::Array(ops)) {
                        Ok(p) => res
                            .with_patch(p)
                            .unwrap_or_else(|e| AdmissionResponse::invalid(e.to_string())),
                        Err(e) => AdmissionResponse::invalid(e.to_string()),
                    }
                }
            }
            Err(e) => res.deny(e.to_string()),
        };
    }
    Json(res.into_review()).into_response()
}

pub fn router(rules: Arc<Rules>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .with_state(rules)
}
