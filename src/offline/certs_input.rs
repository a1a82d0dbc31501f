//! `certs` input checks: a certificate for a name no client can ask for, or one that is
//! already expired, is a mistake to report before anything is written.

use anyhow::{Result, bail};

use crate::config::check_dns_label;

/// A SAN the certificate may carry: an IP address, or a DNS name (RFC 1123 labels of
/// letters, digits and `-`, at most 253 characters; a leading `*.` wildcard allowed).
pub(crate) fn check_san(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("{name:?} is not a DNS name or IP address: {why}"));
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1-253 characters");
    }
    let body = name.strip_prefix("*.").unwrap_or(name);
    for label in body.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return bad("each dot-separated label must be 1-63 characters");
        }
        if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
            return bad(
                "labels hold only letters, digits and '-' ('*' only as a whole first label)",
            );
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return bad("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

/// Checks `certs`' flags: the Service and namespace become DNS labels of the certificate.
pub(crate) fn check(service: &str, namespace: &str, dns: &[String], days: i64) -> Result<()> {
    if days <= 0 {
        bail!("--days {days}: must be a positive number of days");
    }
    if let Err(why) = check_dns_label(service) {
        bail!(
            "--service: {}",
            why.replace("namespace name", "Service name")
        );
    }
    if let Err(why) = check_dns_label(namespace) {
        bail!("--namespace: {why}");
    }
    for d in dns {
        if let Err(why) = check_san(d) {
            bail!("--dns: {why}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans() {
        for ok in [
            "localhost",
            "a.example.com",
            "*.example.com",
            "127.0.0.1",
            "::1",
            "x-1.io",
        ] {
            assert!(check_san(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a_b.io",
            "-a.io",
            "a..io",
            "a.*.io",
            "https://a.io",
            "a b",
        ] {
            assert!(check_san(bad).is_err(), "{bad}");
        }
    }
}
