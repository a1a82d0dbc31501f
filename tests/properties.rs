//! Property tests over the pure core: the parser never panics and round-trips, the indexed
//! matcher agrees with a linear scan, and for any generated pod the patch applies, decodes
//! as a Pod, only appends secrets, and is idempotent.

use proptest::prelude::*;
use pullsecret_injector::admission::{self, Endpoint, NamespaceFacts};
use pullsecret_injector::config::Config;
use pullsecret_injector::image;
use pullsecret_injector::matcher::{Matcher, Pattern};
use serde_json::{Value, json};

/// `:port` or nothing; `:5000` often, so that images and patterns share ports.
fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(":5000".to_string()),
        "(:[0-9]{2,5})?",
    ]
}

/// Bracketed IPv6 hosts as the reference grammar has them: hex digits and ':' (loose forms
/// such as `[1::2::3]` included), any case. At least one ':', because without one the first
/// component is no registry host (`[cafe]/x` is a Docker Hub path, and invalid).
fn ipv6_host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[::1]".to_string()),
        Just("[fd00::1]".to_string()),
        Just("[FD00::1]".to_string()),
        "\\[[0-9a-fA-F]{0,4}:[0-9a-fA-F:]{0,10}\\]",
    ]
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("docker.io".to_string()),
        Just("ghcr.io".to_string()),
        Just("localhost:5000".to_string()),
        Just("[::1]:5000".to_string()),
        (ipv6_host(), port()).prop_map(|(h, p)| h + &p),
        "[a-z][a-z0-9-]{0,6}[a-z0-9]\\.(io|com|example\\.com)(:[0-9]{2,5})?",
    ]
}

/// Pattern hosts: everything `domain()` yields plus globs, alone or with a port, so that
/// single-label globs (`*`, `*:5000`) meet bracketed IPv6 hosts.
fn pattern_host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("*.io".to_string()),
        Just("*.example.com".to_string()),
        (
            prop_oneof![
                Just("*"),
                Just("*.*"),
                Just("*.io"),
                Just("reg*.io"),
                Just("*.*.example.com")
            ],
            port()
        )
            .prop_map(|(h, p)| format!("{h}{p}")),
        "[a-z*]{1,3}(\\.[a-z*]{1,3}){0,2}(:5000)?",
        domain(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,3})?", 1..4).prop_map(|v| v.join("/"))
}

fn reference() -> impl Strategy<Value = String> {
    (
        domain(),
        path(),
        prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}"),
        prop::option::of("[0-9a-f]{64}"),
    )
        .prop_map(|(d, p, t, h)| {
            let mut s = format!("{d}/{p}");
            if let Some(t) = t {
                s.push(':');
                s.push_str(&t);
            }
            if let Some(h) = h {
                s.push_str("@sha256:");
                s.push_str(&h);
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_never_panics(s in any::<String>()) {
        let _ = image::parse(&s);
    }

    #[test]
    fn parser_never_panics_on_reference_like_text(s in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,40}") {
        let _ = image::parse(&s);
    }

    #[test]
    fn valid_references_parse_and_round_trip(s in reference()) {
        let r = image::parse(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
        let text = r.to_string();
        let again = image::parse(&text).unwrap();
        prop_assert_eq!(&r, &again);
        prop_assert!(s.starts_with(r.domain) || r.domain == "docker.io");
    }

    #[test]
    fn index_agrees_with_linear_scan(
        patterns in prop::collection::vec(
            (pattern_host(), prop::option::of(path())),
            1..30),
        images in prop::collection::vec(reference(), 1..10),
    ) {
        let mut m = Matcher::new();
        let mut compiled = Vec::new();
        for (i, (host, p)) in patterns.iter().enumerate() {
            let text = match p { Some(p) if host != "*" => format!("{host}/{p}"), _ => host.clone() };
            let Ok(pat) = Pattern::parse(&text) else { continue };
            compiled.push((i, pat.clone()));
            m.insert(pat, i);
        }
        for s in &images {
            let img = image::parse(s).unwrap();
            let linear: Vec<usize> = compiled.iter().filter(|(_, p)| p.matches(&img)).map(|(i, _)| *i).collect();
            prop_assert_eq!(m.matches(&img), linear, "image {}", s);
        }
    }
}

const CONFIG: &str = r#"
registries:
  - {name: a, match: [ghcr.io/acme], secret: ghcr-acme, alwaysPull: true}
  - {name: b, match: ["*.example.com"], secret: example}
  - {name: c, match: [docker.io/library], secret: hub}
  - {name: d, match: ["localhost:5000"], secret: local}
alwaysPullImages: private
"#;

fn pool_image() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("nginx".to_string()),
        Just("ghcr.io/acme/x:1".to_string()),
        Just("ghcr.io/Bad/x".to_string()),
        Just("reg.example.com/y".to_string()),
        Just("localhost:5000/z".to_string()),
        Just("quay.io/q/r".to_string()),
        Just("".to_string()),
        reference(),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,5}",
        pool_image(),
        prop::option::of(prop_oneof![
            Just("Always"),
            Just("IfNotPresent"),
            Just("Never")
        ]),
    )
        .prop_map(|(n, i, p)| {
            let mut c = json!({"name": n, "image": i});
            if let Some(p) = p {
                c["imagePullPolicy"] = json!(p);
            }
            c
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(container(), 0..6),
        prop::collection::vec(container(), 0..3),
        prop::option::of(prop::collection::vec(prop_oneof![Just("hub"), Just("mine"), Just("example"), Just("")], 0..4)),
        prop::option::of(prop::collection::btree_map("[a-z/~.]{1,12}", "[a-z]{0,5}", 0..3)),
        prop::collection::vec(pool_image(), 0..2),
    )
        .prop_map(|(cs, init, secrets, ann, vols)| {
            let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}});
            if !init.is_empty() {
                p["spec"]["initContainers"] = json!(init);
            }
            if let Some(s) = secrets {
                p["spec"]["imagePullSecrets"] = Value::Array(s.into_iter().map(|n| json!({"name": n})).collect());
            }
            if let Some(a) = ann {
                p["metadata"]["annotations"] = json!(a);
            }
            if !vols.is_empty() {
                p["spec"]["volumes"] = Value::Array(
                    vols.into_iter().enumerate().map(|(i, r)| json!({"name": format!("v{i}"), "image": {"reference": r}})).collect(),
                );
            }
            p
        })
}

fn review(p: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns", "operation": "CREATE", "userInfo": {}, "object": p}
    }))
    .unwrap()
}

fn patched(cfg: &Config, p: &Value) -> (Value, bool) {
    let out = admission::review(
        Endpoint::Mutate,
        &review(p),
        cfg,
        &NamespaceFacts::default(),
    )
    .unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    let mut doc = p.clone();
    let has = out["response"].get("patch").is_some();
    if has {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut doc, &patch).expect("patch applies");
    }
    (doc, has)
}

fn names(p: &Value) -> Vec<String> {
    p["spec"]["imagePullSecrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn patch_applies_appends_only_and_is_idempotent(p in pod()) {
        let cfg = Config::parse(CONFIG, "t").unwrap();
        let (once, _) = patched(&cfg, &p);
        let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(once.clone());
        prop_assert!(typed.is_ok(), "{:?}", typed.err());
        let before = names(&p);
        let after = names(&once);
        prop_assert_eq!(&after[..before.len()], &before[..], "existing entries kept in order");
        let added = &after[before.len()..];
        for (i, n) in added.iter().enumerate() {
            prop_assert!(!before.contains(n) && !added[..i].contains(n), "{} added twice", n);
        }
        let (twice, has) = patched(&cfg, &once);
        prop_assert!(!has, "second pass must not patch");
        prop_assert_eq!(twice, once);
    }
}
