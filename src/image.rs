//! Image references parsed the way the kubelet and container runtimes parse them
//! (`distribution/reference` `ParseNormalizedNamed`), so that "which registry does this
//! image come from" has exactly one answer across the webhook, the kubelet and policy.
//!
//! The parser is hand-written rather than regex-based: the grammar is small, the
//! normalisation steps are order-sensitive (single-component names go to Docker Hub
//! before any host detection), and the hot path must not allocate: a parsed reference
//! borrows its parts from the input, and only a Docker Hub short name (`nginx` →
//! `library/nginx`) owns its path.

use std::borrow::Cow;
use std::fmt;

/// A parsed, normalised image reference, borrowing from the text it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Registry host with optional port, case preserved (`docker.io`, `localhost:5000`, `[::1]:5000`).
    pub domain: &'a str,
    /// Repository path below the registry (`library/nginx`).
    pub path: Cow<'a, str>,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
    /// Where the host ends in `domain` (the port, if any, starts after a `:` there): found
    /// once by the parser, since every match asks for host and port.
    host_end: usize,
}

impl ImageRef<'_> {
    /// The normalised name the kubelet uses for credential lookup (no tag, no digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Host part of the domain, without port (brackets kept for IPv6).
    pub fn host(&self) -> &str {
        &self.domain[..self.host_end]
    }

    /// Port of the domain, if one was written. Never defaulted: `ghcr.io` ≠ `ghcr.io:443`.
    pub fn port(&self) -> Option<&str> {
        self.domain.get(self.host_end + 1..)
    }
}

impl fmt::Display for ImageRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Why a reference was rejected; messages follow the wording of `distribution/reference`
/// where one exists, so users can search for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("empty image reference")]
    Empty,
    #[error("image reference has leading or trailing whitespace")]
    Whitespace,
    #[error("cannot specify 64-byte hexadecimal strings as an image reference")]
    HexOnly,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("invalid registry host {0:?}")]
    InvalidDomain(String),
    #[error("invalid repository path component {0:?}")]
    InvalidComponent(String),
    #[error("repository name must not be longer than 255 characters")]
    NameTooLong,
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedDigest(String),
    #[error("registry host {0:?} is ambiguous (upper-case first component)")]
    AmbiguousDomain(String),
}

/// Splits `host[:port]`, understanding bracketed IPv6 hosts.
///
/// A bracketed host ends at its `]`, which must end the domain or be followed by `:`.
/// Anything else (`[::1].evil.com`, `[::1]5000`) is returned whole as the host, so that
/// validation rejects it: dropping the rest would let `[::1].evil.com` pass as `[::1]`.
pub fn split_host_port(domain: &str) -> (&str, Option<&str>) {
    if domain.starts_with('[') {
        if let Some(end) = domain.find(']') {
            let (h, rest) = domain.split_at(end + 1);
            if rest.is_empty() {
                return (h, None);
            }
            if let Some(port) = rest.strip_prefix(':') {
                return (h, Some(port));
            }
        }
        return (domain, None);
    }
    match rsplit_at(domain, b':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    }
}

/// `s.split_once(b as char)` for an ASCII byte, by a plain scan: image references are
/// short, and `str`'s searcher costs more to set up than the scan (profiled per review).
fn split_at(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|c| c == b)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `s.rsplit_once(b as char)` for an ASCII byte.
fn rsplit_at(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = s.bytes().rposition(|c| c == b)?;
    Some((&s[..i], &s[i + 1..]))
}

/// The longest normalised repository path `distribution/reference` accepts.
const NAME_MAX: usize = 255;

/// Parses and normalises an image reference exactly like `ParseNormalizedNamed`.
///
/// Two deliberate differences, both rejecting what upstream accepts:
/// - an upper-case first component (`Myuser/app`) is parsed by current
///   `distribution/reference` as a registry host, but older kubelets parsed it as a Docker
///   Hub name and then failed. Since the answer depends on the node's version, it is
///   reported as ambiguous instead of guessed.
/// - a first component that looks like a host (has a `.` or `:`) but is not a valid one
///   (`my_reg.io/app`) makes upstream fall back to a reference with *no* registry at all,
///   which no registry pattern can sensibly match; it is reported as an invalid host.
pub fn parse(input: &str) -> Result<ImageRef<'_>, ImageError> {
    if input.is_empty() {
        return Err(ImageError::Empty);
    }
    // `input.trim() != input`, without scanning the whole text.
    if input.starts_with(char::is_whitespace) || input.ends_with(char::is_whitespace) {
        return Err(ImageError::Whitespace);
    }
    if is_identifier(input) {
        return Err(ImageError::HexOnly);
    }

    // `splitDockerDomain`: the first '/'-separated component of the whole input decides,
    // before the tag or digest is split off, and a single component is always Docker Hub
    // (so `localhost:5000` is `library/localhost` with tag `5000`).
    let (domain, remainder) = match split_at(input, b'/') {
        None => ("docker.io", input),
        Some((first, rest)) => {
            if first == "localhost" || first.bytes().any(|b| b == b'.' || b == b':') {
                let domain = if first == "index.docker.io" {
                    "docker.io"
                } else {
                    first
                };
                (domain, rest)
            } else if first.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(ImageError::AmbiguousDomain(first.to_string()));
            } else {
                ("docker.io", input)
            }
        }
    };

    // Upstream checks case on everything up to the first ':' before the grammar, so that
    // `ghcr.io/Org/app` says "must be lowercase" rather than "invalid format".
    if remainder
        .bytes()
        .take_while(|&b| b != b':')
        .any(|b| b.is_ascii_uppercase())
    {
        return Err(ImageError::Uppercase);
    }
    let host_end = validate_domain(domain)?;
    let (repo, tag, digest) = parse_remote(remainder)?;

    let path = if domain == "docker.io" && !repo.as_bytes().contains(&b'/') {
        let mut owned = String::with_capacity(LIBRARY.len() + repo.len());
        owned.push_str(LIBRARY);
        owned.push_str(repo);
        Cow::Owned(owned)
    } else {
        Cow::Borrowed(repo)
    };
    // The limit applies to the path `Parse` sees, i.e. after `library/` was added.
    if path.len() > NAME_MAX {
        return Err(ImageError::NameTooLong);
    }
    Ok(ImageRef {
        domain,
        path,
        tag,
        digest,
        host_end,
    })
}

/// The namespace Docker Hub puts one-component names in.
const LIBRARY: &str = "library/";

/// `identifier`: exactly 64 lower-case hex characters, which `ParseNormalizedNamed`
/// refuses so that an image id is never mistaken for a Docker Hub name.
fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `remote-name [":" tag] ["@" digest]`: the part of a reference after its domain, split
/// into its three parts and checked against the grammar. Nearly every image is valid, and
/// [`quick_remote`] reads those in one scan; whatever it does not accept is split and
/// checked part by part here, which also names the part that is wrong.
fn parse_remote(s: &str) -> Result<(&str, Option<&str>, Option<&str>), ImageError> {
    match quick_remote(s) {
        Some(parts) => Ok(parts),
        None => parse_remote_checked(s),
    }
}

/// `parse_remote` of a valid text, left to right in one scan: `None` for any text it does
/// not read through, so it never accepts what [`parse_remote_checked`] refuses, and splits
/// where it does (the first `@` starts the digest, the first `:` before it the tag).
fn quick_remote(s: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let b = s.as_bytes();
    let mut i = component_end(b, 0)?;
    while b.get(i) == Some(&b'/') {
        i = component_end(b, i + 1)?;
    }
    let name = &s[..i];
    let mut tag = None;
    if b.get(i) == Some(&b':') {
        let start = i + 1;
        i = b[start..]
            .iter()
            .position(|&c| c == b'@')
            .map_or(b.len(), |at| start + at);
        let t = &s[start..i];
        validate_tag(t).ok()?;
        tag = Some(t);
    }
    let mut digest = None;
    if b.get(i) == Some(&b'@') {
        let d = &s[i + 1..];
        validate_digest(d).ok()?;
        digest = Some(d);
    } else if i != b.len() {
        return None;
    }
    Some((name, tag, digest))
}

/// `parse_remote`, splitting first and checking each part after.
fn parse_remote_checked(s: &str) -> Result<(&str, Option<&str>, Option<&str>), ImageError> {
    // '@' and ':' occur nowhere else here: not in a remote name, a tag or the digest's
    // algorithm.
    let (name_tag, digest) = match split_at(s, b'@') {
        Some((n, d)) => {
            validate_digest(d)?;
            (n, Some(d))
        }
        None => (s, None),
    };
    let (name, tag) = match split_at(name_tag, b':') {
        Some((n, t)) => {
            validate_tag(t)?;
            (n, Some(t))
        }
        None => (name_tag, None),
    };
    validate_remote_name(name)?;
    Ok((name, tag, digest))
}

/// `domainAndPort`: `host [":" port]` with host a domain name or a bracketed IPv6 literal.
/// Gives where the host ends.
fn validate_domain(domain: &str) -> Result<usize, ImageError> {
    let (host, port) = split_host_port(domain);
    let ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && (is_ipv6_literal(host) || is_domain_name(host));
    if ok {
        Ok(host.len())
    } else {
        Err(ImageError::InvalidDomain(domain.to_string()))
    }
}

/// `ipv6address`: `[` then one or more hex digits and colons, then `]`.
///
/// This is upstream's grammar, and deliberately not `Ipv6Addr` syntax: `[1::2::3]` is
/// accepted like the kubelet accepts it (the pull then fails to connect), while zone ids
/// (`[fe80::1%eth0]`) and embedded IPv4 (`[::ffff:192.0.2.1]`) are rejected like upstream
/// rejects them. Agreeing with the kubelet on *which* strings are images matters more
/// here than agreeing with the IPv6 RFCs.
pub(crate) fn is_ipv6_literal(host: &str) -> bool {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'))
}

/// `domain-name`: dot-separated `[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?` components.
fn is_domain_name(host: &str) -> bool {
    !host.is_empty()
        && host.as_bytes().split(|&c| c == b'.').all(|b| {
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `remote-name`: one or more '/'-separated path components.
fn validate_remote_name(name: &str) -> Result<(), ImageError> {
    let mut rest = name;
    while let Some((component, more)) = split_at(rest, b'/') {
        validate_component(component)?;
        rest = more;
    }
    validate_component(rest)
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separators `.`, `_`, `__`, `-+`.
fn validate_component(c: &str) -> Result<(), ImageError> {
    if component_end(c.as_bytes(), 0) == Some(c.len()) {
        Ok(())
    } else {
        Err(ImageError::InvalidComponent(c.to_string()))
    }
}

/// Where the path component starting at `b[i]` ends (at the first byte that neither
/// continues nor separates its runs), or `None` if no component starts there or one ends
/// in a separator.
fn component_end(b: &[u8], mut i: usize) -> Option<usize> {
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    loop {
        // a run of alphanumerics
        let run = b.get(i..)?.iter().take_while(|x| alnum(x)).count();
        if run == 0 {
            return None;
        }
        i += run;
        // a separator, or the end of the component
        match b.get(i) {
            Some(b'.') => i += 1,
            Some(b'_') => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            Some(b'-') => i += b[i..].iter().take_while(|&&x| x == b'-').count(),
            _ => return Some(i),
        }
    }
}

/// `[\w][\w.-]{0,127}`.
fn validate_tag(t: &str) -> Result<(), ImageError> {
    let b = t.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidTag(t.to_string()))
    }
}

/// go-digest `Parse`: only registered algorithms, lower-case hex of the exact length.
fn validate_digest(d: &str) -> Result<(), ImageError> {
    let (alg, hex) = split_at(d, b':').ok_or_else(|| ImageError::InvalidDigest(d.to_string()))?;
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            let grammar_ok = !alg.is_empty() && alg.as_bytes()[0].is_ascii_alphabetic();
            return Err(if grammar_ok && hex.len() >= 32 {
                ImageError::UnsupportedDigest(alg.to_string())
            } else {
                ImageError::InvalidDigest(d.to_string())
            });
        }
    };
    let ok = hex.len() == want && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidDigest(d.to_string()))
    }
}

/// Every vector of `distribution/reference`'s own tests, in a file of its own.
#[cfg(test)]
mod reference_vectors;

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Kubelet-facing vectors (numbered), as `ParseNormalizedNamed` answers them, plus ours.
    /// Upstream's own test vectors are in `reference_vectors`.
    #[test]
    fn valid_vectors() {
        let h512 = H.repeat(2);
        let tag128 = "t".repeat(128);
        // (input, domain, path, tag, digest)
        type Vector<'a> = (String, &'a str, &'a str, Option<&'a str>, Option<String>);
        let cases: Vec<Vector> = vec![
            ("nginx".into(), "docker.io", "library/nginx", None, None), // 1
            (
                "nginx:1.25".into(),
                "docker.io",
                "library/nginx",
                Some("1.25"),
                None,
            ), // 2
            (
                "library/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                None,
            ), // 3
            (
                "docker.io/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                None,
            ), // 4
            (
                "index.docker.io/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                None,
            ), // 5
            (
                "index.docker.io/library/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                None,
            ), // 6
            (
                "registry-1.docker.io/nginx".into(),
                "registry-1.docker.io",
                "nginx",
                None,
                None,
            ), // 7
            ("myuser/app".into(), "docker.io", "myuser/app", None, None), // 8
            ("localhost/app".into(), "localhost", "app", None, None),   // 9
            (
                "localhost:5000/app".into(),
                "localhost:5000",
                "app",
                None,
                None,
            ), // 10
            (
                "localhost:5000".into(),
                "docker.io",
                "library/localhost",
                Some("5000"),
                None,
            ), // 11
            (
                "localhost".into(),
                "docker.io",
                "library/localhost",
                None,
                None,
            ), // 12
            (
                "example.com".into(),
                "docker.io",
                "library/example.com",
                None,
                None,
            ), // 13
            (
                "gcr.io:v1".into(),
                "docker.io",
                "library/gcr.io",
                Some("v1"),
                None,
            ), // 14
            ("reg:5000/app".into(), "reg:5000", "app", None, None),     // 15
            (
                format!("my.reg:443/a/b@sha256:{H}"),
                "my.reg:443",
                "a/b",
                None,
                Some(format!("sha256:{H}")),
            ), // 16
            (
                format!("my.reg:443/a/b:v1@sha256:{H}"),
                "my.reg:443",
                "a/b",
                Some("v1"),
                Some(format!("sha256:{H}")),
            ), // 17
            (
                format!("nginx:latest@sha256:{H}"),
                "docker.io",
                "library/nginx",
                Some("latest"),
                Some(format!("sha256:{H}")),
            ), // 18
            (
                format!("nginx@sha256:{H}"),
                "docker.io",
                "library/nginx",
                None,
                Some(format!("sha256:{H}")),
            ), // 19
            ("[::1]:5000/x".into(), "[::1]:5000", "x", None, None),     // 20
            ("[::1]/x".into(), "[::1]", "x", None, None),               // 21
            (
                "127.0.0.1:5000/x:1".into(),
                "127.0.0.1:5000",
                "x",
                Some("1"),
                None,
            ), // 22
            (
                "Registry.Example.com/app".into(),
                "Registry.Example.com",
                "app",
                None,
                None,
            ), // 23
            ("quay.io/a/b/c/d".into(), "quay.io", "a/b/c/d", None, None), // 25
            (
                "nginx:V1".into(),
                "docker.io",
                "library/nginx",
                Some("V1"),
                None,
            ), // 26
            (
                format!("sha256:{H}"),
                "docker.io",
                "library/sha256",
                Some(H),
                None,
            ), // 27
            ("a__b/c---d".into(), "docker.io", "a__b/c---d", None, None), // 28
            (
                format!("nginx@sha512:{h512}"),
                "docker.io",
                "library/nginx",
                None,
                Some(format!("sha512:{h512}")),
            ), // 29
            (
                format!("nginx:{tag128}"),
                "docker.io",
                "library/nginx",
                Some(tag128.as_str()),
                None,
            ), // 31
            (
                "demo-tcr.tencentcloudcr.com/docker/getting-started:latest".into(),
                "demo-tcr.tencentcloudcr.com",
                "docker/getting-started",
                Some("latest"),
                None,
            ),
            (
                "ghcr.io:443/acme/app".into(),
                "ghcr.io:443",
                "acme/app",
                None,
                None,
            ),
            (
                "docker.io/library/nginx:1.25-alpine".into(),
                "docker.io",
                "library/nginx",
                Some("1.25-alpine"),
                None,
            ),
            (
                "registry.k8s.io/pause:3.10".into(),
                "registry.k8s.io",
                "pause",
                Some("3.10"),
                None,
            ),
            (
                "[2001:db8::1]:5000/team/app:v2".into(),
                "[2001:db8::1]:5000",
                "team/app",
                Some("v2"),
                None,
            ),
            ("a.b-c/x".into(), "a.b-c", "x", None, None),
        ];
        for (input, domain, path, tag, digest) in cases {
            let r = parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.domain, domain, "{input}");
            assert_eq!(r.path, path, "{input}");
            assert_eq!(r.tag, tag, "{input}");
            assert_eq!(r.digest, digest.as_deref(), "{input}");
        }
    }

    #[test]
    fn invalid_vectors() {
        let upper = H.to_uppercase();
        let cases: Vec<String> = vec![
            "ghcr.io/Org/app".into(),
            "NGINX".into(),
            "docker.io/Library/nginx".into(),
            "::1/x".into(),
            "nginx:".into(),
            "nginx:tag:x".into(),
            ":1.0".into(),
            "nginx@".into(),
            "app/".into(),
            "/app".into(),
            "a//b".into(),
            "a___b".into(),
            "-bad.io/app".into(),
            "nginx:-1".into(),
            "ex.com:/app".into(),
            "ex.com:abc/app".into(),
            " nginx".into(),
            "nginx ".into(),
            format!("a.b/c@sha256:{upper}"),
            format!("nginx@md5:{}", &H[..32]),
            H.into(),
            "".into(),
            "Myuser/app".into(),    // 24: ambiguous across kubelet versions
            "my_reg.io/app".into(), // 30: no valid domain
            format!("nginx:{}", "t".repeat(129)),
            format!("nginx@sha256:{}", &H[..63]),
            format!("x.io/{}", "a".repeat(256)),
            "[fe80::1%eth0]:5000/x".into(),
            "[::1:5000/x".into(),
            "a.b_c/x".into(), // '.' makes it a host, and '_' is not allowed in one
        ];
        for input in cases {
            assert!(
                parse(&input).is_err(),
                "{input:?} should be invalid: {:?}",
                parse(&input)
            );
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(
            parse("ghcr.io/Org/app").unwrap_err().to_string(),
            "repository name must be lowercase"
        );
        assert_eq!(
            parse("nginx@md5:0123456789abcdef0123456789abcdef").unwrap_err(),
            ImageError::UnsupportedDigest("md5".into())
        );
    }

    /// Anything after a bracketed host's `]` other than `:port` used to be dropped, so
    /// `[::1].evil.com/x` had host `[::1]` and matched patterns written for `[::1]`.
    /// `distribution/reference` rejects all of these ("invalid reference format").
    #[test]
    fn bracketed_host_rejects_trailing_text() {
        for input in [
            "[::1].evil.com/x",
            "[::1]\x1b[31mRED\n/x",
            "[fd00:1:2::3]75050/x",
            "[fd00:1:2::3]::75050/x",
            "[::1]:/x",
            "[::1]]/x",
            "[::1][::2]/x",
            "[::1]a:5000/x",
        ] {
            assert!(
                matches!(parse(input), Err(ImageError::InvalidDomain(_))),
                "{input:?}: {:?}",
                parse(input)
            );
        }
    }

    /// The 255-character limit applies to the normalised path, `library/` included
    /// (`Parse` runs on `docker.io/library/<name>`).
    #[test]
    fn name_limit_counts_the_library_prefix() {
        let a = |n: usize| "a".repeat(n);
        for input in [
            a(248),
            format!("docker.io/{}", a(248)),
            format!("docker.io/library/{}", a(248)),
        ] {
            assert_eq!(
                parse(&input),
                Err(ImageError::NameTooLong),
                "{} chars",
                input.len()
            );
        }
        assert_eq!(parse(&a(247)).unwrap().path.len(), 255);
        assert_eq!(parse(&format!("x.io/{}", a(255))).unwrap().path.len(), 255);
    }

    #[test]
    fn split_host_port_keeps_trailing_text_in_the_host() {
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("[::1]:5000"), ("[::1]", Some("5000")));
        assert_eq!(split_host_port("[::1].evil.com"), ("[::1].evil.com", None));
        assert_eq!(split_host_port("[::1]junk:1"), ("[::1]junk:1", None));
    }

    #[test]
    fn host_and_port() {
        let r = parse("[::1]:5000/x").unwrap();
        assert_eq!((r.host(), r.port()), ("[::1]", Some("5000")));
        let r = parse("ghcr.io/x").unwrap();
        assert_eq!((r.host(), r.port()), ("ghcr.io", None));
        assert_eq!(r.name(), "ghcr.io/x");
    }

    /// Pieces of remote names, tags and digests, valid and not.
    const REMOTE_PIECES: &[&str] = &[
        "a", "z9", "app", "-", "--", ".", "_", "__", "___", "/", "//", ":", "@", "A", "v1.2", "_x",
        "sha256:", H, "sha512:", "md5:", "é", " ", "x@y",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]
        /// The one-scan reading of a remote name agrees with the part-by-part one: same
        /// parts where it reads a text, and it reads every text the other accepts.
        #[test]
        fn quick_remote_agrees_with_the_checked_split(
            picks in proptest::collection::vec(0..REMOTE_PIECES.len(), 1..12)
        ) {
            let text: String = picks.iter().map(|&i| REMOTE_PIECES[i]).collect();
            let checked = parse_remote_checked(&text);
            match quick_remote(&text) {
                Some(parts) => proptest::prop_assert_eq!(Ok(parts), checked, "{}", text),
                None => proptest::prop_assert!(checked.is_err(), "missed {text:?}"),
            }
        }
    }
}
