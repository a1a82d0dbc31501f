//! Namespace labels offline, so `selector` scopes are evaluated instead of counting as
//! satisfied: from `--namespace-labels FILE` (a map `namespace: {label: value}`, or
//! Namespace objects) and from Namespace objects among the inputs.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::admission::NamespaceFacts;

/// Label the API server puts on every namespace (`kubernetes.io/metadata.name`, set by
/// `SetDefaults_Namespace` in k8s.io/kubernetes `pkg/apis/core/v1/defaults.go`), so
/// selectors on it work offline as they do in a cluster.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What is known about namespaces' labels. A namespace not listed has unknown labels:
/// its selectors count as satisfied, as in the server without cluster access.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    labels: HashMap<String, BTreeMap<String, String>>,
}

impl Facts {
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub(crate) fn knows(&self, ns: &str) -> bool {
        self.labels.contains_key(ns)
    }

    /// The facts the decision takes for `ns`.
    pub(crate) fn for_namespace(&self, ns: &str) -> NamespaceFacts {
        NamespaceFacts {
            labels: self.labels.get(ns).cloned(),
            secrets: None,
        }
    }

    pub(crate) fn insert(&mut self, ns: &str, mut labels: BTreeMap<String, String>) {
        labels.insert(NAME_LABEL.into(), ns.into());
        self.labels.insert(ns.into(), labels);
    }

    /// Reads a `--namespace-labels` file: either `{namespace: {label: value}}`, or
    /// Namespace objects (one or more documents, or a `List`).
    pub(crate) fn read_file(&mut self, name: &str, docs: &[Value]) -> Result<()> {
        let objects = docs.iter().any(|d| d.get("kind").is_some());
        if objects {
            let before = self.labels.len();
            self.add_objects(docs);
            if self.labels.len() == before {
                bail!("{name}: holds no Namespace object");
            }
            return Ok(());
        }
        for doc in docs {
            let Value::Object(map) = doc else {
                bail!("{name}: expected a map of namespace names to label maps");
            };
            for (ns, labels) in map {
                let labels = match labels {
                    Value::Null => BTreeMap::new(),
                    Value::Object(l) => {
                        let mut out = BTreeMap::new();
                        for (k, v) in l {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                // `tier: 1` or `prod: true` in YAML: the label value is the text.
                                Value::Number(n) => n.to_string(),
                                Value::Bool(b) => b.to_string(),
                                _ => bail!("{name}: {ns}.{k}: a label value must be a string"),
                            };
                            out.insert(k.clone(), v);
                        }
                        out
                    }
                    _ => bail!("{name}: {ns}: expected a map of labels"),
                };
                self.insert(ns, labels);
            }
        }
        Ok(())
    }

    /// Adds every Namespace object in `docs` (descending into `List` items).
    pub(crate) fn add_objects(&mut self, docs: &[Value]) {
        for d in docs {
            let kind = d.get("kind").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("List") {
                if let Some(Value::Array(items)) = d.get("items") {
                    self.add_objects(items);
                }
                continue;
            }
            let core = matches!(
                d.get("apiVersion").and_then(Value::as_str),
                Some("v1") | None
            );
            if kind != "Namespace" || !core {
                continue;
            }
            let Some(ns) = d.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let labels = d
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            self.insert(ns, labels);
        }
    }
}
