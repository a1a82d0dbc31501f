//! Checking a source Secret before it is copied anywhere.
//!
//! A broken pull secret is worse than none: the kubelet builds one keyring from all of a
//! pod's pull secrets, and one undecodable `auth` fails it for every container (reference
//! §8.1). So an invalid source is reported and never copied; existing copies are left as
//! they are (stale credentials beat no credentials while someone fixes the source).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::image::split_host_port;
use crate::matcher::{Pattern, glob};

pub(crate) const TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub(crate) const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";

/// A source that passed validation: what a copy must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidSource {
    pub(crate) type_: String,
    pub(crate) data: BTreeMap<String, ByteString>,
    /// [`content_hash`] of `type_` and `data`.
    pub(crate) hash: String,
    /// The `auths` keys (or top-level keys for `dockercfg`), as written.
    pub(crate) auth_keys: Vec<String>,
}

/// Hash of a secret's type and data. Stored on copies instead of the source's
/// resourceVersion so every replica computes the same value and a copy edited by hand is
/// detected (its own content no longer hashes to the annotation's value).
pub(crate) fn content_hash(type_: &str, data: &BTreeMap<String, ByteString>) -> String {
    let mut h = Sha256::new();
    h.update(type_.as_bytes());
    h.update([0u8]);
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a source secret cannot be copied: what the kubelet would make of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidSource {
    #[error("type is {0:?}; the kubelet only reads {TYPE_DOCKERCONFIGJSON} or {TYPE_DOCKERCFG}")]
    WrongType(String),
    #[error("key {0} is missing or empty")]
    MissingKey(&'static str),
    #[error("{key} is not JSON: {reason}")]
    NotJson { key: &'static str, reason: String },
    #[error("{0}: \"auths\" must be an object")]
    AuthsNotObject(&'static str),
    #[error("{0} has no \"auths\" object, so it yields no credentials")]
    NoAuths(&'static str),
    #[error(
        "{0} uses the config.json layout ({{\"auths\": …}}); a dockercfg secret needs \
         the registry map at the top level (or use type {TYPE_DOCKERCONFIGJSON})"
    )]
    ConfigJsonLayout(&'static str),
    #[error("{0} must be a JSON object")]
    NotObject(&'static str),
    #[error("{0} names no registries")]
    NoRegistries(&'static str),
    #[error("{key}: entry {server:?}: {why}")]
    Entry {
        key: &'static str,
        server: String,
        why: BadEntry,
    },
}

/// What is wrong with one registry entry of a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadEntry {
    #[error("must be an object")]
    NotObject,
    #[error("{0} must be a string")]
    NotString(&'static str),
    #[error("auth is not base64 ({0}); the kubelet would fail every pull of the pod")]
    NotBase64(String),
    #[error("auth does not decode to user:password")]
    NoColon,
    #[error("has neither auth nor username/password")]
    NoCredentials,
}

/// Checks type, key, JSON layout and every entry's `auth`, the way the kubelet would read
/// them, and returns what to copy.
pub(crate) fn validate(secret: &Secret) -> Result<ValidSource, InvalidSource> {
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    let key = match type_ {
        TYPE_DOCKERCONFIGJSON => ".dockerconfigjson",
        TYPE_DOCKERCFG => ".dockercfg",
        other => return Err(InvalidSource::WrongType(other.to_string())),
    };
    let mut data = secret.data.clone().unwrap_or_default();
    // stringData is write-only on the server, but a Secret built in memory may use it.
    if let Some(sd) = &secret.string_data {
        for (k, v) in sd {
            data.insert(k.clone(), ByteString(v.clone().into_bytes()));
        }
    }
    let raw = match data.get(key) {
        Some(v) if !v.0.is_empty() => &v.0,
        _ => return Err(InvalidSource::MissingKey(key)),
    };
    let json: Value = serde_json::from_slice(raw).map_err(|e| InvalidSource::NotJson {
        key,
        reason: e.to_string(),
    })?;
    let entries = match (type_, &json) {
        (TYPE_DOCKERCONFIGJSON, Value::Object(o)) => match o.get("auths") {
            Some(Value::Object(a)) => a,
            Some(_) => return Err(InvalidSource::AuthsNotObject(key)),
            None => return Err(InvalidSource::NoAuths(key)),
        },
        (_, Value::Object(o)) => {
            if o.contains_key("auths") {
                return Err(InvalidSource::ConfigJsonLayout(key));
            }
            o
        }
        _ => return Err(InvalidSource::NotObject(key)),
    };
    if entries.is_empty() {
        return Err(InvalidSource::NoRegistries(key));
    }
    for (server, entry) in entries {
        check_entry(entry).map_err(|why| InvalidSource::Entry {
            key,
            server: server.clone(),
            why,
        })?;
    }
    let hash = content_hash(type_, &data);
    Ok(ValidSource {
        type_: type_.to_string(),
        data,
        hash,
        auth_keys: entries.keys().cloned().collect(),
    })
}

fn check_entry(entry: &Value) -> Result<(), BadEntry> {
    let Value::Object(o) = entry else {
        return Err(BadEntry::NotObject);
    };
    for f in ["username", "password", "email", "auth"] {
        if let Some(v) = o.get(f)
            && !v.is_string()
            && !v.is_null()
        {
            return Err(BadEntry::NotString(f));
        }
    }
    match o.get("auth").and_then(Value::as_str) {
        Some(a) if !a.is_empty() => {
            let dec = STANDARD_PAD_INDIFFERENT
                .decode(a)
                .map_err(|e| BadEntry::NotBase64(e.to_string()))?;
            if !dec.contains(&b':') {
                return Err(BadEntry::NoColon);
            }
        }
        _ => {
            let has = |f: &str| {
                o.get(f)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            };
            if !has("username") && !has("password") {
                return Err(BadEntry::NoCredentials);
            }
        }
    }
    Ok(())
}

/// An `auths` key as the kubelet indexes it (reference §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthKey {
    /// Host labels, as written (the kubelet compares case-sensitively).
    pub(crate) labels: Vec<String>,
    pub(crate) port: Option<String>,
    /// Raw path prefix without the leading '/', empty for none.
    pub(crate) path: String,
}

/// Strips the scheme and a leading `/v1/` or `/v2/`, then splits host, port and path.
/// `None` when the kubelet would skip the key (no host).
pub(crate) fn parse_auth_key(key: &str) -> Option<AuthKey> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if domain.is_empty() {
        return None;
    }
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") {
        &path[3..]
    } else {
        path
    };
    let path = path.strip_prefix('/').unwrap_or(path);
    let (host, port) = split_host_port(domain);
    let labels = if host.starts_with('[') {
        vec![host.to_string()]
    } else {
        host.split('.').map(str::to_string).collect()
    };
    Some(AuthKey {
        labels,
        port: port.map(str::to_string),
        path: path.to_string(),
    })
}

/// The entry's patterns that no `auths` key covers, so images matched by them would be
/// pulled with a secret that holds no credentials for them.
///
/// Deliberately simple and conservative: a key covers a pattern when ports are equal, the
/// label counts are equal, each key label globs the pattern's label (so `*.x.com` covers
/// `*.x.com` and `a.x.com`, but `a.x.com` does not cover `*.x.com`), and the key's path is
/// a raw prefix of the pattern's path. A key `index.docker.io` (what
/// `https://index.docker.io/v1/` becomes) covers `docker.io` patterns, as the kubelet's Hub
/// fallback does. The pattern `*` is never covered. Reported as a warning, never an error.
pub(crate) fn uncovered_patterns(patterns: &[Pattern], auth_keys: &[String]) -> Vec<String> {
    let keys: Vec<AuthKey> = auth_keys.iter().filter_map(|k| parse_auth_key(k)).collect();
    patterns
        .iter()
        .filter(|p| !keys.iter().any(|k| covers(k, p.as_str())))
        .map(|p| p.as_str().to_string())
        .collect()
}

fn covers(key: &AuthKey, pattern: &str) -> bool {
    if pattern == "*" {
        return false;
    }
    let (domain, path) = match pattern.split_once('/') {
        Some((d, p)) => (d, p.trim_end_matches('/')),
        None => (pattern, ""),
    };
    let (host, port) = split_host_port(domain);
    if key.port.as_deref() != port {
        return false;
    }
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = if host.starts_with('[') {
        vec![host.as_str()]
    } else {
        host.split('.').collect()
    };
    let key_labels: Vec<&str> = if key.labels == ["index", "docker", "io"] && key.path.is_empty() {
        vec!["docker", "io"]
    } else {
        key.labels.iter().map(String::as_str).collect()
    };
    let hub = |l: &[&str]| l == ["docker", "io"] || l == ["index", "docker", "io"];
    let labels_ok = if hub(&labels) && hub(&key_labels) {
        true
    } else {
        key_labels.len() == labels.len() && key_labels.iter().zip(&labels).all(|(k, l)| glob(k, l))
    };
    labels_ok && format!("{path}/").starts_with(&key.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(type_: &str, key: &str, json: &str) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(json.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    fn pats(p: &[&str]) -> Vec<Pattern> {
        p.iter().map(|s| Pattern::parse(s).unwrap()).collect()
    }

    #[test]
    fn valid_dockerconfigjson_and_dockercfg() {
        let s = secret(
            TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            r#"{"auths":{"reg.example.com":{"auth":"cm9ib3Q6czNjcjN0"},"https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#,
        );
        let v = validate(&s).unwrap();
        assert_eq!(v.type_, TYPE_DOCKERCONFIGJSON);
        assert_eq!(v.auth_keys.len(), 2);
        assert_eq!(
            v.hash,
            content_hash(TYPE_DOCKERCONFIGJSON, s.data.as_ref().unwrap())
        );
        let s = secret(
            TYPE_DOCKERCFG,
            ".dockercfg",
            r#"{"reg.example.com":{"auth":"cm9ib3Q6czNjcjN0"}}"#,
        );
        assert_eq!(validate(&s).unwrap().auth_keys, vec!["reg.example.com"]);
        // unpadded base64 is accepted, as the kubelet does
        let s = secret(TYPE_DOCKERCFG, ".dockercfg", r#"{"r.io":{"auth":"dTpw"}}"#);
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn invalid_sources_are_explained() {
        let cases = [
            (
                "Opaque",
                ".dockerconfigjson",
                r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#,
                "type is \"Opaque\"",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockercfg",
                r#"{"auths":{}}"#,
                "missing or empty",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                "{not json",
                "not JSON",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"r.io":{"auth":"dTpw"}}"#,
                "no \"auths\"",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"auths":[]}"#,
                "must be an object",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"auths":{}}"#,
                "names no registries",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"auths":{"r.io":{"auth":"!!"}}}"#,
                "not base64",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"auths":{"r.io":{"auth":"dXNlcg=="}}}"#,
                "user:password",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"auths":{"r.io":{}}}"#,
                "neither auth",
            ),
            (
                TYPE_DOCKERCONFIGJSON,
                ".dockerconfigjson",
                r#"{"auths":{"r.io":"x"}}"#,
                "must be an object",
            ),
            (
                TYPE_DOCKERCFG,
                ".dockercfg",
                r#"{"auths":{"r.io":{"auth":"dTpw"}}}"#,
                "config.json layout",
            ),
            (
                TYPE_DOCKERCFG,
                ".dockercfg",
                r#"[1]"#,
                "must be a JSON object",
            ),
        ];
        for (t, k, j, want) in cases {
            let e = validate(&secret(t, k, j)).unwrap_err().to_string();
            assert!(e.contains(want), "{t} {k} {j}: {e}");
        }
    }

    #[test]
    fn hash_depends_on_type_and_every_byte() {
        let d = |v: &str| BTreeMap::from([("k".to_string(), ByteString(v.as_bytes().to_vec()))]);
        assert_eq!(content_hash("a", &d("x")), content_hash("a", &d("x")));
        assert_ne!(content_hash("a", &d("x")), content_hash("b", &d("x")));
        assert_ne!(content_hash("a", &d("x")), content_hash("a", &d("y")));
        assert_eq!(content_hash("a", &d("x")).len(), 64);
    }

    #[test]
    fn auth_keys_parse_like_the_kubelet() {
        let k = parse_auth_key("https://index.docker.io/v1/").unwrap();
        assert_eq!(
            (k.labels.join("."), k.port, k.path),
            ("index.docker.io".into(), None, "".into())
        );
        let k = parse_auth_key("registry.example.com/v2/team").unwrap();
        assert_eq!(k.path, "team");
        let k = parse_auth_key("https://index.docker.io/v1").unwrap();
        assert_eq!(k.path, "v1");
        let k = parse_auth_key("http://reg.io:5000/").unwrap();
        assert_eq!((k.port.as_deref(), k.path.as_str()), (Some("5000"), ""));
        assert!(parse_auth_key("https:///x").is_none());
    }

    #[test]
    fn coverage_of_patterns_by_keys() {
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let unc = |p: &[&str], k: &[&str]| uncovered_patterns(&pats(p), &keys(k));
        assert!(unc(&["*.x.com"], &["*.x.com"]).is_empty());
        assert!(unc(&["a.x.com"], &["*.x.com"]).is_empty());
        assert!(unc(&["a.x.com"], &["https://a.x.com/v2/"]).is_empty());
        assert_eq!(unc(&["*.x.com"], &["a.x.com"]), vec!["*.x.com"]);
        assert_eq!(unc(&["x.com"], &["*.x.com"]), vec!["x.com"]);
        assert_eq!(unc(&["reg.io:5000"], &["reg.io"]), vec!["reg.io:5000"]);
        assert!(unc(&["reg.io:5000/team"], &["reg.io:5000"]).is_empty());
        assert!(unc(&["reg.io/team/app"], &["reg.io/team"]).is_empty());
        assert_eq!(
            unc(&["reg.io/other"], &["reg.io/team"]),
            vec!["reg.io/other"]
        );
        assert_eq!(unc(&["reg.io"], &["reg.io/team"]), vec!["reg.io"]);
        assert!(unc(&["docker.io/acme"], &["https://index.docker.io/v1/"]).is_empty());
        assert!(unc(&["docker.io"], &["docker.io"]).is_empty());
        assert_eq!(unc(&["*"], &["*"]), vec!["*"]);
        assert_eq!(unc(&["a.io", "b.io"], &["a.io"]), vec!["b.io"]);
    }
}
