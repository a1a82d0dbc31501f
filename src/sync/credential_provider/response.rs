//! The `credentialprovider.kubelet.k8s.io/v1` exec protocol's two messages, as defined in
//! `k8s.io/kubelet` v0.37.2 `pkg/apis/credentialprovider/v1/types.go`:
//!
//! - `CredentialProviderRequest {apiVersion, kind, image, serviceAccountToken?,
//!   serviceAccountAnnotations?}` on the plugin's stdin;
//! - `CredentialProviderResponse {apiVersion, kind, cacheKeyType, cacheDuration?,
//!   auth: {matchImage: {username, password}}}` on its stdout.
//!
//! Checked as the kubelet checks them (`k8s.io/kubernetes` v1.37.2
//! `pkg/credentialprovider/plugin/plugin.go`): the apiVersion must be the one asked in,
//! the kind `CredentialProviderResponse`, and `cacheKeyType` one of `Image`, `Registry`,
//! `Global` (`provide` refuses any other). Beyond that we also require what a copied
//! pull secret needs to be useful: at least one `auth` entry, no entry without
//! credentials, and `auth` keys that cover every `match` pattern of the entry, by the
//! kubelet keyring's own matching (`URLsMatch`: same port, same label count, per-label
//! glob, path prefix; see [`super::super::source::uncovered_patterns`]).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::json;

use crate::duration::DurationError;
use crate::matcher::Pattern;
use crate::sync::source::{self, InvalidSource, TYPE_DOCKERCONFIGJSON, ValidSource};

pub(crate) const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
pub(crate) const REQUEST_KIND: &str = "CredentialProviderRequest";
pub(crate) const RESPONSE_KIND: &str = "CredentialProviderResponse";

/// The request for `image`, as the kubelet encodes it, with a ServiceAccount token for
/// workload-identity plugins (KEP-4412) when configured.
pub(crate) fn request(image: &str, token: Option<&str>) -> Vec<u8> {
    let mut r = json!({
        "apiVersion": API_VERSION,
        "kind": REQUEST_KIND,
        "image": image,
    });
    if let Some(t) = token {
        r["serviceAccountToken"] = json!(t);
    }
    serde_json::to_vec(&r).expect("a JSON object of strings serialises")
}

/// How long the plugin says its answer may be used (`cacheDuration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// No `cacheDuration`: the kubelet falls back to its configured
    /// `defaultCacheDuration`; we refresh on the entry's `maxRefresh`.
    Unspecified,
    /// `cacheDuration: 0s`: the kubelet does not cache the answer at all; we refresh on
    /// the entry's `minRefresh`.
    DoNotCache,
    For(Duration),
}

/// A validated answer: what the copies get, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) source: ValidSource,
    pub(crate) lifetime: Lifetime,
    pub(crate) cache_key_type: String,
}

/// Why an answer is refused. Never quotes the plugin's output: it may hold credentials
/// (the kubelet's `ExecPlugin` does not wrap its decode error for the same reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResponseError {
    #[error("stdout is not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error(
        "stdout is not a CredentialProviderResponse (not an object, or a field of the wrong type)"
    )]
    Shape,
    #[error("apiVersion is {0:?}, expected {API_VERSION:?}")]
    ApiVersion(String),
    #[error("kind is {0:?}, expected {RESPONSE_KIND:?}")]
    Kind(String),
    #[error("cacheKeyType is {0:?}; the kubelet accepts only Image, Registry or Global")]
    CacheKeyType(String),
    #[error("cacheDuration: {0}")]
    CacheDuration(DurationError),
    #[error("auth is empty: no credentials")]
    NoAuth,
    #[error("auth key {0:?} names no registry host")]
    BadKey(String),
    #[error("auth {0:?} has neither username nor password")]
    EmptyCredentials(String),
    #[error(
        "auth {0:?} returns the ServiceAccount token itself as the password; copying it would hand \
         our token to every namespace (the kubelet refuses this too unless caching per token)"
    )]
    EchoesToken(String),
    #[error("auth keys do not cover the match patterns {}", .0.join(", "))]
    Uncovered(Vec<String>),
    #[error("the pull secret built from it is unusable: {0}")]
    Unusable(InvalidSource),
}

impl ResponseError {
    /// For the failure counter's `reason` label.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ResponseError::Uncovered(_) => "partial_auth",
            _ => "malformed",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResponse {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    cache_key_type: Option<String>,
    #[serde(default)]
    cache_duration: Option<String>,
    #[serde(default)]
    auth: Option<BTreeMap<String, RawAuth>>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Parses and checks a plugin's stdout for an entry with `patterns` (and the token the
/// request carried, if any), and builds the `kubernetes.io/dockerconfigjson` the copies
/// will hold.
pub(crate) fn parse(
    stdout: &[u8],
    patterns: &[Pattern],
    token: Option<&str>,
) -> Result<Answer, ResponseError> {
    let value: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|e| ResponseError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
    // An object first: serde would also read a struct from an array of its fields.
    if !value.is_object() {
        return Err(ResponseError::Shape);
    }
    // serde's own message is dropped: it quotes the offending value.
    let raw: RawResponse = serde_json::from_value(value).map_err(|_| ResponseError::Shape)?;
    // Echoed protocol fields are cut short, so a message stays a message.
    let short = |s: String| -> String { s.chars().take(80).collect() };
    let api_version = raw.api_version.unwrap_or_default();
    if api_version != API_VERSION {
        return Err(ResponseError::ApiVersion(short(api_version)));
    }
    let kind = raw.kind.unwrap_or_default();
    if kind != RESPONSE_KIND {
        return Err(ResponseError::Kind(short(kind)));
    }
    let cache_key_type = raw.cache_key_type.unwrap_or_default();
    if !matches!(cache_key_type.as_str(), "Image" | "Registry" | "Global") {
        return Err(ResponseError::CacheKeyType(short(cache_key_type)));
    }
    let lifetime = match raw.cache_duration.as_deref() {
        None => Lifetime::Unspecified,
        Some(d) => match crate::duration::parse(d).map_err(ResponseError::CacheDuration)? {
            Duration::ZERO => Lifetime::DoNotCache,
            d => Lifetime::For(d),
        },
    };
    let auth = raw.auth.unwrap_or_default();
    if auth.is_empty() {
        return Err(ResponseError::NoAuth);
    }
    let mut auths = serde_json::Map::new();
    for (key, a) in &auth {
        if source::parse_auth_key(key).is_none() {
            return Err(ResponseError::BadKey(key.clone()));
        }
        if a.username.is_empty() && a.password.is_empty() {
            return Err(ResponseError::EmptyCredentials(key.clone()));
        }
        if token.is_some_and(|t| !t.is_empty() && a.password == t) {
            return Err(ResponseError::EchoesToken(key.clone()));
        }
        // `auth` as well as username/password: every reader of a dockerconfigjson
        // understands it, and it is what the kubelet prefers when both are present.
        let basic = STANDARD.encode(format!("{}:{}", a.username, a.password));
        auths.insert(
            key.clone(),
            json!({"username": a.username, "password": a.password, "auth": basic}),
        );
    }
    let keys: Vec<String> = auth.keys().cloned().collect();
    let uncovered = source::uncovered_patterns(patterns, &keys);
    if !uncovered.is_empty() {
        return Err(ResponseError::Uncovered(uncovered));
    }
    // A BTreeMap-ordered document: the same credentials always give the same bytes, so
    // the same hash, so an unchanged answer writes nothing.
    let doc = serde_json::to_vec(&json!({ "auths": auths }))
        .expect("a JSON object of strings serialises");
    let secret = Secret {
        type_: Some(TYPE_DOCKERCONFIGJSON.into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_string(),
            ByteString(doc),
        )])),
        ..Default::default()
    };
    let source = source::validate(&secret).map_err(ResponseError::Unusable)?;
    Ok(Answer {
        source,
        lifetime,
        cache_key_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<Pattern> {
        p.iter().map(|s| Pattern::parse(s).unwrap()).collect()
    }

    const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

    fn response(extra: &str) -> String {
        format!(
            r#"{{"apiVersion":"{API_VERSION}","kind":"{RESPONSE_KIND}","cacheKeyType":"Registry",{extra}}}"#
        )
    }

    #[test]
    fn request_is_the_kubelets() {
        let v: serde_json::Value = serde_json::from_slice(&request("r.io/x", None)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest", "image": "r.io/x"})
        );
    }

    #[test]
    fn a_good_answer_becomes_a_dockerconfigjson() {
        let out = response(&format!(
            r#""cacheDuration":"12h0m0s","auth":{{"{ECR}":{{"username":"AWS","password":"tok"}}}}"#
        ));
        let a = parse(out.as_bytes(), &pats(&[ECR]), None).unwrap();
        assert_eq!(a.lifetime, Lifetime::For(Duration::from_secs(12 * 3600)));
        assert_eq!(a.cache_key_type, "Registry");
        assert_eq!(a.source.type_, TYPE_DOCKERCONFIGJSON);
        assert_eq!(a.source.auth_keys, vec![ECR.to_string()]);
        let doc: serde_json::Value =
            serde_json::from_slice(&a.source.data[".dockerconfigjson"].0).unwrap();
        assert_eq!(
            doc,
            json!({"auths": {ECR: {"username": "AWS", "password": "tok", "auth": "QVdTOnRvaw=="}}})
        );
        // the same answer again is byte-for-byte the same secret
        assert_eq!(
            parse(out.as_bytes(), &pats(&[ECR]), None)
                .unwrap()
                .source
                .hash,
            a.source.hash
        );
    }

    #[test]
    fn lifetimes_and_glob_keys() {
        let with = |d: &str| {
            let out = response(&format!(
                r#"{d}"auth":{{"*.dkr.ecr.*.amazonaws.com":{{"username":"AWS","password":"p"}}}}"#
            ));
            parse(out.as_bytes(), &pats(&[ECR]), None).map(|a| a.lifetime)
        };
        assert_eq!(with(""), Ok(Lifetime::Unspecified));
        assert_eq!(with(r#""cacheDuration":"0s","#), Ok(Lifetime::DoNotCache));
        assert_eq!(
            with(r#""cacheDuration":"1.5s","#),
            Ok(Lifetime::For(Duration::from_millis(1500)))
        );
        assert!(matches!(
            with(r#""cacheDuration":"-5s","#),
            Err(ResponseError::CacheDuration(_))
        ));
    }

    #[test]
    fn malformed_answers_are_refused_without_quoting_them() {
        let p = pats(&[ECR]);
        let auth = format!(r#""auth":{{"{ECR}":{{"username":"AWS","password":"s3cret"}}}}"#);
        let cases: Vec<(String, &str)> = vec![
            ("not json s3cret".into(), "not JSON (line 1, column 2)"),
            (r#"["s3cret"]"#.into(), "not a CredentialProviderResponse"),
            (
                r#"{"auth":{"r.io":{"username":["s3cret"]}}}"#.into(),
                "not a CredentialProviderResponse",
            ),
            (
                r#"{"auth":"s3cret"}"#.into(),
                "not a CredentialProviderResponse",
            ),
            (
                format!(
                    r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"{RESPONSE_KIND}","cacheKeyType":"Image",{auth}}}"#
                ),
                "apiVersion is \"credentialprovider.kubelet.k8s.io/v1beta1\"",
            ),
            (
                format!(
                    r#"{{"apiVersion":"{API_VERSION}","kind":"CredentialProviderRequest","cacheKeyType":"Image",{auth}}}"#
                ),
                "kind is \"CredentialProviderRequest\"",
            ),
            (
                format!(r#"{{"apiVersion":"{API_VERSION}","kind":"{RESPONSE_KIND}",{auth}}}"#),
                "cacheKeyType is \"\"",
            ),
            (
                format!(
                    r#"{{"apiVersion":"{API_VERSION}","kind":"{RESPONSE_KIND}","cacheKeyType":"Pod",{auth}}}"#
                ),
                "cacheKeyType is \"Pod\"",
            ),
            (
                response(r#""cacheDuration":"soon","auth":{}"#),
                "cacheDuration",
            ),
            (response(r#""auth":{}"#), "auth is empty"),
            (response(r#""cacheDuration":"1h""#), "auth is empty"),
            (
                response(&format!(r#""auth":{{"{ECR}":{{}}}}"#)),
                "neither username nor password",
            ),
            (
                response(r#""auth":{"https:///x":{"username":"u","password":"s3cret"}}"#),
                "names no registry host",
            ),
        ];
        for (out, want) in cases {
            let e = parse(out.as_bytes(), &p, None).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{out}: {msg}");
            assert!(!msg.contains("s3cret"), "{out}: {msg}");
            assert_eq!(e.kind(), "malformed");
        }
    }

    #[test]
    fn the_token_is_sent_and_never_copied_back() {
        let v: serde_json::Value = serde_json::from_slice(&request("r.io/x", Some("jwt"))).unwrap();
        assert_eq!(v["serviceAccountToken"], "jwt");
        let out = response(&format!(
            r#""auth":{{"{ECR}":{{"username":"AWS","password":"jwt"}}}}"#
        ));
        let e = parse(out.as_bytes(), &pats(&[ECR]), Some("jwt")).unwrap_err();
        assert_eq!(e, ResponseError::EchoesToken(ECR.into()));
        assert!(parse(out.as_bytes(), &pats(&[ECR]), Some("other")).is_ok());
    }

    #[test]
    fn partial_auth_is_refused() {
        let out = response(
            r#""auth":{"123456789012.dkr.ecr.eu-west-1.amazonaws.com":{"username":"AWS","password":"p"}}"#,
        );
        let e = parse(
            out.as_bytes(),
            &pats(&[ECR, "210987654321.dkr.ecr.eu-west-1.amazonaws.com"]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e,
            ResponseError::Uncovered(vec![
                "210987654321.dkr.ecr.eu-west-1.amazonaws.com".to_string()
            ])
        );
        assert_eq!(e.kind(), "partial_auth");
        // a key for a neighbouring path does not cover the whole registry
        let out = response(&format!(
            r#""auth":{{"{ECR}/team":{{"username":"AWS","password":"p"}}}}"#
        ));
        assert!(matches!(
            parse(out.as_bytes(), &pats(&[ECR]), None),
            Err(ResponseError::Uncovered(_))
        ));
    }
}
