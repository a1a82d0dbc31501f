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
use kube::core::Status;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::pod::{InlinePod, MetaNames, PodDoc, PodShapeError, Text, set_once};

pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The envelope, read before the request so version and kind errors are reported as such.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    api_version: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// The whole review; `R` is how the request is read (`OnePass` or `AdmissionRequest`).
/// `apiVersion` and `kind` borrow from the body: they are only compared.
#[derive(Debug, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "R: Deserialize<'de>, 'de: 'a")
)]
struct Review<'a, R> {
    #[serde(borrow)]
    api_version: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(default)]
    request: Option<R>,
}

/// The version the review is in (the answer is written in the same), if it and the kind
/// are ones this webhook answers.
fn check_envelope(api_version: &str, kind: &str) -> Result<&'static str, ReviewError> {
    let version = match api_version {
        V1 => V1,
        V1BETA1 => V1BETA1,
        other => return Err(ReviewError::Version(other.to_string())),
    };
    if kind != "AdmissionReview" {
        return Err(ReviewError::Kind(kind.to_string()));
    }
    Ok(version)
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

/// An AdmissionReview request. Its `Deserialize` is the plain two-pass reading (objects
/// kept as `RawValue`s, a Pod read when asked for); `parse_review` reads Pods in the same
/// pass as the envelope (`OnePass`) and falls back to this.
///
/// The strings a review of a Pod always carries are borrowed from the body (unless JSON
/// escapes make them differ from its bytes): owning them was a fifth of a small review's
/// allocations.
#[derive(Debug, Clone)]
pub struct AdmissionRequest<'a> {
    pub uid: Cow<'a, str>,
    pub kind: GroupVersionKind<'a>,
    pub resource: GroupVersionResource<'a>,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Operation,
    object: Option<Object<'a>>,
    old_object: Option<Object<'a>>,
    pub dry_run: Option<bool>,
}

/// `request.kind`: kube's `GroupVersionKind` (kube-core `src/gvk.rs`, every field
/// required), its strings borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// `request.resource`: kube's `GroupVersionResource` (kube-core `src/gvk.rs`: every field
/// required but its own `api_version`, which the API server never sends), borrowed.
/// `api_version` is never read; it is kept so that a body kube's type refused (one whose
/// `api_version` is not a string) is still refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupVersionResource<'a> {
    #[serde(borrow)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
    #[serde(default, borrow)]
    api_version: Cow<'a, str>,
}

/// `request.object` or `request.oldObject`.
#[derive(Debug, Clone)]
enum Object<'a> {
    /// Not read yet: not a Pod, or it came before the fields saying it is one. Read
    /// (partially, `PodDoc`) only when the decision asks for the pod.
    Raw(&'a RawValue),
    /// A Pod read in the envelope's pass.
    Inline(Box<InlinePod<'a>>),
}

/// The request exactly as serde's derive reads it; `AdmissionRequest`'s `Deserialize`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwoPass<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: GroupVersionKind<'a>,
    #[serde(borrow)]
    resource: GroupVersionResource<'a>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    // `Text`: serde borrows a bare `Cow<str>` field, never one inside an `Option`.
    #[serde(default, borrow)]
    namespace: Option<Text<'a>>,
    operation: Operation,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    old_object: Option<&'a RawValue>,
    #[serde(default)]
    dry_run: Option<bool>,
}

impl<'de: 'a, 'a> Deserialize<'de> for AdmissionRequest<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = TwoPass::deserialize(d)?;
        Ok(AdmissionRequest {
            uid: r.uid,
            kind: r.kind,
            resource: r.resource,
            sub_resource: r.sub_resource,
            name: r.name,
            namespace: r.namespace.map(Text::into_cow),
            operation: r.operation,
            object: r.object.map(Object::Raw),
            old_object: r.old_object.map(Object::Raw),
            dry_run: r.dry_run,
        })
    }
}

/// The request read in one pass: once `kind` and `resource` (which the API server sends
/// before `object`) say core/v1 Pod, `object` and `oldObject` are read straight into
/// `InlinePod`s instead of being skipped into `RawValue`s and parsed again.
///
/// Only ever stricter than `TwoPass` (maps only, and `InlinePod`'s own limits): a body
/// it refuses is read again by `TwoPass`, so results and errors stay those of the
/// two-pass reading, and whenever this succeeds its values equal that reading's.
struct OnePass<'a>(AdmissionRequest<'a>);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RequestKey {
    Uid,
    Kind,
    Resource,
    SubResource,
    Name,
    Namespace,
    Operation,
    Object,
    OldObject,
    DryRun,
    #[serde(other)]
    Other,
}

/// The fields of a request as `OnePass` collects them; `None` is "not seen".
#[derive(Default)]
struct Seen<'a> {
    uid: Option<Text<'a>>,
    kind: Option<GroupVersionKind<'a>>,
    resource: Option<GroupVersionResource<'a>>,
    sub_resource: Option<Option<String>>,
    name: Option<String>,
    namespace: Option<Option<Text<'a>>>,
    operation: Option<Operation>,
    object: Option<Option<Object<'a>>>,
    old_object: Option<Option<Object<'a>>>,
    dry_run: Option<Option<bool>>,
}

fn is_core_pod(kind: &GroupVersionKind, resource: &GroupVersionResource) -> bool {
    kind.group.is_empty() && kind.kind == "Pod" && resource.resource == "pods"
}

impl<'a> Seen<'a> {
    /// Reads `object` or `oldObject`: inline when already known to be a Pod.
    fn object<'de: 'a, A: MapAccess<'de>>(
        &self,
        map: &mut A,
        slot_is_set: bool,
        name: &'static str,
    ) -> Result<Option<Object<'a>>, A::Error> {
        if slot_is_set {
            return Err(A::Error::duplicate_field(name));
        }
        let pod = match (&self.kind, &self.resource) {
            (Some(k), Some(r)) => is_core_pod(k, r),
            _ => false,
        };
        Ok(if pod {
            map.next_value::<Option<InlinePod>>()?
                .map(|p| Object::Inline(Box::new(p)))
        } else {
            map.next_value::<Option<&'de RawValue>>()?.map(Object::Raw)
        })
    }

    fn finish<E: serde::de::Error>(self) -> Result<AdmissionRequest<'a>, E> {
        Ok(AdmissionRequest {
            uid: self.uid.ok_or_else(|| E::missing_field("uid"))?.into_cow(),
            kind: self.kind.ok_or_else(|| E::missing_field("kind"))?,
            resource: self.resource.ok_or_else(|| E::missing_field("resource"))?,
            sub_resource: self.sub_resource.flatten(),
            name: self.name.unwrap_or_default(),
            namespace: self.namespace.flatten().map(Text::into_cow),
            operation: self
                .operation
                .ok_or_else(|| E::missing_field("operation"))?,
            object: self.object.flatten(),
            old_object: self.old_object.flatten(),
            dry_run: self.dry_run.flatten(),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for OnePass<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = OnePass<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an AdmissionReview request")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnePass<'a>, A::Error> {
                let mut s = Seen::default();
                while let Some(key) = map.next_key::<RequestKey>()? {
                    match key {
                        RequestKey::Uid => set_once(&mut map, &mut s.uid, "uid")?,
                        RequestKey::Kind => set_once(&mut map, &mut s.kind, "kind")?,
                        RequestKey::Resource => set_once(&mut map, &mut s.resource, "resource")?,
                        RequestKey::SubResource => {
                            set_once(&mut map, &mut s.sub_resource, "subResource")?
                        }
                        RequestKey::Name => set_once(&mut map, &mut s.name, "name")?,
                        RequestKey::Namespace => set_once(&mut map, &mut s.namespace, "namespace")?,
                        RequestKey::Operation => set_once(&mut map, &mut s.operation, "operation")?,
                        RequestKey::Object => {
                            let o = s.object(&mut map, s.object.is_some(), "object")?;
                            s.object = Some(o);
                        }
                        RequestKey::OldObject => {
                            let o = s.object(&mut map, s.old_object.is_some(), "oldObject")?;
                            s.old_object = Some(o);
                        }
                        RequestKey::DryRun => set_once(&mut map, &mut s.dry_run, "dryRun")?,
                        RequestKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                s.finish().map(OnePass)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'a> AdmissionRequest<'a> {
    pub fn is_core_pod(&self) -> bool {
        is_core_pod(&self.kind, &self.resource)
    }

    pub fn sub_resource(&self) -> &str {
        self.sub_resource.as_deref().unwrap_or("")
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// The object's `metadata` names; `None` when there is no metadata, or (unread
    /// objects) it does not read as names.
    fn object_meta(&self) -> Option<MetaNames> {
        #[derive(Deserialize)]
        struct ObjectNames {
            #[serde(default)]
            metadata: Option<MetaNames>,
        }
        match self.object.as_ref()? {
            Object::Raw(raw) => {
                serde_json::from_str::<ObjectNames>(raw.get())
                    .ok()?
                    .metadata
            }
            Object::Inline(p) => p.names.clone(),
        }
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
    pub fn pod(&self) -> Option<Result<Cow<'_, PodDoc<'a>>, PodShapeError>> {
        self.object.as_ref().map(Object::pod)
    }

    /// The stored pod of an UPDATE, if it can be read.
    pub fn old_pod(&self) -> Option<Cow<'_, PodDoc<'a>>> {
        self.old_object.as_ref().and_then(|o| o.pod().ok())
    }
}

impl<'a> Object<'a> {
    fn pod(&self) -> Result<Cow<'_, PodDoc<'a>>, PodShapeError> {
        match self {
            Object::Raw(raw) => PodDoc::parse(raw.get()).map(Cow::Owned),
            Object::Inline(p) => Ok(Cow::Borrowed(&p.pod)),
        }
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
pub fn parse_review(body: &[u8]) -> Result<(&'static str, AdmissionRequest<'_>), ReviewError> {
    // One pass over the body in the common case (a Pod's fields read along with the
    // envelope); anything that pass refuses is read the two-pass way, which decides the
    // result and the error.
    //
    // JSON exchanged between systems is UTF-8 (RFC 8259, section 8.1) and the API server
    // sends nothing else. One check of the whole body up front lets both readings take it
    // as `&str`: serde_json then skips its per-string check of every key and value it
    // reads (7 % of a review's instructions), and the strings it skips unread, which it
    // never checks, are covered too, so a body is accepted or refused whichever reading
    // ends up deciding it.
    //
    // The check is simdutf8's (32 or 64 bytes a step where the CPU has the instructions,
    // chosen at run time; 2.3x std's on the loadgen corpus, in-loop); std's repeats it only
    // to find the offset for the error.
    let text = simdutf8::basic::from_utf8(body).map_err(|_| {
        let at = std::str::from_utf8(body).map_or_else(|e| e.valid_up_to(), str::len);
        ReviewError::Malformed(format!("not UTF-8 (invalid byte at offset {at})"))
    })?;
    // The one pass is read by our strict reader first (`json`: about half of serde_json's
    // cost for the skipped values), then by serde_json where it refuses (a non-Pod object
    // kept as a `RawValue`, a float, anything it cannot read exactly as serde_json would).
    let one_pass = super::json::from_str::<Review<OnePass>>(text)
        .ok()
        .or_else(|| serde_json::from_str::<Review<OnePass>>(text).ok());
    let read = match one_pass {
        Some(r) => (r.api_version, r.kind, r.request.map(|r| r.0)),
        None => read_two_pass(text)?,
    };
    check_review(read)
}

/// What every reading of a review must pass before it is decided.
fn check_review<'a>(
    (api_version, kind, request): (Text<'a>, Text<'a>, Option<AdmissionRequest<'a>>),
) -> Result<(&'static str, AdmissionRequest<'a>), ReviewError> {
    let api_version = check_envelope(&api_version, &kind)?;
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

/// The envelope with the request read as `TwoPass`: objects kept raw, Pods read later.
/// Only a failed read pays for a further, envelope-only read, so version and kind
/// problems are reported as such.
fn read_two_pass(
    body: &str,
) -> Result<(Text<'_>, Text<'_>, Option<AdmissionRequest<'_>>), ReviewError> {
    let malformed = |e: serde_json::Error| {
        let msg = e.to_string();
        ReviewError::Malformed(msg.lines().next().unwrap_or("").to_string())
    };
    match serde_json::from_str::<Review<AdmissionRequest>>(body) {
        Ok(r) => Ok((r.api_version, r.kind, r.request)),
        Err(e) => {
            let envelope: Envelope = serde_json::from_str(body).map_err(malformed)?;
            check_envelope(&envelope.api_version, &envelope.kind)?;
            Err(match envelope.request {
                None => ReviewError::NoRequest,
                Some(_) => malformed(e),
            })
        }
    }
}

/// The outcome of a decision, before it is wrapped in an envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// Set when denied: the message the tenant sees (sent as 403 Forbidden).
    pub denial: Option<String>,
    pub patch: PatchJson,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

/// A JSON patch (RFC 6902) as the JSON text of its operations, the form the response
/// carries (base64-encoded); empty when there is nothing to change. `ops()` reads the
/// operations back for callers that apply them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchJson(Vec<u8>);

impl PatchJson {
    /// `json` is an array of RFC 6902 operations, or empty for no patch.
    pub(crate) fn from_json(json: Vec<u8>) -> PatchJson {
        PatchJson(json)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn ops(&self) -> Vec<PatchOperation> {
        if self.0.is_empty() {
            return Vec::new();
        }
        serde_json::from_slice(&self.0).expect("written as an array of RFC 6902 operations")
    }
}

impl Verdict {
    pub fn allow() -> Verdict {
        Verdict {
            allowed: true,
            ..Default::default()
        }
    }
}

/// Serialises the response envelope: uid echoed, same apiVersion as the request, the
/// patch base64-encoded and present (with its type) only when non-empty.
///
/// Written field by field rather than through a derived `Serialize`: the base64 text
/// goes straight into the output, where serde_json would copy it through its string
/// escaper byte by byte (base64 has nothing to escape) — 4 % of a 30-site review's
/// instructions. Every request-derived string still goes through serde_json. The test
/// `envelope_matches_the_derived_serialisation` holds the bytes equal to the derived
/// struct this replaced.
pub fn response_json(api_version: &str, uid: &str, v: &Verdict) -> Vec<u8> {
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    let patch = (!v.patch.is_empty()).then(|| v.patch.as_bytes());
    let annotations: usize = v
        .audit_annotations
        .iter()
        .map(|(key, value)| key.len() + value.len() + 8)
        .sum();
    let warnings: usize = v.warnings.iter().map(|w| w.len() + 4).sum();
    let patch_len = patch.map_or(0, |p| {
        base64::encoded_len(p.len(), true).expect("a patch in memory has an encodable length")
    });
    // Sized up front: growing from a small buffer cost several copies.
    let mut out = Vec::with_capacity(
        256 + api_version.len() + uid.len() + patch_len + annotations + warnings,
    );
    out.extend_from_slice(b"{\"apiVersion\":");
    put(&mut out, &api_version);
    out.extend_from_slice(b",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    put(&mut out, &uid);
    out.extend_from_slice(if v.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if let Some(message) = &v.denial {
        let mut status = Status::failure(message, "Forbidden");
        status.code = 403;
        out.extend_from_slice(b",\"status\":");
        put(&mut out, &status);
    }
    if let Some(patch) = patch {
        out.extend_from_slice(b",\"patch\":\"");
        let start = out.len();
        out.resize(start + patch_len, 0);
        let written = B64
            .encode_slice(patch, &mut out[start..])
            .expect("sized for the padded encoding");
        out.truncate(start + written);
        out.extend_from_slice(b"\",\"patchType\":\"JSONPatch\"");
    }
    if !v.audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":");
        put(&mut out, &v.audit_annotations);
    }
    if !v.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":");
        put(&mut out, &v.warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

/// Appends `value` as JSON: how the answer's hand-written text writes every string, map
/// and value in it (escaped as serde_json escapes them).
pub(super) fn put<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and strings, string maps, `Value`s and `Status`
    // always serialise.
    serde_json::to_writer(out, value).expect("serialisable into memory");
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

    /// What a caller can observe of a parsed review.
    fn observed(r: Result<(&str, AdmissionRequest), ReviewError>) -> String {
        match r {
            Err(e) => format!("error: {e:?}"),
            Ok((v, q)) => format!(
                "{v} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} ns={} shown={} core={} pod={:?} old={:?}",
                q.uid,
                q.kind,
                q.resource,
                q.sub_resource,
                q.name,
                q.namespace,
                q.operation,
                q.dry_run,
                q.namespace(),
                q.display_name(),
                q.is_core_pod(),
                q.pod(),
                q.old_pod(),
            ),
        }
    }

    fn two_pass(body: &[u8]) -> Result<(&'static str, AdmissionRequest<'_>), ReviewError> {
        let text = std::str::from_utf8(body).expect("the comparisons are of UTF-8 bodies");
        check_review(read_two_pass(text)?)
    }

    /// A one-pass reading that succeeded with the Pod read inline.
    fn is_inline<E>(read: Result<Review<'_, OnePass<'_>>, E>) -> bool {
        read.is_ok_and(|r| matches!(r.request, Some(OnePass(q)) if matches!(q.object, Some(Object::Inline(_)))))
    }

    fn read_inline(body: &str) -> bool {
        is_inline(serde_json::from_str::<Review<OnePass>>(body))
    }

    /// Read inline by the strict reader (`json`), the first one `parse_review` tries.
    fn read_strict(body: &str) -> bool {
        is_inline(super::super::json::from_str::<Review<OnePass>>(body))
    }

    const HEAD: &str = r#""apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview""#;
    const POD: &str = r#""kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"}"#;
    const SPEC: &str = r#""spec":{"containers":[{"name":"a","image":"ghcr.io/acme/x","imagePullPolicy":"Always","env":[{"name":"x"}]}],"volumes":[{"name":"v","image":{"reference":"r"}}],"imagePullSecrets":[{"name":"s"}]}"#;

    /// A request (the inside of `"request":{…}`) around `object`.
    fn pod_request(extra: &str, object: &str) -> String {
        format!(
            r#"{{{HEAD},"request":{{"uid":"u",{POD},"operation":"CREATE"{extra},"object":{object}}}}}"#
        )
    }

    /// The one-pass reading gives what the two-pass one gives, errors included, on well
    /// formed Pods (read inline) and on everything it refuses (read again).
    #[test]
    fn one_pass_reads_what_two_passes_read() {
        let meta = r#""metadata":{"generateName":"g-","namespace":"o","annotations":{"pullsecret-injector.io/inject":"false","x":"y"}}"#;
        let inline = [
            pod_request(r#","namespace":"ns""#, &format!("{{{meta},{SPEC}}}")),
            pod_request("", &format!("{{{meta},{SPEC},\"status\":{{}}}}")),
            pod_request(r#","name":"n""#, &format!("{{\"metadata\":null,{SPEC}}}")),
            pod_request("", &format!("{{{SPEC}}}")),
            pod_request(
                r#","subResource":"ephemeralcontainers","dryRun":true"#,
                &format!("{{{SPEC}}},\"oldObject\":{{{SPEC}}}"),
            ),
            pod_request(
                "",
                &format!("{{\"metadata\":{{\"annotations\":null,\"generateName\":null}},{SPEC}}}"),
            ),
            pod_request(
                "",
                &format!("{{\"m\\u0065tadata\":{{\"namespace\":\"esc\"}},{SPEC}}}"),
            ),
            // read, then refused by the envelope checks
            format!(
                r#"{{"apiVersion":"v2","kind":"AdmissionReview","request":{{"uid":"u",{POD},"operation":"CREATE","object":{{{SPEC}}}}}}}"#
            ),
        ];
        let refused = [
            // shapes the pod reader reports, and shapes only the derive accepts
            pod_request("", r#"{"spec":{"containers":"x"}}"#),
            pod_request("", r#"{"spec":{"containers":[{"image":5}]}}"#),
            pod_request("", r#"{"metadata":{}}"#),
            pod_request("", r#"[null,{"containers":[{"image":"a"}]}]"#),
            pod_request("", r#"[{"namespace":"x"},{"containers":[]}]"#),
            pod_request("", &format!("{{\"metadata\":[null,\"o\"],{SPEC}}}")),
            pod_request("", &format!("{{\"metadata\":{{\"namespace\":5}},{SPEC}}}")),
            pod_request(
                "",
                &format!("{{\"metadata\":{{\"generateName\":{{}}}},{SPEC}}}"),
            ),
            pod_request(
                "",
                &format!("{{\"metadata\":{{}},\"metadata\":{{}},{SPEC}}}"),
            ),
            pod_request("", &format!("{{{SPEC},{SPEC}}}")),
            pod_request(
                "",
                &format!("{{\"metadata\":{{\"namespace\":\"a\",\"namespace\":\"b\"}},{SPEC}}}"),
            ),
            pod_request(
                "",
                &format!("{{\"metadata\":{{\"annotations\":{{}},\"annotations\":{{}}}},{SPEC}}}"),
            ),
            pod_request("", &format!("{{{SPEC}}},\"oldObject\":{{\"spec\":5}}")),
            pod_request("", &format!("{{{SPEC}}},\"object\":{{{SPEC}}}")),
            pod_request(r#","uid":"v""#, &format!("{{{SPEC}}}")),
            pod_request("", "null"),
            pod_request("", &format!("{{{SPEC}}}}}")),
            pod_request("", &format!("{{{SPEC},\"x\":[1,]}}")),
            format!(
                r#"{{{HEAD},"request":{{"uid":"u",{POD},"operation":"CREATE","object":{{{SPEC}}}}}}} x"#
            ),
            format!(
                r#"{{{HEAD},"request":["u",{{"group":"","version":"v1","kind":"Pod"}},{{"group":"","version":"v1","resource":"pods"}},null,"","ns","CREATE",{{{SPEC}}}]}}"#
            ),
            format!(r#"{{{HEAD},"request":{{{POD},"operation":"CREATE","object":{{{SPEC}}}}}}}"#),
        ];
        let two_pass_only = [
            // `object` before the fields that say it is a Pod: kept raw, read when asked
            format!(
                r#"{{{HEAD},"request":{{"object":{{"metadata":{{"namespace":"o"}},{SPEC}}},"uid":"u",{POD},"operation":"CREATE"}}}}"#
            ),
            // not a Pod
            format!(
                r#"{{{HEAD},"request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"ConfigMap"}},"resource":{{"group":"","version":"v1","resource":"configmaps"}},"operation":"CREATE","object":{{"data":{{}}}}}}}}"#
            ),
            format!(
                r#"{{{HEAD},"request":{{"uid":"u",{POD},"operation":"DELETE","oldObject":{{{SPEC}}}}}}}"#
            ),
        ];
        for body in inline.iter().chain(&refused).chain(&two_pass_only) {
            let one = observed(parse_review(body.as_bytes()));
            let two = observed(two_pass(body.as_bytes()));
            assert_eq!(one, two, "{body}");
        }
        for body in &inline {
            assert!(read_inline(body), "not read in one pass: {body}");
            assert!(read_strict(body), "not read by the strict reader: {body}");
        }
        for body in refused.iter().chain(&two_pass_only) {
            assert!(!read_inline(body), "read in one pass: {body}");
            assert!(!read_strict(body), "read by the strict reader: {body}");
        }
    }

    /// `parse_review` (one pass, falling back to two) answers exactly what the two-pass
    /// reading answers, errors included.
    ///
    /// A body that is not UTF-8 is refused before either reading (see
    /// `not_utf8_is_refused_wherever_it_is`), so only UTF-8 bodies are compared.
    fn assert_same(body: &[u8]) {
        if std::str::from_utf8(body).is_err() {
            assert_not_utf8(body);
            return;
        }
        assert_eq!(
            observed(parse_review(body)),
            observed(two_pass(body)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    /// `body` is refused as not UTF-8, before either reading.
    fn assert_not_utf8(body: &[u8]) {
        assert!(
            matches!(parse_review(body), Err(ReviewError::Malformed(m)) if m.starts_with("not UTF-8")),
            "{}",
            String::from_utf8_lossy(body)
        );
    }

    /// A realistic Pod review: annotations with escaped JSON, managed fields, numbers,
    /// probes, status: most of it skipped.
    fn corpus_body() -> Vec<u8> {
        let container = |n: usize| {
            serde_json::json!({
                "name": format!("c{n}"), "image": format!("ghcr.io/acme/app{n}:1.{n}"),
                "imagePullPolicy": "IfNotPresent", "command": ["/bin/app", "--x=\"q\""],
                "ports": [{"containerPort": 8080 + n, "protocol": "TCP"}],
                "env": [{"name": "A", "value": "caf\u{e9} \u{1f600}"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1.5Gi"}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 10, "successThreshold": 1.0e0, "x": -0.25, "y": null, "z": [true, false]},
            })
        };
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "team-a", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
                "object": {
                    "metadata": {
                        "generateName": "web-7d4b9c-", "namespace": "team-a",
                        "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                        "annotations": {
                            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{\"containers\":[]}}\n",
                            "pullsecret-injector.io/inject": "true"
                        },
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "controller": true, "blockOwnerDeletion": true}],
                        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]
                    },
                    "spec": {
                        "initContainers": [container(0)],
                        "containers": [container(1), container(2)],
                        "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}, {"name": "img", "image": {"reference": "ghcr.io/acme/data:1", "pullPolicy": "IfNotPresent"}}],
                        "imagePullSecrets": [{"name": "existing"}],
                        "priority": 0, "terminationGracePeriodSeconds": 30, "enableServiceLinks": true
                    },
                    "status": {"phase": "Pending", "qosClass": "Burstable"}
                },
                "oldObject": null, "dryRun": false,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
            }
        }))
        .unwrap()
    }

    /// Where JSON readers tend to differ (kept from the sonic-rs experiment, see
    /// benches/BENCHMARKS.md, "JSON reader: serde_json vs sonic-rs"): a harness for any
    /// other reader of the one pass.
    const TRICKY: &[&[u8]] = &[
        b"\xff",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xef\xbb\xbf",
        b"\x00",
        b"\x01",
        b"\x1f",
        b"\t",
        b"\n",
        b"\x0c",
        b"\x0b",
        b"\xc2\xa0",
        b"\\x",
        b"\\u12",
        b"\\u12\"",
        b"\\uzzzz",
        b"\\u00e9",
        b"\\ud800",
        b"\\udc00",
        b"\\ud800\\u0041",
        b"\\ud83d\\ude00",
        b"\\",
        b"\\\\",
        b"\"",
        b",",
        b",]",
        b",}",
        b"01",
        b"-01",
        b"1.",
        b"-",
        b".5",
        b"1e",
        b"1e+",
        b"1e999",
        b"-1e999",
        b"-0",
        b"1.5e-400",
        b"18446744073709551616",
        b"NaN",
        b"Infinity",
        b"+1",
        b"tru",
        b"nul",
        b"True",
        b"[",
        b"{",
        b"]",
        b"}",
        b":",
        b"//",
        b"/*x*/",
        b"\"a\":1,\"a\":2,",
        b"[[[[[[[[[[",
        b"]]]]]]]]]]",
        b" x",
    ];

    /// Every case of `TRICKY`, in a skipped field and in read fields.
    #[test]
    fn tricky_json_is_read_as_two_passes_read_it() {
        let spot = |frag: &[u8], at: &str| -> Vec<u8> {
            let mut b = corpus_body();
            let i = match at {
                "" => 0,
                _ => {
                    b.windows(at.len())
                        .position(|w| w == at.as_bytes())
                        .expect(at)
                        + at.len()
                }
            };
            b.splice(i..i, frag.iter().copied());
            b
        };
        let spots = [
            // inside skipped strings and values
            "\"path\":\"/ready",
            "\"manager\":\"kube-",
            "\"successThreshold\":",
            "\"x\":",
            "\"f:app\":",
            "\"priority\":",
            "\"userInfo\":{",
            "\"groups\":[",
            // inside read strings and values
            "\"image\":\"ghcr.io/",
            "\"generateName\":\"web-",
            "\"pullsecret-injector.io/inject\":\"tr",
            "\"imagePullSecrets\":[{\"name\":\"exist",
            "\"imagePullSecrets\":[{\"name\":",
            "\"imagePullSecrets\":[",
            "\"uid\":\"705ab",
            "\"dryRun\":",
            "\"operation\":",
            // between tokens and around the document
            "\"spec\":",
            "{\"apiVersion\"",
            "\"options\":{\"kind\":\"CreateOptions\",\"apiVersion\":\"meta.k8s.io/v1\"}}}",
            "",
        ];
        assert_same(&corpus_body());
        assert!(read_inline(std::str::from_utf8(&corpus_body()).unwrap()));
        assert!(read_strict(std::str::from_utf8(&corpus_body()).unwrap()));
        for frag in TRICKY {
            for at in spots {
                assert_same(&spot(frag, at));
            }
        }
        // Numbers, nesting and duplicates inside the `Value`s of `imagePullSecrets`.
        for entry in [
            r#"{"name":"a","n":1}"#,
            r#"{"name":"a","n":-0}"#,
            r#"{"name":"a","n":0.1}"#,
            r#"{"name":"a","n":2.2250738585072011e-308}"#,
            r#"{"name":"a","n":1e400}"#,
            r#"{"name":"a","n":18446744073709551616}"#,
            r#"{"name":"a","name":"b"}"#,
            r#"{"name":"a","o":{"p":[1]}}"#,
            r#"{"name":"\ud83d\ude00"}"#,
            "5",
            "null",
        ] {
            let b = spot(format!("{entry},").as_bytes(), "\"imagePullSecrets\":[");
            assert_same(&b);
        }
        // Nesting around serde_json's recursion limit (128), skipped and read.
        for depth in [100, 120, 126, 127, 128, 129, 200, 254, 255, 256, 300, 5000] {
            let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            assert_same(&spot(format!("{deep},").as_bytes(), "\"groups\":["));
            assert_same(&spot(
                format!("\"d\":{deep},").as_bytes(),
                "\"readinessProbe\":{",
            ));
            let entry = format!("{{\"name\":\"a\",\"d\":{deep}}},");
            assert_same(&spot(entry.as_bytes(), "\"imagePullSecrets\":["));
            let obj = format!(
                "{}{}",
                "{\"a\":".repeat(depth),
                "1".to_string() + &"}".repeat(depth)
            );
            assert_same(&spot(format!("\"d\":{obj},").as_bytes(), "\"metadata\":{"));
        }
        // The enum's map form, and an object shaped like serde_json's `RawValue` marker.
        assert_same(&spot(b"{\"CREATE\":null},\"x\":", "\"operation\":"));
        let marker = pod_request("", r#"{"$serde_json::private::RawValue":"{]"}"#)
            .replace(r#""kind":"Pod""#, r#""kind":"ConfigMap""#)
            .replace(r#""resource":"pods""#, r#""resource":"configmaps""#);
        assert_same(marker.as_bytes());
        // Truncations, and whitespace of every kind around the document.
        let body = corpus_body();
        for n in (0..body.len()).step_by(7) {
            assert_same(&body[..n]);
        }
        for (pre, post) in [
            (&b" \t\r\n"[..], &b" \t\r\n"[..]),
            (b"\xef\xbb\xbf", b""),
            (b"\x0c", b""),
            (b"", b"\x0c"),
            (b"", b"\x00"),
            (b"", b"{}"),
        ] {
            assert_same(&[pre, &body[..], post].concat());
        }
        // Whitespace between every token.
        let spaced: Vec<u8> =
            serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&body).unwrap())
                .unwrap();
        assert_same(&spaced);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Random damage to a corpus body: byte flips, insertions of tricky fragments,
        /// deletions and truncations; `parse_review` answers as the two-pass reading does.
        #[test]
        fn damaged_bodies_are_read_as_two_passes_read_them(
            edits in proptest::collection::vec(
                (0u8..4, proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>(), 0..TRICKY.len()),
                1..4,
            )
        ) {
            let mut b = corpus_body();
            for (op, at, byte, frag) in edits {
                let i = at.index(b.len() + 1);
                match op {
                    0 if i < b.len() => b[i] = byte,
                    1 => { b.splice(i..i, TRICKY[frag].iter().copied()); }
                    2 if i < b.len() => { b.remove(i); }
                    _ => b.truncate(i),
                }
            }
            assert_same(&b);
        }
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

    /// Invalid UTF-8 is refused wherever it is: in a field the one pass reads, in one it
    /// skips inside the Pod (serde_json never checks those), outside the Pod, and in a
    /// non-Pod object.
    #[test]
    fn not_utf8_is_refused_wherever_it_is() {
        let object = |labels: &str, image: &str| {
            format!(
                r#"{{"metadata":{{"name":"p","labels":{{"a":"{labels}"}}}},"spec":{{"containers":[{{"name":"c","image":"{image}"}}]}}}}"#
            )
        };
        let bodies = [
            pod_request(r#","userInfo":{"username":"MARK"}"#, &object("x", "nginx")),
            pod_request("", &object("MARK", "nginx")),
            pod_request("", &object("x", "MARK")),
            review("ConfigMap", "CREATE", Some(r#"{"data":{"k":"MARK"}}"#)),
            // Long enough on both sides of the marker for the check's 64-byte steps.
            review(
                "ConfigMap",
                "CREATE",
                Some(&format!(
                    r#"{{"data":{{"k":"{0}MARK{0}"}}}}"#,
                    "caf\u{e9} \u{1f600} ".repeat(40)
                )),
            ),
        ];
        for body in bodies {
            assert!(
                parse_review(body.replace("MARK", "ok").as_bytes()).is_ok(),
                "{body}"
            );
            let (head, tail) = body.split_once("MARK").expect("a marker");
            for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"a\xc3("] {
                let body = [head.as_bytes(), bad, tail.as_bytes()].concat();
                assert_not_utf8(&body);
                // The offset named is the first invalid byte's.
                let at = head.len() + usize::from(bad[0] == b'a');
                assert!(
                    matches!(parse_review(&body), Err(ReviewError::Malformed(m)) if m.ends_with(&format!("offset {at})"))),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    /// The envelope `response_json` writes field by field, byte for byte what the
    /// derived serialisation it replaced writes, over every combination of optional
    /// parts and strings that need escaping.
    #[test]
    fn envelope_matches_the_derived_serialisation() {
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
        fn derived(api_version: &str, uid: &str, v: &Verdict) -> Vec<u8> {
            let patch = (!v.patch.is_empty()).then(|| {
                base64::engine::general_purpose::STANDARD
                    .encode(serde_json::to_vec(&v.patch.ops()).expect("serialises"))
            });
            let out = ReviewOut {
                api_version,
                kind: "AdmissionReview",
                response: ResponseOut {
                    uid,
                    allowed: v.allowed,
                    status: v.denial.as_ref().map(|message| {
                        let mut s = Status::failure(message, "Forbidden");
                        s.code = 403;
                        s
                    }),
                    patch_type: patch.as_ref().map(|_| "JSONPatch"),
                    patch,
                    audit_annotations: &v.audit_annotations,
                    warnings: &v.warnings,
                },
            };
            serde_json::to_vec(&out).expect("serialises")
        }
        let op = |path: &str, value: serde_json::Value| {
            serde_json::from_value::<PatchOperation>(
                serde_json::json!({"op": "add", "path": path, "value": value}),
            )
            .expect("an add operation")
        };
        // 1, 2 and 3 bytes past a multiple of three: every base64 padding.
        let patches = [
            vec![],
            vec![op("/a", "x".into())],
            vec![op("/ab", "x".into())],
            vec![op("/abc", "x".into())],
            vec![
                op(
                    "/spec/imagePullSecrets",
                    serde_json::json!([{"name": "r\"e\\g\u{7f}\u{1}"}]),
                ),
                op("/metadata/annotations/a~1b", "ünï\u{2028}".into()),
            ],
        ];
        for (i, patch) in patches.iter().enumerate() {
            for mask in 0..16u8 {
                let v = Verdict {
                    allowed: mask & 1 == 0,
                    denial: (mask & 1 == 1).then(|| "registry \"evil\" is\ndenied".to_string()),
                    patch: if patch.is_empty() {
                        PatchJson::default()
                    } else {
                        PatchJson::from_json(serde_json::to_vec(patch).expect("serialises"))
                    },
                    warnings: if mask & 2 == 2 {
                        vec!["w1".into(), "tab\there \u{1b}[31m".into()]
                    } else {
                        vec![]
                    },
                    audit_annotations: if mask & 4 == 4 {
                        BTreeMap::from([("k\"".into(), "v\n".into()), ("a".into(), "".into())])
                    } else {
                        BTreeMap::new()
                    },
                };
                let uid = if mask & 8 == 8 {
                    "u\"\\\u{0}\u{2029}"
                } else {
                    "705ab4f5"
                };
                for api_version in [V1, V1BETA1, "x\"y"] {
                    let ours = response_json(api_version, uid, &v);
                    assert_eq!(
                        String::from_utf8(ours.clone()).expect("UTF-8"),
                        String::from_utf8(derived(api_version, uid, &v)).expect("UTF-8"),
                        "patch {i}, mask {mask}, {api_version}"
                    );
                    serde_json::from_slice::<serde_json::Value>(&ours).expect("valid JSON");
                }
            }
        }
    }
}
