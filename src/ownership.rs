//! How this tool marks what it owns, shared by the secret sync and the self-managed
//! certificates: only objects carrying the label are ever updated or deleted, and every
//! write names the same field manager.

use std::collections::BTreeMap;

use kube::api::{ObjectMeta, PostParams};

pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub(crate) const MANAGED_BY_VALUE: &str = "pullsecret-injector";
/// Field manager of our writes, and the Event reporter's name.
pub(crate) const FIELD_MANAGER: &str = "pullsecret-injector";

/// The labels of an object we create.
pub(crate) fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into())])
}

/// Whether the object carries our label.
pub(crate) fn is_ours(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// Create and replace parameters naming our field manager.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}
