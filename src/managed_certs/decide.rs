//! The pure half of self-managed certificates: given what the Secret holds and what the
//! webhook configurations carry, what the Secret should hold next.
//!
//! The rules, in order:
//! 1. Nothing stored: a new CA (`ca_validity`) and a serving certificate it signs.
//! 2. The signing CA has less than a third of its life left and no successor: a new CA
//!    is added to the trust bundle as the *next* CA. The serving certificate is not
//!    touched yet, so every API server keeps trusting what every replica serves.
//! 3. A next CA exists, every webhook configuration carries the bundle with it, and that
//!    was confirmed at least `propagation` ago: the next CA becomes the signing CA and
//!    the serving certificate is re-issued by it. The old CA stays in the bundle until it
//!    expires, so replicas still serving the old certificate keep working.
//! 4. The serving certificate has less than a third of its life left, was not signed by
//!    the signing CA, or lacks a wanted name: it is re-issued by the signing CA.
//! 5. Expired CAs leave the bundle.
//!
//! The overlap (old and new CA both trusted) is what makes rotation invisible: no
//! handshake ever meets a certificate from a CA its API server does not trust yet.

use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::certs;

/// One CA: its certificate, and its key when we may sign with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ca {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// What the Secret holds, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Signs serving certificates.
    pub(crate) signing: Ca,
    /// The successor, already trusted, not yet signing.
    pub(crate) next: Option<Ca>,
    /// Every trusted CA certificate (PEM), the signing and next ones included: what the
    /// webhook configurations' `caBundle` must be.
    pub(crate) bundle: Vec<String>,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    /// Hash of the bundle every webhook configuration was last confirmed to carry, and
    /// when.
    pub(crate) published: Option<(String, OffsetDateTime)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) names: Vec<String>,
    pub(crate) ca_validity: Duration,
    pub(crate) cert_validity: Duration,
    /// How long after the bundle was seen on every webhook configuration before a new CA
    /// may sign: API servers pick up configuration changes asynchronously.
    pub(crate) propagation: Duration,
}

fn der(pem: &str) -> Result<rustls_pki_types::CertificateDer<'static>> {
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .context("reading a PEM certificate")
}

/// Validity period of a PEM certificate.
pub(crate) fn validity(pem: &str) -> Result<(OffsetDateTime, OffsetDateTime)> {
    let der = der(pem)?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).context("parsing a certificate")?;
    let v = c.validity();
    Ok((v.not_before.to_datetime(), v.not_after.to_datetime()))
}

/// The DNS names and IP addresses a PEM certificate is for.
fn names_of(pem: &str) -> Result<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let der = der(pem)?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).context("parsing a certificate")?;
    let Some(san) = c
        .subject_alternative_name()
        .context("reading subjectAltName")?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// Whether `cert_pem` was signed by `ca`'s key.
fn signed_by(cert_pem: &str, ca: &Ca) -> bool {
    let Ok(der) = der(cert_pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok(ca_der) = self::der(&ca.cert_pem) else {
        return false;
    };
    let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(&ca_der) else {
        return false;
    };
    cert.verify_signature(Some(ca_cert.public_key())).is_ok()
}

/// Hash of a bundle, to tell which one was published.
pub(crate) fn bundle_hash(bundle: &[String]) -> String {
    let mut h = Sha256::new();
    for pem in bundle {
        h.update(pem.trim().as_bytes());
        h.update([0u8]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `caBundle` text for a bundle.
pub(crate) fn bundle_text(bundle: &[String]) -> String {
    bundle
        .iter()
        .map(|p| format!("{}\n", p.trim()))
        .collect::<String>()
}

fn new_ca(policy: &Policy, now: OffsetDateTime) -> Result<Ca> {
    let (cert_pem, key_pem) = certs::generate_ca(now, policy.ca_validity)?;
    Ok(Ca { cert_pem, key_pem })
}

fn issue(ca: &Ca, policy: &Policy, now: OffsetDateTime) -> Result<(String, String)> {
    certs::issue_serving(
        &ca.cert_pem,
        &ca.key_pem,
        &policy.names,
        now,
        policy.cert_validity,
    )
}

fn remaining_fraction(pem: &str, now: OffsetDateTime) -> Result<f64> {
    let (from, to) = validity(pem)?;
    let life = (to - from).as_seconds_f64().max(1.0);
    Ok(((to - now).as_seconds_f64() / life).max(0.0))
}

/// What the Secret should hold next; `None` when it is right as it is.
/// `live_bundle_hash` is the hash of the bundle every webhook configuration carries now
/// (`None` when they differ or one is missing).
pub(crate) fn next(
    stored: Option<&Stored>,
    live_bundle_hash: Option<&str>,
    now: OffsetDateTime,
    policy: &Policy,
) -> Result<Option<Stored>> {
    let Some(s) = stored else {
        let ca = new_ca(policy, now)?;
        let (cert_pem, key_pem) = issue(&ca, policy, now)?;
        return Ok(Some(Stored {
            bundle: vec![ca.cert_pem.clone()],
            signing: ca,
            next: None,
            cert_pem,
            key_pem,
            published: None,
        }));
    };
    let mut n = s.clone();
    // 5: expired CAs leave (never the signing or next one).
    n.bundle.retain(|pem| {
        pem == &n.signing.cert_pem
            || n.next.as_ref().is_some_and(|c| &c.cert_pem == pem)
            || validity(pem).is_ok_and(|(_, to)| to > now)
    });
    for ca in std::iter::once(&n.signing).chain(n.next.as_ref()) {
        if !n.bundle.contains(&ca.cert_pem) {
            n.bundle.push(ca.cert_pem.clone());
        }
    }
    let hash = bundle_hash(&n.bundle);
    // Publication is only valid for the bundle it was made for.
    if n.published.as_ref().is_some_and(|(h, _)| h != &hash) {
        n.published = None;
    }
    if n.published.is_none() && live_bundle_hash == Some(hash.as_str()) {
        n.published = Some((hash.clone(), now));
    }
    // 3: switch to the next CA once its bundle has had time to propagate.
    if n.next.is_some()
        && live_bundle_hash == Some(hash.as_str())
        && n.published
            .as_ref()
            .is_some_and(|(_, at)| now - *at >= policy.propagation)
    {
        n.signing = n.next.take().expect("checked");
        let (cert_pem, key_pem) = issue(&n.signing, policy, now)?;
        n.cert_pem = cert_pem;
        n.key_pem = key_pem;
    }
    // 2: start a successor when the signing CA is in its last third.
    if n.next.is_none() && remaining_fraction(&n.signing.cert_pem, now)? < 1.0 / 3.0 {
        let ca = new_ca(policy, now)?;
        n.bundle.push(ca.cert_pem.clone());
        n.next = Some(ca);
        n.published = None;
    }
    // 4: the serving certificate.
    let reissue = remaining_fraction(&n.cert_pem, now).map_or(true, |f| f < 1.0 / 3.0)
        || !signed_by(&n.cert_pem, &n.signing)
        || names_of(&n.cert_pem).map_or(true, |have| {
            policy.names.iter().any(|want| !have.contains(want))
        });
    if reissue {
        let (cert_pem, key_pem) = issue(&n.signing, policy, now)?;
        n.cert_pem = cert_pem;
        n.key_pem = key_pem;
    }
    Ok((n != *s).then_some(n))
}
