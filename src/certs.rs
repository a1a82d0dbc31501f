//! Certificate generation with rcgen, for three users: `serve` without `--tls-cert`
//! (a throw-away CA so `curl --cacert` works), the `certs` sub-command for manual installs,
//! and tests that need a CA, a serving cert and client certs.

use std::net::IpAddr;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// PEM texts of a CA and one certificate it signed.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The names the API server dials for a Service-backed webhook, plus loopback for local use.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ]
}

/// A new CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String], valid_days: i64) -> Result<Bundle> {
    let now = OffsetDateTime::now_utc();
    let ca = ca_params(
        now - Duration::hours(1),
        now + Duration::days(valid_days.max(1) * 2),
    )?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let (cert_pem, key_pem) = sign_leaf(
        &issuer,
        names,
        ExtendedKeyUsagePurpose::ServerAuth,
        None,
        valid_days,
    )?;
    Ok(Bundle {
        ca_pem,
        ca_key_pem: issuer.key().serialize_pem(),
        cert_pem,
        key_pem,
    })
}

/// A CA valid from a little before `now` (clock skew; see `backdate`) until
/// `now + validity`: (certificate, key) PEM.
pub fn generate_ca(now: OffsetDateTime, validity: Duration) -> Result<(String, String)> {
    let ca = ca_params(now - backdate(validity), now + validity)?;
    let key = KeyPair::generate()?;
    let cert = ca.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The parameters of every CA we make.
fn ca_params(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "pullsecret-injector CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    Ok(ca)
}

/// A serving certificate for `names`, valid from an hour before `now` until
/// `now + validity`, signed by the CA given as PEM: (certificate, key) PEM.
pub fn issue_serving(
    ca_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    now: OffsetDateTime,
    validity: Duration,
) -> Result<(String, String)> {
    let key = KeyPair::from_pem(ca_key_pem).context("CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, key).context("CA certificate")?;
    sign_leaf_at(
        &issuer,
        names,
        ExtendedKeyUsagePurpose::ServerAuth,
        None,
        now - backdate(validity),
        now + validity,
    )
}

/// How far before issuance a certificate is valid, for peers whose clock is behind: an
/// hour, or a quarter of a short lifetime.
fn backdate(validity: Duration) -> Duration {
    Duration::hours(1).min(validity / 4)
}

/// Another certificate from an existing CA: a client certificate (`O=organization`,
/// `CN=common_name`) for mTLS, or a rotated serving certificate.
pub fn issue(
    bundle: &Bundle,
    names: &[String],
    client: Option<(&str, Option<&str>)>,
    valid_days: i64,
) -> Result<(String, String)> {
    let key = KeyPair::from_pem(&bundle.ca_key_pem).context("CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&bundle.ca_pem, key).context("CA certificate")?;
    let usage = if client.is_some() {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    };
    sign_leaf(&issuer, names, usage, client, valid_days)
}

fn sign_leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
    subject: Option<(&str, Option<&str>)>,
    valid_days: i64,
) -> Result<(String, String)> {
    let now = OffsetDateTime::now_utc();
    sign_leaf_at(
        issuer,
        names,
        usage,
        subject,
        now - Duration::hours(1),
        now + Duration::days(valid_days.max(1)),
    )
}

fn sign_leaf_at(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
    subject: Option<(&str, Option<&str>)>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String)> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    for n in names {
        p.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .with_context(|| format!("invalid DNS name {n:?}"))?,
            ),
        });
    }
    let cn = subject
        .map(|(cn, _)| cn)
        .or(names.first().map(String::as_str))
        .unwrap_or("pullsecret-injector");
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some((_, Some(org))) = subject {
        p.distinguished_name.push(DnType::OrganizationName, org);
    }
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    p.not_before = not_before;
    p.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}
