//! Registry patterns (`host[:port][/path-prefix]`, `*` globs inside one DNS label) compiled
//! into an index whose lookup cost depends on the number of labels in the image's host,
//! not on the number of configured patterns.
//!
//! Semantics follow the kubelet keyring (`URLsMatch`) with two deliberate differences,
//! both documented in the README:
//! - path prefixes match on component boundaries (`ghcr.io/acme` does not match
//!   `ghcr.io/acme-other`), because a raw string prefix would let a neighbour's namespace
//!   receive our credentials or pass our policy;
//! - hosts compare case-insensitively (DNS is), so `EVIL.io` cannot dodge a deny rule for
//!   `evil.io`.
//!
//! One extension: a pattern that is exactly `*` matches every registry (policy `allow: ["*"]`).

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::image::{ImageRef, is_ipv6_literal, split_host_port};

/// A compiled registry pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    Any,
    Host {
        /// Lower-cased labels, most significant last (`["demo", "tencentcloudcr", "com"]`).
        labels: Vec<String>,
        port: Option<String>,
        /// Path prefix without leading/trailing '/', empty for none.
        path: String,
    },
}

/// A pattern's parts: lower-cased host labels (most significant last, `*` globs within
/// one label), the exact port if one was written, and the path prefix (no leading or
/// trailing `/`, empty for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternParts<'a> {
    Any,
    Host {
        labels: &'a [String],
        port: Option<&'a str>,
        path: &'a str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid registry pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl Pattern {
    pub fn parse(raw: &str) -> Result<Pattern, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: raw.to_string(),
            reason: reason.to_string(),
        };
        if raw == "*" {
            return Ok(Pattern {
                raw: raw.into(),
                kind: PatternKind::Any,
            });
        }
        if raw.is_empty() {
            return Err(err("empty pattern"));
        }
        if raw.contains("://") {
            return Err(err("write the registry host without a scheme"));
        }
        if raw.trim() != raw || raw.contains(char::is_whitespace) {
            return Err(err("whitespace is not allowed"));
        }
        if raw.contains(['@']) {
            return Err(err(
                "a pattern names a registry and path, not a tag or digest",
            ));
        }
        let (domain, path) = match raw.split_once('/') {
            Some((d, p)) => (d, p.trim_end_matches('/')),
            None => (raw, ""),
        };
        let (host, port) = split_host_port(domain);
        if let Some(p) = port
            && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("the port must be digits"));
        }
        let host = host.to_ascii_lowercase();
        // "index.docker.io" is how Docker Hub used to be written; images never normalise to it.
        let host = if host == "index.docker.io" {
            "docker.io".to_string()
        } else {
            host
        };
        // The image grammar's IPv6 literal, so that a pattern can be written for exactly
        // the bracketed hosts images can have; `split_host_port` leaves anything after
        // the `]` but a port in the host (`[::1]junk`), which this then rejects.
        if host.starts_with('[') && !is_ipv6_literal(&host) {
            return Err(err(
                "an IPv6 host is '[' hex digits and ':' ']', optionally followed by :port",
            ));
        }
        let labels: Vec<String> = host_labels(&host).map(str::to_string).collect();
        for l in &labels {
            if l.starts_with('[') {
                continue;
            }
            if l.is_empty() {
                return Err(err("empty DNS label"));
            }
            if !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
            {
                return Err(err(
                    "host labels may contain letters, digits, '-' and '*' (one label) only",
                ));
            }
        }
        let is_host = labels.len() > 1
            || port.is_some()
            || host == "localhost"
            || host.starts_with('[')
            || host.contains('*');
        if !is_host {
            return Err(err(
                "the first component must be a registry host (contain '.' or ':' or be localhost); \
                 for Docker Hub write docker.io/<path>",
            ));
        }
        if !path.is_empty() {
            if path.contains('*') {
                return Err(err("'*' is only allowed in the host"));
            }
            for c in path.split('/') {
                if c.is_empty()
                    || !c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
                {
                    return Err(err("path components must be lower-case repository names"));
                }
            }
        }
        Ok(Pattern {
            raw: raw.to_string(),
            kind: PatternKind::Host {
                labels,
                port: port.map(str::to_string),
                path: path.to_string(),
            },
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// What the pattern matches, for compilers into other languages (`export-policies`).
    pub(crate) fn parts(&self) -> PatternParts<'_> {
        match &self.kind {
            PatternKind::Any => PatternParts::Any,
            PatternKind::Host { labels, port, path } => PatternParts::Host {
                labels,
                port: port.as_deref(),
                path,
            },
        }
    }

    /// Direct (unindexed) test; the index must agree with it, which the tests check.
    pub fn matches(&self, image: &ImageRef) -> bool {
        match &self.kind {
            PatternKind::Any => true,
            PatternKind::Host { .. } => {
                self.matches_lowered(&lowercase(image.host()), image.port(), &image.path)
            }
        }
    }

    /// `matches`, given the image's host already lower-cased; allocation-free.
    fn matches_lowered(&self, host: &str, port: Option<&str>, path: &str) -> bool {
        match &self.kind {
            PatternKind::Any => true,
            PatternKind::Host {
                labels,
                port: want,
                path: prefix,
            } => {
                want.as_deref() == port
                    && labels.len() == label_count(host)
                    && labels
                        .iter()
                        .zip(host_labels(host))
                        .all(|(p, l)| glob(p, l))
                    && path_prefix_matches(prefix, path)
            }
        }
    }
}

/// `s` lower-cased, borrowed unless it has upper-case bytes (image hosts rarely do).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A host's DNS labels; a bracketed IPv6 host is one label, as in the kubelet (which
/// splits on '.', and IPv6 literals have none). Patterns, images and the index all use
/// this one definition, so that they cannot disagree about how many labels a host has.
fn host_labels(host: &str) -> impl Iterator<Item = &str> {
    let whole = host.starts_with('[');
    host.split(move |c| !whole && c == '.')
}

/// `host_labels(host).count()`, by counting bytes (asked once per image matched).
fn label_count(host: &str) -> usize {
    if host.starts_with('[') {
        1
    } else {
        host.bytes().filter(|&b| b == b'.').count() + 1
    }
}

fn path_prefix_matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// `*` matches any run of characters (including none), everything else is literal.
///
/// Hand-written rather than taken from a glob crate: it is the subset of Go's
/// `filepath.Match` the kubelet applies to one DNS label, shared with namespace globs, and
/// allocation-free on the admission hot path.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Globbed patterns sharing a literal suffix, grouped by what must match exactly anyway:
/// the total label count and the port.
#[derive(Debug, Clone)]
struct WildGroup<T> {
    labels: usize,
    port: Option<String>,
    cands: Vec<(usize, T)>,
}

/// Up to this many hits per image stay on the stack.
type Hits<'a, T> = SmallVec<[(usize, &'a T); 8]>;

/// Patterns compiled into hash indexes. `T` is what a match yields (an entry index, a rule).
///
/// Lookups probe with byte slices of one buffer per image, so matching allocates
/// nothing for ordinary images. FxHash instead of SipHash: the keys are the operator's
/// patterns, and a tenant's image only probes, so there is no flooding to defend against.
#[derive(Debug, Clone)]
pub struct Matcher<T> {
    /// Exact `host[:port]` plus `/path-prefix` when there is one → its patterns. An image
    /// probes its lower-cased domain followed by each component-boundary prefix of its path.
    /// Bytes rather than `str`, so that probing needs no UTF-8 check of the probe key.
    exact: FxHashMap<Box<[u8]>, Vec<(usize, T)>>,
    /// Labels to the right of the last label containing '*' → the globbed patterns.
    wild: FxHashMap<Box<str>, Vec<WildGroup<T>>>,
    any: Vec<(usize, T)>,
    patterns: Vec<Pattern>,
    /// Longest literal suffix (in labels) used by any wildcard key, to bound lookups.
    max_suffix_labels: usize,
}

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Matcher {
            exact: FxHashMap::default(),
            wild: FxHashMap::default(),
            any: Vec::new(),
            patterns: Vec::new(),
            max_suffix_labels: 0,
        }
    }
}

impl<T: Clone> Matcher<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, pattern: Pattern, value: T) {
        let id = self.patterns.len();
        match &pattern.kind {
            PatternKind::Any => self.any.push((id, value)),
            PatternKind::Host { labels, port, path } => {
                match labels.iter().rposition(|l| l.contains('*')) {
                    None => {
                        let mut key = labels.join(".");
                        if let Some(p) = port {
                            key.push(':');
                            key.push_str(p);
                        }
                        if !path.is_empty() {
                            key.push('/');
                            key.push_str(path);
                        }
                        let cands = self.exact.entry(key.into_bytes().into()).or_default();
                        cands.push((id, value));
                    }
                    Some(last_wild) => {
                        let suffix = labels[last_wild + 1..].join(".");
                        self.max_suffix_labels =
                            self.max_suffix_labels.max(labels.len() - last_wild - 1);
                        let groups = self.wild.entry(suffix.into()).or_default();
                        let (n, port) = (labels.len(), port.as_deref());
                        match groups
                            .iter_mut()
                            .find(|g| g.labels == n && g.port.as_deref() == port)
                        {
                            Some(g) => g.cands.push((id, value)),
                            None => groups.push(WildGroup {
                                labels: n,
                                port: port.map(str::to_string),
                                cands: vec![(id, value)],
                            }),
                        }
                    }
                }
            }
        }
        self.patterns.push(pattern);
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns in insertion order (the order matches are reported in).
    pub(crate) fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Every `(pattern id, value)` matching `image`, in insertion order.
    fn hits(&self, image: &ImageRef) -> Hits<'_, T> {
        let mut hits = Hits::new();
        // `domain/path`, the domain lower-cased: every exact key is a prefix of it, and so
        // is the lower-cased host. On the stack unless the image is unusually long.
        let mut buf: SmallVec<[u8; 256]> = SmallVec::new();
        buf.extend_from_slice(image.domain.as_bytes());
        buf.make_ascii_lowercase();
        buf.push(b'/');
        buf.extend_from_slice(image.path.as_bytes());
        let domain_len = image.domain.len();
        self.exact_hits(&buf, domain_len, &mut hits);
        if !self.wild.is_empty() {
            // Copied from the domain (a `&str`) with only ASCII bytes changed, and the host
            // ends at a char boundary (`:` or the end), so these bytes are UTF-8.
            let host = std::str::from_utf8(&buf[..image.host().len()])
                .expect("the lower-cased host of a str is a str");
            self.wild_hits(host, image.port(), &image.path, &mut hits);
        }
        hits.extend(self.any.iter().map(|(id, v)| (*id, v)));
        hits.sort_unstable_by_key(|(id, _)| *id);
        hits
    }

    /// Exact hosts: one probe for the domain alone and one per component-boundary prefix
    /// of the path (`ghcr.io`, `ghcr.io/acme`, `ghcr.io/acme/app`), so the cost is bounded
    /// by the path's depth however many patterns share the host.
    fn exact_hits<'s>(&'s self, key: &[u8], domain_len: usize, hits: &mut Hits<'s, T>) {
        let ends = key
            .iter()
            .enumerate()
            .skip(domain_len + 1)
            .filter(|&(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain([domain_len, key.len()]);
        for end in ends {
            if let Some(cands) = key.get(..end).and_then(|k| self.exact.get(k)) {
                hits.extend(cands.iter().map(|(id, v)| (*id, v)));
            }
        }
    }

    /// Globbed hosts: one probe per literal suffix length the index actually uses, so
    /// the cost is bounded by the host's label count, not by the number of patterns.
    /// Bracketed IPv6 hosts are probed too: they are one label, which `*` matches.
    fn wild_hits<'s>(&'s self, host: &str, port: Option<&str>, path: &str, hits: &mut Hits<'s, T>) {
        let n = label_count(host);
        for taken in 0..=self.max_suffix_labels.min(n) {
            let suffix = match taken {
                0 => "",
                k => &host[nth_label_from_end(host, k)..],
            };
            let Some(groups) = self.wild.get(suffix) else {
                continue;
            };
            let cands = groups
                .iter()
                .filter(|g| g.labels == n && g.port.as_deref() == port)
                .flat_map(|g| &g.cands);
            hits.extend(
                cands
                    .filter(|(id, _)| self.patterns[*id].matches_lowered(host, port, path))
                    .map(|(id, v)| (*id, v)),
            );
        }
    }

    /// Calls `f(pattern, value)` for every pattern matching `image`, in insertion order.
    pub fn for_each_match(&self, image: &ImageRef, mut f: impl FnMut(&Pattern, &T)) {
        for (id, v) in self.hits(image) {
            f(&self.patterns[id], v);
        }
    }

    /// Values of every matching pattern, in insertion order (may repeat a value that
    /// several patterns map to).
    pub fn matches(&self, image: &ImageRef) -> Vec<T> {
        self.hits(image)
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first matching pattern in insertion order, if any.
    pub fn first_match(&self, image: &ImageRef) -> Option<(&Pattern, T)> {
        self.hits(image)
            .first()
            .map(|(id, v)| (&self.patterns[*id], (*v).clone()))
    }
}

/// Byte offset where the last `k` labels of `host` start (0 for a bracketed host, whose
/// one label is the whole host and has no '.').
fn nth_label_from_end(host: &str, k: usize) -> usize {
    let mut seen = 0;
    for (i, b) in host.bytes().enumerate().rev() {
        if b == b'.' {
            seen += 1;
            if seen == k {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::parse;

    fn m(pattern: &str, image: &str) -> bool {
        let p = Pattern::parse(pattern).unwrap();
        let img = parse(image).unwrap();
        let direct = p.matches(&img);
        let mut idx = Matcher::new();
        idx.insert(p, ());
        assert_eq!(
            direct,
            !idx.matches(&img).is_empty(),
            "index disagrees for {pattern} / {image}"
        );
        direct
    }

    #[test]
    fn label_count_counts_what_host_labels_yields() {
        for host in [
            "", ".", "a", "a.b", "a..b", ".a.", "ghcr.io", "[::1]", "[::1].x", "a.[b]",
        ] {
            assert_eq!(label_count(host), host_labels(host).count(), "{host:?}");
        }
    }

    #[test]
    fn kubelet_vectors_and_our_differences() {
        // (pattern, image, matches) — the kubelet keyring's behaviour (`URLsMatch` in
        // kubernetes pkg/credentialprovider/keyring.go), numbered, plus ours
        let cases = [
            ("docker.io", "nginx", true),                     // 4
            ("index.docker.io", "nginx", true),               // written the old way
            ("registry-1.docker.io", "nginx", false),         // 5
            ("*.docker.io", "nginx", false),                  // 6
            ("docker.io/myorg", "docker.io/myorg/app", true), // 8
            ("docker.io/library", "nginx", true),             // short names
            ("docker.io/library", "myuser/app", false),
            (
                "registry.example.com",
                "registry.example.com/team/app",
                true,
            ), // 10
            (
                "registry.example.com/team",
                "registry.example.com/team/app",
                true,
            ), // 14
            (
                "registry.example.com/team",
                "registry.example.com/team-b/app",
                false,
            ), // 15: boundary (differs from kubelet)
            (
                "registry.example.com/team/",
                "registry.example.com/team/app",
                true,
            ),
            (
                "registry.example.com/other",
                "registry.example.com/team/app",
                false,
            ), // 17
            (
                "registry.example.com:5000",
                "registry.example.com/team/app",
                false,
            ), // 18
            (
                "registry.example.com",
                "registry.example.com:5000/team/app",
                false,
            ), // 19
            (
                "registry.example.com:443",
                "registry.example.com/team/app",
                false,
            ), // 20
            ("*.example.com", "registry.example.com/app", true), // 21
            ("*.example.com", "example.com/app", false),         // 22
            ("*.example.com", "a.b.example.com/app", false),     // 23
            ("*.*.example.com", "a.b.example.com/app", true),    // 24
            ("reg*.example.com", "registry.example.com/app", true), // 25
            ("*.example.com:5000", "reg.example.com:5000/app", true), // 26
            ("*.example.com", "reg.example.com:5000/app", false), // 27
            ("Registry.Example.com", "registry.example.com/app", true), // 28: case-insensitive (differs)
            ("localhost:5000", "localhost:5000/app", true),             // 29
            ("localhost", "localhost:5000/app", false),                 // 30
            ("[::1]:5000", "[::1]:5000/x", true),                       // 31
            ("*.io", "quay.io/coreos/etcd", true),                      // 32
            ("*", "ghcr.io/x/app", true),                               // any (extension)
            ("registry.io", "registry.io.evil.com/app", false),
            (
                "*.tencentcloudcr.com",
                "demo-tcr.tencentcloudcr.com/docker/x",
                true,
            ),
            (
                "*.tencentcloudcr.com",
                "evil.com/tencentcloudcr.com/x",
                false,
            ),
            ("ghcr.io/acme", "ghcr.io/acme/app", true),
            ("ghcr.io/acme", "ghcr.io/acme", true),
            ("ghcr.io/acme", "ghcr.io/acme-other/app", false),
            ("ghcr.io", "ghcr.io:443/acme/app", false),
            ("*-good.example.com", "x-good.example.com/a", true),
            ("*-good.example.com", "x-bad.example.com/a", false),
        ];
        for (p, i, want) in cases {
            assert_eq!(m(p, i), want, "pattern {p} image {i}");
        }
    }

    #[test]
    fn bad_patterns() {
        for p in [
            "",
            "https://ghcr.io",
            "library/nginx",
            "ghcr.io/Acme",
            "ghcr.io/a*",
            "ghcr.io:x",
            "a..b",
            "ghcr.io/x:1",
            "[::1",
        ] {
            assert!(Pattern::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn index_yields_all_matches_in_insertion_order() {
        let mut idx = Matcher::new();
        for (i, p) in ["quay.io/coreos", "*.io", "quay.io", "ghcr.io"]
            .iter()
            .enumerate()
        {
            idx.insert(Pattern::parse(p).unwrap(), i);
        }
        assert_eq!(
            idx.matches(&parse("quay.io/coreos/etcd").unwrap()),
            vec![0, 1, 2]
        );
        assert_eq!(idx.matches(&parse("ghcr.io/x").unwrap()), vec![1, 3]);
        assert_eq!(idx.matches(&parse("nginx").unwrap()), vec![1]); // docker.io is a .io host
        assert!(idx.matches(&parse("localhost/x").unwrap()).is_empty());
    }

    /// Exact hosts are indexed with their path prefix and probed at each component
    /// boundary of the image's path: every prefix on the host hits, no neighbour does.
    #[test]
    fn path_prefixes_on_one_host_are_probed_by_boundary() {
        let mut idx = Matcher::new();
        let patterns = [
            "ghcr.io/a",
            "ghcr.io/a/b",
            "ghcr.io",
            "ghcr.io/ab",
            "GHCR.io:5000/a",
        ];
        for (i, p) in patterns.iter().enumerate() {
            idx.insert(Pattern::parse(p).unwrap(), i);
        }
        let hits = |image: &str| idx.matches(&parse(image).unwrap());
        assert_eq!(hits("ghcr.io/a/b/c"), vec![0, 1, 2]);
        assert_eq!(hits("GHCR.IO/a/b"), vec![0, 1, 2]);
        assert_eq!(hits("ghcr.io/a"), vec![0, 2]);
        assert_eq!(hits("ghcr.io/abc/x"), vec![2]);
        assert_eq!(hits("ghcr.io:5000/a/x"), vec![4]);
        assert_eq!(hits("Ghcr.io:5000/ab"), Vec::<usize>::new());
        for (p, i) in [("ghcr.io/a", "Ghcr.IO/a/x"), ("*.io/a", "GHCR.io/a/x")] {
            assert!(m(p, i), "{p} {i}");
        }
    }

    /// `*` is one label, and a bracketed IPv6 host is one label too (kubelet `URLsMatch`
    /// splits hosts on '.'), so `*:5000` matches `[::1]:5000`. The index used to skip
    /// bracketed hosts for globbed patterns, disagreeing with `Pattern::matches`.
    #[test]
    fn wildcards_match_bracketed_hosts_through_the_index() {
        assert!(m("*:5000", "[::1]:5000/x"));
        assert!(m("*", "[::1]/x"));
        assert!(m("*/team", "[fd00::1]/team/app"));
        assert!(!m("*:5000", "[::1]/x"));
        assert!(!m("*:5000", "[::1]:5001/x"));
        assert!(!m("*.*:5000", "[::1]:5000/x"));
        assert!(m("[FD00::1]:5000", "[fd00::1]:5000/x"));
    }

    #[test]
    fn bracketed_patterns_reject_trailing_text() {
        for p in [
            "[::1]junk",
            "[::1].evil.com",
            "[::1]5000",
            "[::1]::5000",
            "[::1]:",
            "[fe80::1%eth0]",
            "[2001:db8::192.0.2.33]",
            "[]",
            "[::1]]",
        ] {
            assert!(Pattern::parse(p).is_err(), "{p}: {:?}", Pattern::parse(p));
        }
        assert!(Pattern::parse("[::1]").is_ok());
        assert!(Pattern::parse("[::1]:5000/team").is_ok());
    }

    #[test]
    fn globbing() {
        assert!(glob("team-*", "team-a"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b", "ab-c"));
        assert!(glob("team-a", "team-a"));
        assert!(!glob("team-a", "team-ab"));
    }
}
