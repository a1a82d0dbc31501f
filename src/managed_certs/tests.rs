//! The rotation sequence, step by step, on the pure decision.

use super::decide::{self, Policy, Stored, next};
use super::*;
use time::Duration;

fn policy() -> Policy {
    Policy {
        names: vec!["svc.ns.svc".into(), "127.0.0.1".into()],
        ca_validity: Duration::days(30),
        cert_validity: Duration::days(9),
        propagation: Duration::seconds(30),
    }
}

fn hash(s: &Stored) -> String {
    decide::bundle_hash(&s.bundle)
}

#[test]
fn a_fresh_secret_then_nothing_to_do() {
    let p = policy();
    let now = OffsetDateTime::now_utc();
    let s = next(None, None, now, &p).unwrap().unwrap();
    assert_eq!(s.bundle, vec![s.signing.cert_pem.clone()]);
    assert!(s.next.is_none());
    // Not yet published: the only change is recording publication once it is live.
    assert_eq!(next(Some(&s), None, now, &p).unwrap(), None);
    let published = next(Some(&s), Some(&hash(&s)), now, &p).unwrap().unwrap();
    assert_eq!(published.published, Some((hash(&s), now)));
    assert_eq!(published.cert_pem, s.cert_pem);
    assert_eq!(
        next(Some(&published), Some(&hash(&s)), now, &p).unwrap(),
        None
    );
    // The Secret round-trips.
    let back = parse(&render(&published, "n", "ns")).unwrap();
    assert_eq!(back.signing, published.signing);
    assert_eq!(back.bundle, published.bundle);
    assert_eq!(back.cert_pem, published.cert_pem);
    assert_eq!(
        back.published
            .as_ref()
            .map(|(h, at)| (h.clone(), at.unix_timestamp())),
        Some((hash(&s), now.unix_timestamp()))
    );
}

#[test]
fn the_serving_certificate_is_reissued_in_its_last_third_by_the_same_ca() {
    let p = policy();
    let t0 = OffsetDateTime::now_utc();
    let s = next(None, None, t0, &p).unwrap().unwrap();
    assert_eq!(
        next(Some(&s), None, t0 + Duration::days(5), &p).unwrap(),
        None
    );
    let r = next(Some(&s), None, t0 + Duration::days(7), &p)
        .unwrap()
        .unwrap();
    assert_ne!(r.cert_pem, s.cert_pem);
    assert_eq!(r.signing, s.signing);
    assert_eq!(r.bundle, s.bundle, "no caBundle change for a leaf rotation");
}

#[test]
fn ca_rotation_overlaps_old_and_new_and_switches_only_after_propagation() {
    let p = policy();
    let t0 = OffsetDateTime::now_utc();
    let s = next(None, None, t0, &p).unwrap().unwrap();
    // CA in its last third: a successor is trusted, the served certificate unchanged.
    let t1 = t0 + Duration::days(21);
    let a = next(Some(&s), Some(&hash(&s)), t1, &p).unwrap().unwrap();
    let next_ca = a.next.clone().expect("a successor CA");
    assert_eq!(a.signing, s.signing);
    assert_eq!(
        a.bundle,
        vec![s.signing.cert_pem.clone(), next_ca.cert_pem.clone()]
    );
    assert_eq!(a.published, None, "the new bundle is not published yet");
    // The webhook configurations still carry the old bundle: no switch.
    assert_eq!(next(Some(&a), Some(&hash(&s)), t1, &p).unwrap(), None);
    // They carry the new one: publication recorded, still no switch.
    let b = next(Some(&a), Some(&hash(&a)), t1, &p).unwrap().unwrap();
    assert_eq!(b.published, Some((hash(&a), t1)));
    assert!(b.next.is_some());
    assert_eq!(
        next(Some(&b), Some(&hash(&a)), t1 + Duration::seconds(29), &p).unwrap(),
        None
    );
    // After the propagation wait: the new CA signs, the old stays trusted.
    let c = next(Some(&b), Some(&hash(&a)), t1 + Duration::seconds(30), &p)
        .unwrap()
        .unwrap();
    assert_eq!(c.signing, next_ca);
    assert!(c.next.is_none());
    assert_ne!(c.cert_pem, s.cert_pem);
    assert_eq!(c.bundle, a.bundle, "old and new CA both trusted");
    // Once the old CA expires it leaves the bundle.
    let d = next(Some(&c), Some(&hash(&c)), t0 + Duration::days(31), &p)
        .unwrap()
        .unwrap();
    assert_eq!(d.bundle, vec![next_ca.cert_pem.clone()]);
}

#[test]
fn a_certificate_missing_a_name_or_from_another_ca_is_reissued() {
    let p = policy();
    let t0 = OffsetDateTime::now_utc();
    let s = next(None, None, t0, &p).unwrap().unwrap();
    let more = Policy {
        names: vec![
            "svc.ns.svc".into(),
            "127.0.0.1".into(),
            "other.ns.svc".into(),
        ],
        ..policy()
    };
    let r = next(Some(&s), None, t0, &more).unwrap().unwrap();
    assert_ne!(r.cert_pem, s.cert_pem);
    let other = next(None, None, t0, &p).unwrap().unwrap();
    let mixed = Stored {
        cert_pem: other.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
        ..s.clone()
    };
    let fixed = next(Some(&mixed), None, t0, &p).unwrap().unwrap();
    assert_ne!(fixed.cert_pem, other.cert_pem);
    assert_eq!(fixed.signing, s.signing);
}

#[test]
fn bundles_split_and_hash_stably() {
    let p = policy();
    let s = next(None, None, OffsetDateTime::now_utc(), &p)
        .unwrap()
        .unwrap();
    let t = next(None, None, OffsetDateTime::now_utc(), &p)
        .unwrap()
        .unwrap();
    let two = vec![s.signing.cert_pem.clone(), t.signing.cert_pem.clone()];
    let text = decide::bundle_text(&two);
    assert_eq!(split_pem(&text), two);
    assert_eq!(
        decide::bundle_hash(&split_pem(&text)),
        decide::bundle_hash(&two)
    );
    assert!(split_pem("garbage\n").is_empty());
}
