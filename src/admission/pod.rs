//! The parts of a pod (or pod template) the decision reads, and nothing else.
//!
//! Deserialising only these fields — skipping the rest of the object without building it —
//! is what keeps a review cheap: profiling showed building and dropping a full JSON tree
//! of the pod was ~85% of the cost of a review. It also never re-emits fields it does not
//! know, because the patch targets exactly the document the API server sent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

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

/// The pull-policy field of one site: `containers/0/imagePullPolicy`,
/// `volumes/2/image/pullPolicy`. Two words instead of a list of strings, since the
/// mutating path records one per image it forces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyField {
    pub kind: SiteKind,
    pub index: usize,
}

/// `containers/0`: the site, as audit annotations and reports name it.
impl std::fmt::Display for PolicyField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.list(), self.index)
    }
}

impl PolicyField {
    /// The field's path below the site (`imagePullPolicy`, or `image/pullPolicy` in an
    /// image volume).
    pub fn field_tokens(&self) -> &'static [&'static str] {
        match self.kind {
            SiteKind::ImageVolume => &["image", "pullPolicy"],
            _ => &["imagePullPolicy"],
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
    /// Where this site's pull policy lives.
    pub fn policy_field(&self) -> PolicyField {
        PolicyField {
            kind: self.kind,
            index: self.index,
        }
    }

    /// `container "app"`; the name escaped and bounded, since it is the tenant's.
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind.noun(), super::text::quote(self.name))
    }
}

/// Problems reading an object that claims to be a pod; reported, never guessed around.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PodShapeError(pub String);

/// Pod annotation recording which secrets this tool added.
pub const INJECTED_ANNOTATION: &str = "pullsecret-injector.io/injected";
/// Pod annotation a tenant sets to `"false"` to opt out.
pub const OPT_OUT_ANNOTATION: &str = "pullsecret-injector.io/inject";
/// Set by kubelets on mirror pods of static manifests.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The annotations the decision reads; all others are skipped unread (a pod's
/// `last-applied-configuration` alone can be kilobytes).
#[derive(Debug, Clone, Default)]
struct Annotations(BTreeMap<&'static str, String>);

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Annotations;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Annotations, A::Error> {
                let mut out = BTreeMap::new();
                // `Text`, not `Cow<str>`: serde's `Cow` always deserialises owned, one
                // allocation per annotation key of every Pod.
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match [INJECTED_ANNOTATION, OPT_OUT_ANNOTATION, MIRROR_ANNOTATION]
                        .into_iter()
                        .find(|k| *k == &*key)
                    {
                        Some(k) => {
                            out.insert(k, map.next_value::<String>()?);
                        }
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Annotations(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaDoc {
    #[serde(default)]
    annotations: Option<Annotations>,
}

/// A string field of the pod, borrowed from the review's text unless JSON escapes make
/// it differ from those bytes. A review reads three per container, and owning them was
/// a third of a review's allocations. (serde borrows a bare `Cow<str>` field, never one
/// inside an `Option`, hence this type.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Text<'a>(Cow<'a, str>);

impl<'a> Text<'a> {
    pub(crate) fn into_cow(self) -> Cow<'a, str> {
        self.0
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            // The words `String`'s own visitor uses, so errors read as they did.
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerDoc<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    image: Option<Text<'a>>,
    #[serde(default, borrow)]
    image_pull_policy: Option<Text<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageSourceDoc<'a> {
    #[serde(default, borrow)]
    reference: Option<Text<'a>>,
    #[serde(default, borrow)]
    pull_policy: Option<Text<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeDoc<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    image: Option<ImageSourceDoc<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDoc<'a> {
    #[serde(default, borrow)]
    init_containers: Option<Vec<ContainerDoc<'a>>>,
    #[serde(default, borrow)]
    containers: Option<Vec<ContainerDoc<'a>>>,
    #[serde(default, borrow)]
    ephemeral_containers: Option<Vec<ContainerDoc<'a>>>,
    #[serde(default, borrow)]
    volumes: Option<Vec<VolumeDoc<'a>>>,
    /// Kept verbatim: existing entries are re-emitted exactly as received.
    #[serde(default)]
    image_pull_secrets: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Doc<'a> {
    #[serde(default)]
    metadata: Option<MetaDoc>,
    #[serde(default, borrow)]
    spec: Option<SpecDoc<'a>>,
}

/// `metadata.namespace` and `metadata.generateName` of an object: what a request falls
/// back on when it names no namespace, or (a CREATE with `generateName`) no object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetaNames {
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    #[serde(default)]
    pub(crate) generate_name: Option<String>,
}

/// A Pod read inside the envelope's own pass over the body (see `request::OnePass`), so
/// its bytes are scanned once instead of skipped into a `RawValue` and parsed again.
///
/// Deliberately stricter than `PodDoc::parse`: objects only (no serde sequence forms), no
/// missing `spec`, and `namespace`/`generateName` must be strings. Whatever it refuses
/// makes the envelope read fail, and the caller then reads the body the two-pass way,
/// which yields exactly the old results (errors included). So whenever this succeeds,
/// its values are the ones the two-pass read would have produced.
#[derive(Debug, Clone)]
pub(crate) struct InlinePod<'a> {
    pub(crate) pod: PodDoc<'a>,
    /// `None` when the object has no (or a null) `metadata`.
    pub(crate) names: Option<MetaNames>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum DocKey {
    Metadata,
    Spec,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum MetaKey {
    Annotations,
    Namespace,
    GenerateName,
    #[serde(other)]
    Other,
}

/// Stores a field's value, refusing a second occurrence as serde's derive does (shared
/// with the request's one-pass reader).
pub(crate) fn set_once<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(serde::de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// `metadata` of an `InlinePod`: the watched annotations and the two names.
struct InlineMeta {
    annotations: Option<Annotations>,
    names: MetaNames,
}

impl<'de> Deserialize<'de> for InlineMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InlineMeta;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object's metadata")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InlineMeta, A::Error> {
                let (mut annotations, mut namespace, mut generate_name) = (None, None, None);
                while let Some(key) = map.next_key::<MetaKey>()? {
                    match key {
                        MetaKey::Annotations => {
                            set_once(&mut map, &mut annotations, "annotations")?
                        }
                        MetaKey::Namespace => set_once(&mut map, &mut namespace, "namespace")?,
                        MetaKey::GenerateName => {
                            set_once(&mut map, &mut generate_name, "generateName")?
                        }
                        MetaKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(InlineMeta {
                    annotations: annotations.flatten(),
                    names: MetaNames {
                        namespace: namespace.flatten(),
                        generate_name: generate_name.flatten(),
                    },
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for InlinePod<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InlinePod<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Pod object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InlinePod<'de>, A::Error> {
                let (mut metadata, mut spec) = (None, None);
                while let Some(key) = map.next_key::<DocKey>()? {
                    match key {
                        DocKey::Metadata => set_once(&mut map, &mut metadata, "metadata")?,
                        DocKey::Spec => set_once(&mut map, &mut spec, "spec")?,
                        DocKey::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let metadata: Option<InlineMeta> = metadata.flatten();
                // The two-pass read reports this as a `PodShapeError`; refusing here
                // hands the body to it.
                let spec: SpecDoc<'de> = spec
                    .flatten()
                    .ok_or_else(|| serde::de::Error::custom("pod has no spec"))?;
                let (annotations, names) = match metadata {
                    Some(m) => (m.annotations, Some(m.names)),
                    None => (None, None),
                };
                Ok(InlinePod {
                    pod: PodDoc {
                        has_metadata: names.is_some(),
                        annotations,
                        spec,
                    },
                    names,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A pod or pod template, as far as image pulls are concerned.
#[derive(Debug, Clone)]
pub struct PodDoc<'a> {
    has_metadata: bool,
    annotations: Option<Annotations>,
    spec: SpecDoc<'a>,
}

impl<'a> PodDoc<'a> {
    fn from_doc(d: Doc<'a>) -> Result<PodDoc<'a>, PodShapeError> {
        let spec = d
            .spec
            .ok_or_else(|| PodShapeError("pod has no spec".into()))?;
        Ok(PodDoc {
            has_metadata: d.metadata.is_some(),
            annotations: d.metadata.and_then(|m| m.annotations),
            spec,
        })
    }

    /// Reads the JSON text of a Pod or a pod template (`{metadata, spec}`).
    pub fn parse(json: &'a str) -> Result<PodDoc<'a>, PodShapeError> {
        let d: Doc = serde_json::from_str(json).map_err(|e| PodShapeError(e.to_string()))?;
        Self::from_doc(d)
    }

    /// Reads an already parsed Pod or template (the offline manifest path).
    pub fn from_value(v: &'a Value) -> Result<PodDoc<'a>, PodShapeError> {
        let d = Doc::deserialize(v).map_err(|e| PodShapeError(e.to_string()))?;
        Self::from_doc(d)
    }
}

impl PodDoc<'static> {
    /// Reads a Pod it takes over, owning its strings: for keeping it beyond any text
    /// (the audit's per-pod cache).
    pub fn from_owned_value(v: Value) -> Result<PodDoc<'static>, PodShapeError> {
        let d = Doc::deserialize(v).map_err(|e| PodShapeError(e.to_string()))?;
        Self::from_doc(d)
    }
}

impl<'a> PodDoc<'a> {
    pub fn has_metadata(&self) -> bool {
        self.has_metadata
    }

    pub fn has_annotations(&self) -> bool {
        self.annotations.is_some()
    }

    /// One of the annotations this module reads (`INJECTED_ANNOTATION`, …).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.0.get(key).map(String::as_str)
    }

    /// Entries of `spec.imagePullSecrets` as received.
    pub fn pull_secrets(&self) -> &[Value] {
        self.spec.image_pull_secrets.as_deref().unwrap_or(&[])
    }

    pub fn pull_secret_names(&self) -> Vec<&str> {
        self.pull_secrets()
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect()
    }

    /// Every image in the pod, in spec order: init, regular, ephemeral containers, image volumes.
    pub fn sites(&self) -> Vec<Site<'_>> {
        let spec = &self.spec;
        let len = |list: &Option<Vec<_>>| list.as_ref().map_or(0, Vec::len);
        // An upper bound (volumes without an image count too): one allocation.
        let mut out = Vec::with_capacity(
            len(&spec.init_containers)
                + len(&spec.containers)
                + len(&spec.ephemeral_containers)
                + spec.volumes.as_ref().map_or(0, Vec::len),
        );
        for kind in SiteKind::ALL {
            self.sites_of(kind, &mut out);
        }
        out
    }

    pub fn sites_of<'s>(&'s self, kind: SiteKind, out: &mut Vec<Site<'s>>) {
        let containers = match kind {
            SiteKind::InitContainer => &self.spec.init_containers,
            SiteKind::Container => &self.spec.containers,
            SiteKind::EphemeralContainer => &self.spec.ephemeral_containers,
            SiteKind::ImageVolume => {
                for (index, v) in self.spec.volumes.iter().flatten().enumerate() {
                    // only image volumes pull anything
                    if let Some(img) = &v.image {
                        out.push(Site {
                            kind,
                            index,
                            name: v.name.as_deref().unwrap_or(""),
                            image: img.reference.as_deref().unwrap_or(""),
                            pull_policy: img.pull_policy.as_deref(),
                        });
                    }
                }
                return;
            }
        };
        for (index, c) in containers.iter().flatten().enumerate() {
            out.push(Site {
                kind,
                index,
                name: c.name.as_deref().unwrap_or(""),
                image: c.image.as_deref().unwrap_or(""),
                pull_policy: c.image_pull_policy.as_deref(),
            });
        }
    }

    /// Names of the ephemeral containers (to tell new ones from existing ones on update).
    pub fn ephemeral_names(&self) -> impl Iterator<Item = &str> {
        self.spec
            .ephemeral_containers
            .iter()
            .flatten()
            .filter_map(|c| c.name.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_it_needs_and_reports_bad_shapes() {
        let p = PodDoc::parse(
            r#"{"metadata":{"annotations":{"a":"b","pullsecret-injector.io/inject":"false"}},"spec":{"containers":[{"name":"c","image":"nginx","resources":{"x":[1,2]}}],
                "volumes":[{"name":"cm","configMap":{}},{"name":"m","image":{"reference":"r","pullPolicy":"Always"}}],
                "imagePullSecrets":null,"unknownField":{"deep":[{}]}}}"#,
        )
        .unwrap();
        let s = p.sites();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].kind, s[1].index, s[1].image),
            (SiteKind::ImageVolume, 1, "r")
        );
        assert!(p.has_annotations());
        assert_eq!(
            p.annotation("a"),
            None,
            "unwatched annotations are not kept"
        );
        assert_eq!(p.annotation(OPT_OUT_ANNOTATION), Some("false"));
        assert!(p.pull_secrets().is_empty());
        for bad in [
            r#"{"spec":{"containers":"x"}}"#,
            r#"{"metadata":{}}"#,
            r#"[]"#,
            r#"{"spec":{"containers":[{"image":5}]}}"#,
        ] {
            assert!(PodDoc::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn strings_borrow_from_the_text_unless_escapes_change_them() {
        let text = r#"{"spec":{"containers":[{"name":"plain","image":"ghcr.io/acme/app:1"},
            {"name":"esc\u0061ped","image":"ghcr.io\/acme\/app:2","imagePullPolicy":"Always"}]}}"#;
        let p = PodDoc::parse(text).unwrap();
        let c = p.spec.containers.as_deref().unwrap();
        assert!(matches!(
            c[0].image,
            Some(Text(Cow::Borrowed("ghcr.io/acme/app:1")))
        ));
        assert!(matches!(&c[1].image, Some(Text(Cow::Owned(s))) if s == "ghcr.io/acme/app:2"));
        let sites: Vec<_> = p.sites().iter().map(|s| (s.name, s.image)).collect();
        assert_eq!(
            sites,
            [
                ("plain", "ghcr.io/acme/app:1"),
                ("escaped", "ghcr.io/acme/app:2")
            ]
        );
        // Read from a value it owns, the same pod reads the same.
        let owned = PodDoc::from_owned_value(serde_json::from_str(text).unwrap()).unwrap();
        let again: Vec<_> = owned.sites().iter().map(|s| (s.name, s.image)).collect();
        assert_eq!(again, sites);
    }
}
