//! A read-only view over a pod spec as JSON. The decision reads the JSON the API server
//! sent rather than a typed `Pod`, because typed structs drop fields newer than the
//! `k8s-openapi` release we build with, and the patch must target exactly the document the
//! API server will patch.

use serde_json::{Map, Value};

/// Where an image is referenced: which list, which index, and the field holding its pull policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteKind {
    InitContainer,
    Container,
    EphemeralContainer,
    ImageVolume,
}

impl SiteKind {
    pub const ALL: [SiteKind; 4] = [
        SiteKind::InitContainer,
        SiteKind::Container,
        SiteKind::EphemeralContainer,
        SiteKind::ImageVolume,
    ];

    /// Field name under `spec`.
    pub fn list(self) -> &'static str {
        match self {
            SiteKind::InitContainer => "initContainers",
            SiteKind::Container => "containers",
            SiteKind::EphemeralContainer => "ephemeralContainers",
            SiteKind::ImageVolume => "volumes",
        }
    }

    /// Word used in messages to tenants.
    pub fn noun(self) -> &'static str {
        match self {
            SiteKind::InitContainer => "init container",
            SiteKind::Container => "container",
            SiteKind::EphemeralContainer => "ephemeral container",
            SiteKind::ImageVolume => "image volume",
        }
    }
}

/// One image reference in a pod.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    pub kind: SiteKind,
    pub index: usize,
    pub name: &'a str,
    pub image: &'a str,
    pub pull_policy: Option<&'a str>,
}

impl Site<'_> {
    /// JSON-pointer tokens of this site's pull-policy field, relative to the pod spec.
    pub fn policy_tokens(&self) -> Vec<String> {
        match self.kind {
            SiteKind::ImageVolume => vec![
                "volumes".into(),
                self.index.to_string(),
                "image".into(),
                "pullPolicy".into(),
            ],
            k => vec![
                k.list().into(),
                self.index.to_string(),
                "imagePullPolicy".into(),
            ],
        }
    }

    pub fn describe(&self) -> String {
        format!("{} {:?}", self.kind.noun(), self.name)
    }
}

/// A pod (or pod template): its annotations and spec as received.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    /// `None` when the object has no `metadata` at all (possible in templates only).
    pub metadata: Option<&'a Map<String, Value>>,
    pub spec: &'a Value,
}

/// Problems reading a pod that claims to be one; reported, never guessed around.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PodShapeError(pub String);

impl<'a> PodView<'a> {
    /// `obj` is a Pod or a pod template (`{metadata, spec}`).
    pub fn new(obj: &'a Value) -> Result<PodView<'a>, PodShapeError> {
        let obj = obj
            .as_object()
            .ok_or_else(|| PodShapeError("object is not a JSON object".into()))?;
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(PodShapeError("metadata is not an object".into())),
        };
        let spec = match obj.get("spec") {
            Some(s @ Value::Object(_)) => s,
            Some(_) => return Err(PodShapeError("spec is not an object".into())),
            None => return Err(PodShapeError("pod has no spec".into())),
        };
        Ok(PodView { metadata, spec })
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.metadata?.get("annotations")?.get(key)?.as_str()
    }

    pub fn has_annotations(&self) -> bool {
        matches!(
            self.metadata.and_then(|m| m.get("annotations")),
            Some(Value::Object(_))
        )
    }

    /// Entries of `spec.imagePullSecrets` as received (kept verbatim when re-emitted).
    pub fn pull_secrets(&self) -> Result<&'a [Value], PodShapeError> {
        match self.spec.get("imagePullSecrets") {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(PodShapeError("spec.imagePullSecrets is not a list".into())),
        }
    }

    pub fn pull_secret_names(&self) -> Result<Vec<&'a str>, PodShapeError> {
        Ok(self
            .pull_secrets()?
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect())
    }

    /// Every image in the pod, in spec order: init, regular, ephemeral containers, image volumes.
    pub fn sites(&self) -> Result<Vec<Site<'a>>, PodShapeError> {
        let mut out = Vec::new();
        for kind in SiteKind::ALL {
            self.sites_of(kind, &mut out)?;
        }
        Ok(out)
    }

    pub fn sites_of(&self, kind: SiteKind, out: &mut Vec<Site<'a>>) -> Result<(), PodShapeError> {
        let list = match self.spec.get(kind.list()) {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(PodShapeError(format!("spec.{} is not a list", kind.list())));
            }
        };
        for (index, item) in list.iter().enumerate() {
            let name = item.get("name").and_then(Value::as_str).unwrap_or("");
            let (holder, image_field, policy_field) = match kind {
                SiteKind::ImageVolume => match item.get("image") {
                    Some(v @ Value::Object(_)) => (v, "reference", "pullPolicy"),
                    _ => continue, // not an image volume
                },
                _ => (item, "image", "imagePullPolicy"),
            };
            let image = match holder.get(image_field) {
                Some(Value::String(s)) => s.as_str(),
                None | Some(Value::Null) => "",
                Some(_) => {
                    return Err(PodShapeError(format!(
                        "spec.{}[{index}].{image_field} is not a string",
                        kind.list()
                    )));
                }
            };
            out.push(Site {
                kind,
                index,
                name,
                image,
                pull_policy: holder.get(policy_field).and_then(Value::as_str),
            });
        }
        Ok(())
    }
}
