//! Any bytes as an AdmissionReview, through both endpoints with a config that exercises
//! injection, pull-policy forcing and every policy rule. Never a panic; every patch
//! `/mutate` returns applies to the object it was computed for, and is idempotent:
//! reviewing the patched object again changes nothing more.

#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pullsecret_injector::admission::{self, Endpoint, NamespaceFacts};
use pullsecret_injector::config::Config;
use serde_json::Value;

const CONFIG: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com", "demo-tcr.tencentcloudcr.com:5000/team"]
    secret: tcr-pull
    alwaysPull: true
  - name: hub
    match: [docker.io/library]
    secret: hub-pull
  - name: local
    match: ["localhost:5000", "[::1]:5000"]
    secret: local-pull
    namespaces: {include: ["team-*"]}
namespaces:
  exclude: [kube-system]
alwaysPullImages: private
policy:
  mode: enforce
  allow: ["*.tencentcloudcr.com", docker.io/library, "localhost:5000"]
  deny: [docker.io/library/evil]
  requireAlwaysPull: private
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(CONFIG, "fuzz.yaml").expect("the fuzz config is valid"))
}

/// The decoded JSON patch of an answer, if it carries one.
fn patch_of(answer: &[u8]) -> Option<json_patch::Patch> {
    let v: Value = serde_json::from_slice(answer).expect("our answers are JSON");
    let b64 = v["response"]["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("our patches are base64");
    Some(serde_json::from_slice(&bytes).expect("our patches are RFC 6902 JSON"))
}

fuzz_target!(|data: &[u8]| {
    let cfg = config();
    let facts = NamespaceFacts::default();
    let _ = admission::review(Endpoint::Validate, data, cfg, &facts);
    let Ok(answer) = admission::review(Endpoint::Mutate, data, cfg, &facts) else {
        return;
    };
    let Some(patch) = patch_of(&answer) else {
        return;
    };
    // The object the patch was computed for.
    // Our reader skips the fields the decision never reads without validating them
    // (invalid UTF-8 in `userInfo`, say); a full `Value` parse refuses such bytes, and
    // then there is no object to apply the patch to here.
    let Ok(mut review) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut object = review["request"]["object"].take();
    json_patch::patch(&mut object, &patch).expect("our patch applies to its object");

    // Idempotent: the patched object needs nothing more (any second patch is a no-op).
    review["request"]["object"] = object.clone();
    let again = serde_json::to_vec(&review).unwrap();
    let answer = admission::review(Endpoint::Mutate, &again, cfg, &facts)
        .expect("the patched review is still a valid review");
    if let Some(second) = patch_of(&answer) {
        let mut twice = object.clone();
        json_patch::patch(&mut twice, &second).expect("the second patch applies");
        assert_eq!(twice, object, "a second review changed the object again");
    }
});
