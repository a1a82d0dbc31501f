//! The API server's Pod defaulting that our decision depends on, applied offline before
//! judging: a webhook never sees a Pod without pull policies, because defaulting runs when
//! the object is decoded, before admission. Only the pull-policy defaults matter here
//! (nothing else the decision reads has a default).
//!
//! Upstream: k8s.io/kubernetes `pkg/apis/core/v1/defaults.go`, `SetDefaults_Container`
//! (also applied to ephemeral containers through `SetDefaults_EphemeralContainer`) and
//! `SetDefaults_ImageVolumeSource`:
//!
//! ```go
//! if obj.ImagePullPolicy == "" {
//!     _, tag, _, _ := parsers.ParseImageName(obj.Image)   // error ignored
//!     if tag == "latest" { obj.ImagePullPolicy = v1.PullAlways } else { ... PullIfNotPresent }
//! }
//! ```
//!
//! and `pkg/util/parsers.ParseImageName`, which makes the tag `latest` only when the
//! reference has neither a tag nor a digest. So `nginx` and `nginx:latest` default to
//! `Always`; `nginx:1.25`, `nginx@sha256:…` and unparseable references to `IfNotPresent`.

use serde_json::Value;

use crate::admission::pod::SiteKind;
use crate::image;

/// The policy the API server gives an image whose pull policy is unset.
pub(crate) fn default_policy(image_ref: &str) -> &'static str {
    match image::parse(image_ref) {
        Ok(r) if r.tag == Some("latest") => "Always",
        Ok(r) if r.tag.is_none() && r.digest.is_none() => "Always",
        _ => "IfNotPresent",
    }
}

/// A pull policy filled in by defaulting: which site, and the value given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Defaulted {
    pub kind: SiteKind,
    pub index: usize,
    pub value: &'static str,
}

/// Fills in the unset pull policies of a pod or pod template (`{metadata, spec}`) in
/// place, as the API server would, and says which it filled. An empty string counts as
/// unset, as in Go.
pub(crate) fn apply(pod: &mut Value) -> Vec<Defaulted> {
    let mut out = Vec::new();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return out;
    };
    for kind in SiteKind::ALL {
        let Some(Value::Array(items)) = spec.get_mut(kind.list()) else {
            continue;
        };
        for (index, item) in items.iter_mut().enumerate() {
            // Image volumes hold the reference and policy one level down.
            let (target, image_key, policy_key) = match kind {
                SiteKind::ImageVolume => match item.get_mut("image") {
                    Some(v) => (v, "reference", "pullPolicy"),
                    None => continue,
                },
                _ => (item, "image", "imagePullPolicy"),
            };
            let Some(obj) = target.as_object_mut() else {
                continue;
            };
            let unset = match obj.get(policy_key) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if !unset {
                continue;
            }
            let image_ref = obj.get(image_key).and_then(Value::as_str).unwrap_or("");
            let value = default_policy(image_ref);
            obj.insert(policy_key.into(), Value::String(value.into()));
            out.push(Defaulted { kind, index, value });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_parse_image_name() {
        for (img, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("docker.io/library/nginx:latest", "Always"),
            ("localhost:5000/app", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("nginx:Latest", "IfNotPresent"),
            (
                "nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "IfNotPresent",
            ),
            (
                "nginx:latest@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "Always",
            ),
            ("Not A Reference", "IfNotPresent"),
        ] {
            assert_eq!(default_policy(img), want, "{img}");
        }
    }

    #[test]
    fn fills_only_unset_policies_in_every_site_kind() {
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "i", "image": "busybox:1"}],
            "containers": [
                {"name": "a", "image": "nginx"},
                {"name": "b", "image": "nginx", "imagePullPolicy": "Never"},
                {"name": "c", "image": "nginx:1", "imagePullPolicy": ""}],
            "ephemeralContainers": [{"name": "e", "image": "busybox"}],
            "volumes": [{"name": "cm", "configMap": {}}, {"name": "v", "image": {"reference": "x.io/v:latest"}}]}});
        let d = apply(&mut pod);
        assert_eq!(d.len(), 5);
        assert_eq!(
            pod["spec"]["initContainers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][2]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            pod["spec"]["ephemeralContainers"][0]["imagePullPolicy"],
            "Always"
        );
        assert_eq!(pod["spec"]["volumes"][1]["image"]["pullPolicy"], "Always");
        assert!(pod["spec"]["volumes"][0].get("image").is_none());
    }
}
