//! The AdmissionReview envelope, in and out.
//!
//! Field types come from `kube::core` (`GroupVersionKind`, `Operation`, `Status`…), but
//! the request and response structs are our own equivalents of kube's, for two reasons
//! the reference notes record: kube's `AdmissionRequest<T>` forces the object through a
//! typed `ObjectMeta` (dropping fields our patch must not disturb), and kube's
//! `AdmissionResponse` serialises the patch as a JSON array of numbers (kube-rs#1781)
//! instead of the documented base64 string.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use json_patch::PatchOperation;
use kube::core::{GroupVersionKind, GroupVersionResource, Status};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::pod::{PodDoc, PodShapeError};

pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The envelope, read before the request so version and kind errors are reported as such.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// The whole review, read in one pass.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: String,
    kind: String,
    #[serde(default, borrow)]
    request: Option<AdmissionRequest<'a>>,
}

fn check_envelope(api_version: &str, kind: &str) -> Result<(), ReviewError> {
    if api_version != V1 && api_version != V1BETA1 {
        return Err(ReviewError::Version(api_version.to_string()));
    }
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(kind.to_string()));
    }
    Ok(())
}

/// An operation this webhook may be asked about; unknown values are kept as `Other` so a
/// newer API server's review is answered instead of rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    #[serde(other)]
    Other,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
            Operation::Other => "OTHER",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    /// Left unparsed until the request is known to be about a Pod; then only the fields
    /// the decision needs are read (`PodDoc`).
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectNames {
    #[serde(default)]
    metadata: Option<NamesMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NamesMeta {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
}

impl AdmissionRequest<'_> {
    pub fn is_core_pod(&self) -> bool {
        self.kind.group.is_empty() && self.kind.kind == "Pod" && self.resource.resource == "pods"
    }

    pub fn sub_resource(&self) -> &str {
        self.sub_resource.as_deref().unwrap_or("")
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    fn object_meta(&self) -> Option<NamesMeta> {
        serde_json::from_str::<ObjectNames>(self.object?.get())
            .ok()?
            .metadata
    }

    /// The namespace from the request, falling back to the object's own.
    pub fn namespace(&self) -> Cow<'_, str> {
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => Cow::Borrowed(ns),
            _ => Cow::Owned(
                self.object_meta()
                    .and_then(|m| m.namespace)
                    .unwrap_or_default(),
            ),
        }
    }

    /// `name` or, for controller-created pods (CREATE with generateName), `generateName`.
    pub fn display_name(&self) -> Cow<'_, str> {
        if !self.name.is_empty() {
            return Cow::Borrowed(&self.name);
        }
        Cow::Owned(
            self.object_meta()
                .and_then(|m| m.generate_name)
                .unwrap_or_default(),
        )
    }

    /// The pod under review, read partially; `None` when there is no object.
    pub fn pod(&self) -> Option<Result<PodDoc, PodShapeError>> {
        self.object.map(|o| PodDoc::parse(o.get()))
    }

    /// The stored pod of an UPDATE, if it can be read.
    pub fn old_pod(&self) -> Option<PodDoc> {
        self.old_object.and_then(|o| PodDoc::parse(o.get()).ok())
    }
}

/// Why a body is not an AdmissionReview we can answer (answered with HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not a valid AdmissionReview: {0}")]
    Malformed(String),
    #[error("unsupported AdmissionReview apiVersion {0:?} (expected admission.k8s.io/v1)")]
    Version(String),
    #[error("kind is {0:?}, expected AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has an empty uid")]
    NoUid,
    #[error("AdmissionReview request for a Pod {0} has no object")]
    NoObject(&'static str),
}

/// Parses a review; v1beta1 is accepted and answered in kind (same shape, and the API
/// server's v1beta1 path is more lenient, so answering in kind is always safe).
pub fn parse_review(body: &[u8]) -> Result<(String, AdmissionRequest<'_>), ReviewError> {
    let malformed = |e: serde_json::Error| {
        let msg = e.to_string();
        ReviewError::Malformed(msg.lines().next().unwrap_or("").to_string())
    };
    // One pass over the body in the common case; only a failed parse pays for a second,
    // envelope-only read, so version and kind problems are reported as such.
    let review: Result<Review, _> = serde_json::from_slice(body);
    let (api_version, kind, request) = match review {
        Ok(r) => (r.api_version, r.kind, r.request),
        Err(e) => {
            let envelope: Envelope = serde_json::from_slice(body).map_err(malformed)?;
            check_envelope(&envelope.api_version, &envelope.kind)?;
            return Err(match envelope.request {
                None => ReviewError::NoRequest,
                Some(_) => malformed(e),
            });
        }
    };
    check_envelope(&api_version, &kind)?;
    let req = request.ok_or(ReviewError::NoRequest)?;
    if req.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    // The API server always sends the object of a CREATE or UPDATE (only DELETE has none).
    // Without one there is nothing to judge, and answering "allowed" would fail open.
    // `null` reads as `None` too.
    if req.is_core_pod()
        && matches!(req.operation, Operation::Create | Operation::Update)
        && req.object.is_none()
    {
        return Err(ReviewError::NoObject(req.operation.as_str()));
    }
    Ok((api_version, req))
}

/// The outcome of a decision, before it is wrapped in an envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// Set when denied: the message the tenant sees (sent as 403 Forbidden).
    pub denial: Option<String>,
    pub patch: Vec<PatchOperation>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

impl Verdict {
    pub fn allow() -> Verdict {
        Verdict {
            allowed: true,
            ..Default::default()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    warnings: &'a [String],
}

/// Serialises the response envelope: uid echoed, same apiVersion as the request, the
/// patch base64-encoded and present (with its type) only when non-empty.
pub fn response_json(api_version: &str, uid: &str, v: &Verdict) -> Vec<u8> {
    let patch = (!v.patch.is_empty()).then(|| {
        let bytes = serde_json::to_vec(&v.patch).expect("patch operations always serialise");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    let status = v.denial.as_ref().map(|message| {
        let mut s = Status::failure(message, "Forbidden");
        s.code = 403;
        s
    });
    let out = ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: v.allowed,
            status,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &v.audit_annotations,
            warnings: &v.warnings,
        },
    };
    serde_json::to_vec(&out).expect("response always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(kind: &str, operation: &str, object: Option<&str>) -> String {
        let resource = format!("{}s", kind.to_lowercase());
        let object = object
            .map(|o| format!(r#","object":{o}"#))
            .unwrap_or_default();
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"{kind}"}},"resource":{{"group":"","version":"v1","resource":"{resource}"}},"operation":"{operation}"{object}}}}}"#
        )
    }

    #[test]
    fn pod_writes_must_carry_an_object() {
        use ReviewError::NoObject;
        let cases: &[(&str, &str, Option<&str>, Option<ReviewError>)] = &[
            ("Pod", "CREATE", None, Some(NoObject("CREATE"))),
            ("Pod", "CREATE", Some("null"), Some(NoObject("CREATE"))),
            ("Pod", "UPDATE", Some("null"), Some(NoObject("UPDATE"))),
            ("Pod", "CREATE", Some("{}"), None),
            ("Pod", "DELETE", None, None),
            ("Pod", "CONNECT", Some("null"), None),
            ("ConfigMap", "CREATE", None, None),
        ];
        for (kind, op, object, want) in cases {
            let body = review(kind, op, *object);
            let got = parse_review(body.as_bytes()).err();
            assert_eq!(&got, want, "{kind} {op} {object:?}");
        }
    }
}
