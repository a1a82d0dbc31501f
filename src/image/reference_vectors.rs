//! The test vectors of `distribution/reference` itself (github.com/distribution/reference,
//! v0.6.0 and later), so that "parsed exactly like the kubelet" is checked against the
//! parser the kubelet uses. Every group names its upstream file and Go test function.
//!
//! Upstream tests three layers, and so do we:
//! - `ParseNormalizedNamed` (what the kubelet and containerd call) is our [`parse`];
//! - `Parse`, `WithName` and the anchored regexps work on already-normalised strings and
//!   may yield a reference without a domain. We have no such public function, so
//!   [`go_parse`] and [`go_name`] rebuild them here from the same grammar pieces `parse`
//!   uses (`validate_domain`, `validate_remote_name`, `validate_tag`, `validate_digest`).
//!
//! Kept differences, each asserted below where a vector hits it (README "Image
//! references"): an upper-case first component is ambiguous for us (`Docker/docker`,
//! `Foo/bar`), and `ParseAnyReference`/`FamiliarMatch`, which the kubelet never calls,
//! are not implemented.

use super::*;

/// Go `Parse`: `referenceRegexp`, then the 255-character path limit and go-digest
/// validation. Returns `(domain, path, tag, digest)`, domain `""` when none was captured.
type Parsed<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

fn go_parse(s: &str) -> Result<Parsed<'_>, ImageError> {
    if s.is_empty() {
        return Err(ImageError::Empty);
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => {
            validate_digest(d)?;
            (n, Some(d))
        }
        None => (s, None),
    };
    // A tag follows the last ':' unless a '/' comes after it (then that ':' is a port's).
    let (name, tag) = match name_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => {
            validate_tag(t)?;
            (n, Some(t))
        }
        _ => (name_tag, None),
    };
    let (domain, path) =
        go_name(name).ok_or_else(|| ImageError::InvalidComponent(name.to_string()))?;
    if path.len() > NAME_MAX {
        return Err(ImageError::NameTooLong);
    }
    Ok((domain, path, tag, digest))
}

/// Go `anchoredNameRegexp`: `^(?:(domainAndPort)/)?(remoteName)$`. Go's regexps are
/// leftmost-first, so the domain group is taken whenever the rest still matches.
fn go_name(name: &str) -> Option<(&str, &str)> {
    if let Some((d, p)) = name.split_once('/')
        && validate_domain(d).is_ok()
        && validate_remote_name(p).is_ok()
    {
        return Some((d, p));
    }
    validate_remote_name(name).ok().map(|()| ("", name))
}

/// Go `WithName`: the anchored name regexp plus the path limit.
fn go_with_name(name: &str) -> Option<(&str, &str)> {
    go_name(name).filter(|(_, p)| p.len() <= NAME_MAX)
}

/// Go `Reference.String()` of a `go_parse` result.
fn go_string((domain, path, tag, digest): Parsed<'_>) -> String {
    let mut s = if domain.is_empty() {
        path.to_string()
    } else {
        format!("{domain}/{path}")
    };
    if let Some(t) = tag {
        s = format!("{s}:{t}");
    }
    if let Some(d) = digest {
        s = format!("{s}@{d}");
    }
    s
}

fn f(n: usize) -> String {
    "f".repeat(n)
}

/// reference_test.go `TestReferenceParse` (Go `Parse`).
/// `(input, Some((repository, domain, tag, digest)))`, `""` for absent; `None` = error.
#[test]
fn reference_test_test_reference_parse() {
    let sha = format!("sha256:{}", f(64));
    let sha512 = format!("sha512:{}", f(128));
    type Want = Option<(String, &'static str, &'static str, String)>;
    let ok = |repo: &str, domain: &'static str, tag: &'static str, digest: &str| -> Want {
        Some((repo.to_string(), domain, tag, digest.to_string()))
    };
    let cases: Vec<(String, Want)> = vec![
        ("test_com".into(), ok("test_com", "", "", "")),
        ("test.com:tag".into(), ok("test.com", "", "tag", "")),
        ("test.com:5000".into(), ok("test.com", "", "5000", "")),
        (
            "test.com/repo:tag".into(),
            ok("test.com/repo", "test.com", "tag", ""),
        ),
        (
            "test:5000/repo".into(),
            ok("test:5000/repo", "test:5000", "", ""),
        ),
        (
            "test:5000/repo:tag".into(),
            ok("test:5000/repo", "test:5000", "tag", ""),
        ),
        (
            format!("test:5000/repo@{sha}"),
            ok("test:5000/repo", "test:5000", "", &sha),
        ),
        (
            format!("test:5000/repo:tag@{sha}"),
            ok("test:5000/repo", "test:5000", "tag", &sha),
        ),
        ("".into(), None),
        (":justtag".into(), None),
        (format!("@{sha}"), None),
        (format!("repo@sha256:{}", f(34)), None),
        (format!("validname@invaliddigest:{}", f(64)), None),
        ("Uppercase:tag".into(), None),
        ("test:5000/Uppercase/lowercase:tag".into(), None),
        (
            "lowercase:Uppercase".into(),
            ok("lowercase", "", "Uppercase", ""),
        ),
        (format!("domain/{}:tag", "a".repeat(256)), None),
        (
            format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
            ok(
                &format!("{}a", "a/".repeat(127)),
                "a",
                "tag-puts-this-over-max",
                "",
            ),
        ),
        ("aa/asdf$$^/aa".into(), None),
        (
            "sub-dom1.foo.com/bar/baz/quux".into(),
            ok("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "", ""),
        ),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            ok(
                "sub-dom1.foo.com/bar/baz/quux",
                "sub-dom1.foo.com",
                "some-long-tag",
                "",
            ),
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            ok(
                "b.gcr.io/test.example.com/my-app",
                "b.gcr.io",
                "test.example.com",
                "",
            ),
        ),
        (
            "xn--n3h.com/myimage:xn--n3h.com".into(),
            ok("xn--n3h.com/myimage", "xn--n3h.com", "xn--n3h.com", ""),
        ),
        (
            format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}"),
            ok(
                "xn--7o8h.com/myimage",
                "xn--7o8h.com",
                "xn--7o8h.com",
                &sha512,
            ),
        ),
        ("foo_bar.com:8080".into(), ok("foo_bar.com", "", "8080", "")),
        (
            "foo/foo_bar.com:8080".into(),
            ok("foo/foo_bar.com", "foo", "8080", ""),
        ),
        ("192.168.1.1".into(), ok("192.168.1.1", "", "", "")),
        ("192.168.1.1:tag".into(), ok("192.168.1.1", "", "tag", "")),
        ("192.168.1.1:5000".into(), ok("192.168.1.1", "", "5000", "")),
        (
            "192.168.1.1/repo".into(),
            ok("192.168.1.1/repo", "192.168.1.1", "", ""),
        ),
        (
            "192.168.1.1:5000/repo".into(),
            ok("192.168.1.1:5000/repo", "192.168.1.1:5000", "", ""),
        ),
        (
            "192.168.1.1:5000/repo:5050".into(),
            ok("192.168.1.1:5000/repo", "192.168.1.1:5000", "5050", ""),
        ),
        ("[2001:db8::1]".into(), None),
        ("[2001:db8::1]:5000".into(), None),
        ("[2001:db8::1]:tag".into(), None),
        (
            "[2001:db8::1]/repo".into(),
            ok("[2001:db8::1]/repo", "[2001:db8::1]", "", ""),
        ),
        (
            "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
            ok(
                "[2001:db8:1:2:3:4:5:6]/repo",
                "[2001:db8:1:2:3:4:5:6]",
                "tag",
                "",
            ),
        ),
        (
            "[2001:db8::1]:5000/repo".into(),
            ok("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "", ""),
        ),
        (
            "[2001:db8::1]:5000/repo:tag".into(),
            ok("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "tag", ""),
        ),
        (
            format!("[2001:db8::1]:5000/repo@{sha}"),
            ok("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "", &sha),
        ),
        (
            format!("[2001:db8::1]:5000/repo:tag@{sha}"),
            ok("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "tag", &sha),
        ),
        (
            "[2001:db8::]:5000/repo".into(),
            ok("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "", ""),
        ),
        (
            "[::1]:5000/repo".into(),
            ok("[::1]:5000/repo", "[::1]:5000", "", ""),
        ),
        ("[fe80::1%eth0]:5000/repo".into(), None),
        ("[fe80::1%@invalidzone]:5000/repo".into(), None),
        (
            format!("example.com/{}:tag", "a".repeat(255)),
            ok(
                &format!("example.com/{}", "a".repeat(255)),
                "example.com",
                "tag",
                "",
            ),
        ),
    ];
    for (input, want) in cases {
        let got = go_parse(&input);
        match want {
            None => assert!(got.is_err(), "{input:?} should fail: {got:?}"),
            Some((repo, domain, tag, digest)) => {
                let p = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                assert_eq!(go_string(p), input, "String() of {input:?}");
                let (d, path, t, dg) = p;
                let name = if d.is_empty() {
                    path.to_string()
                } else {
                    format!("{d}/{path}")
                };
                assert_eq!(name, repo, "{input:?}");
                assert_eq!(d, domain, "{input:?}");
                assert_eq!(t.unwrap_or(""), tag, "{input:?}");
                assert_eq!(dg.unwrap_or(""), digest, "{input:?}");
            }
        }
    }
}

/// reference_test.go `TestWithNameFailure` (Go `WithName`).
#[test]
fn reference_test_test_with_name_failure() {
    for input in [
        String::new(),
        ":justtag".into(),
        format!("@sha256:{}", f(64)),
        format!("validname@invaliddigest:{}", f(64)),
        "example.com/repo:tag".into(),
        format!("example.com/{}", "a".repeat(256)),
        "aa/asdf$$^/aa".into(),
    ] {
        assert_eq!(go_with_name(&input), None, "{input:?}");
    }
}

/// reference_test.go `TestDomainAndPath` (Go `WithName`, `Domain`, `Path`).
#[test]
fn reference_test_test_domain_and_path() {
    for (input, domain, path) in [
        ("test.com/foo", "test.com", "foo"),
        ("test_com/foo", "", "test_com/foo"),
        ("test:8080/foo", "test:8080", "foo"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("test-com:8080/foo", "test-com:8080", "foo"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ] {
        assert_eq!(go_with_name(input), Some((domain, path)), "{input}");
    }
}

/// reference_test.go `TestSerialization` (Go `Field.UnmarshalText`, i.e. `Parse`).
#[test]
fn reference_test_test_serialization() {
    assert_eq!(go_parse(""), Err(ImageError::Empty), "empty value");
    let d = "sha256:1234567890098765432112345667890098765432112345667890098765432112";
    for (input, domain, path, tag, digest) in [
        (
            "example.com:8000/named",
            "example.com:8000",
            "named",
            None,
            None,
        ),
        (
            "example.com:8000/named:tagged",
            "example.com:8000",
            "named",
            Some("tagged"),
            None,
        ),
        (
            &format!("other.com/named@{d}"),
            "other.com",
            "named",
            None,
            Some(d),
        ),
    ] {
        assert_eq!(go_parse(input), Ok((domain, path, tag, digest)), "{input}");
    }
}

/// reference_test.go `TestWithTag` and `TestWithDigest`. Those build references with
/// `WithTag`/`WithDigest`, which check the grammar only; their digest
/// `sha256:1234567890098765432112345667890098765` has 37 hex digits, so `Parse` (go-digest
/// validation) rejects the combined strings that contain it, and so do we. The names must
/// pass `WithName` and the tags the tag grammar; combined strings without a digest parse.
#[test]
fn reference_test_test_with_tag_and_with_digest() {
    let d = "sha256:1234567890098765432112345667890098765";
    // TestWithTag: (name, digest, tag, combined)
    let with_tag = [
        ("test.com/foo", "", "tag", "test.com/foo:tag".to_string()),
        ("foo", "", "tag2", "foo:tag2".into()),
        (
            "test.com:8000/foo",
            "",
            "tag4",
            "test.com:8000/foo:tag4".into(),
        ),
        (
            "test.com:8000/foo",
            "",
            "TAG5",
            "test.com:8000/foo:TAG5".into(),
        ),
        (
            "test.com:8000/foo",
            d,
            "TAG5",
            format!("test.com:8000/foo:TAG5@{d}"),
        ),
    ];
    // TestWithDigest: (name, digest, tag, combined)
    let with_digest = [
        ("test.com/foo", d, "", format!("test.com/foo@{d}")),
        ("foo", d, "", format!("foo@{d}")),
        ("test.com:8000/foo", d, "", format!("test.com:8000/foo@{d}")),
        (
            "test.com:8000/foo",
            d,
            "latest",
            format!("test.com:8000/foo:latest@{d}"),
        ),
    ];
    for (name, digest, tag, combined) in with_tag.into_iter().chain(with_digest) {
        assert!(go_with_name(name).is_some(), "{name}");
        if !tag.is_empty() {
            assert_eq!(validate_tag(tag), Ok(()), "{tag}");
        }
        let parsed = go_parse(&combined);
        if digest.is_empty() {
            let p = parsed.unwrap_or_else(|e| panic!("{combined}: {e}"));
            assert_eq!(go_string(p), combined);
        } else {
            assert!(
                matches!(parsed, Err(ImageError::InvalidDigest(_))),
                "{combined}: {parsed:?}"
            );
        }
    }
}

/// reference_test.go `TestParseNamed` (Go `ParseNamed`: `ParseNormalizedNamed`, then the
/// input must already be the canonical string).
#[test]
fn reference_test_test_parse_named() {
    for (input, canonical) in [
        ("test.com/foo", Some(("test.com", "foo"))),
        ("test:8080/foo", Some(("test:8080", "foo"))),
        ("test_com/foo", None),
        ("test.com", None),
        ("foo", None),
        ("library/foo", None),
        ("docker.io/library/foo", Some(("docker.io", "library/foo"))),
        ("docker.io/foo", None),
    ] {
        let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        let is_canonical = r.to_string() == input;
        assert_eq!(is_canonical, canonical.is_some(), "{input} -> {r}");
        if let Some((domain, path)) = canonical {
            assert_eq!((r.domain, &*r.path), (domain, path));
        }
    }
}

/// normalize_test.go `TestValidateReferenceName` (`ParseNormalizedNamed`).
#[test]
fn normalize_test_test_validate_reference_name() {
    let valid = [
        "docker/docker",
        "library/debian",
        "debian",
        "docker.io/docker/docker",
        "docker.io/library/debian",
        "docker.io/debian",
        "index.docker.io/docker/docker",
        "index.docker.io/library/debian",
        "index.docker.io/debian",
        "127.0.0.1:5000/docker/docker",
        "127.0.0.1:5000/library/debian",
        "127.0.0.1:5000/debian",
        "192.168.0.1",
        "192.168.0.1:80",
        "192.168.0.1:8/debian",
        "192.168.0.2:25000/debian",
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "[fc00::1]:5000/docker",
        "[fc00::1]:5000/docker/docker",
        "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
        "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    ];
    for input in valid {
        assert!(parse(input).is_ok(), "{input}: {:?}", parse(input));
    }
    // Valid upstream (an upper-case first component is a host there); ambiguous for us.
    for input in ["Docker/docker", "DOCKER/docker"] {
        assert!(
            matches!(parse(input), Err(ImageError::AmbiguousDomain(_))),
            "{input}"
        );
    }
    let invalid = [
        "https://github.com/docker/docker",
        "docker/Docker",
        "-docker",
        "-docker/docker",
        "-docker.io/docker/docker",
        "docker///docker",
        "docker.io/docker/Docker",
        "docker.io/docker///docker",
        "[fc00::1]",
        "[fc00::1]:5000",
        "fc00::1:5000/debian",
        "[fe80::1%eth0]:5000/debian",
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
        "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    ];
    for input in invalid {
        assert!(parse(input).is_err(), "{input}: {:?}", parse(input));
    }
}

/// normalize_test.go `TestValidateRemoteName` (`ParseNormalizedNamed`).
#[test]
fn normalize_test_test_validate_remote_name() {
    for input in [
        "docker/docker",
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "docker-rules/docker",
        "docker---rules/docker",
        "doc/docker",
        "d/docker",
        "jess/t",
        "dock__er/docker",
    ] {
        assert!(parse(input).is_ok(), "{input}: {:?}", parse(input));
    }
    for input in [
        "docker/Docker",
        "docker///docker",
        "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        "-docker/docker",
        "docker-/docker",
        "-docker-/docker",
        "____/____",
        "_docker/_docker",
        "dock..er/docker",
        "dock_.er/docker",
        "dock-.er/docker",
        "docker/",
        "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker",
    ] {
        assert!(parse(input).is_err(), "{input}: {:?}", parse(input));
    }
}

/// normalize_test.go `TestParseRepositoryInfo`: every spelling (familiar, full,
/// ambiguous) parses to the full name, domain and remote name. `FamiliarName` itself is
/// not implemented (nothing here prints familiar names).
#[test]
fn normalize_test_test_parse_repository_info() {
    // (remote name, familiar, full, ambiguous, domain)
    let cases = [
        (
            "fooo/bar",
            "fooo/bar",
            "docker.io/fooo/bar",
            "index.docker.io/fooo/bar",
            "docker.io",
        ),
        (
            "library/ubuntu",
            "ubuntu",
            "docker.io/library/ubuntu",
            "library/ubuntu",
            "docker.io",
        ),
        (
            "nonlibrary/ubuntu",
            "nonlibrary/ubuntu",
            "docker.io/nonlibrary/ubuntu",
            "",
            "docker.io",
        ),
        (
            "other/library",
            "other/library",
            "docker.io/other/library",
            "",
            "docker.io",
        ),
        (
            "private/moonbase",
            "127.0.0.1:8000/private/moonbase",
            "127.0.0.1:8000/private/moonbase",
            "",
            "127.0.0.1:8000",
        ),
        (
            "privatebase",
            "127.0.0.1:8000/privatebase",
            "127.0.0.1:8000/privatebase",
            "",
            "127.0.0.1:8000",
        ),
        (
            "private/moonbase",
            "example.com/private/moonbase",
            "example.com/private/moonbase",
            "",
            "example.com",
        ),
        (
            "privatebase",
            "example.com/privatebase",
            "example.com/privatebase",
            "",
            "example.com",
        ),
        (
            "private/moonbase",
            "example.com:8000/private/moonbase",
            "example.com:8000/private/moonbase",
            "",
            "example.com:8000",
        ),
        (
            "privatebasee",
            "example.com:8000/privatebasee",
            "example.com:8000/privatebasee",
            "",
            "example.com:8000",
        ),
        (
            "library/ubuntu-12.04-base",
            "ubuntu-12.04-base",
            "docker.io/library/ubuntu-12.04-base",
            "index.docker.io/library/ubuntu-12.04-base",
            "docker.io",
        ),
        (
            "library/foo",
            "foo",
            "docker.io/library/foo",
            "docker.io/foo",
            "docker.io",
        ),
        (
            "library/foo/bar",
            "library/foo/bar",
            "docker.io/library/foo/bar",
            "",
            "docker.io",
        ),
        (
            "store/foo/bar",
            "store/foo/bar",
            "docker.io/store/foo/bar",
            "",
            "docker.io",
        ),
    ];
    for (remote, familiar, full, ambiguous, domain) in cases {
        for input in [familiar, full, ambiguous] {
            if input.is_empty() {
                continue;
            }
            let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.domain, domain, "{input}");
            assert_eq!(r.path, remote, "{input}");
        }
    }
    // `Foo/bar` and `FOO/bar` (domain `Foo`/`FOO` upstream): ambiguous for us.
    for input in ["Foo/bar", "FOO/bar"] {
        assert!(
            matches!(parse(input), Err(ImageError::AmbiguousDomain(_))),
            "{input}"
        );
    }
}

/// normalize_test.go `TestParseReferenceWithTagAndDigest`: both are kept.
#[test]
fn normalize_test_test_parse_reference_with_tag_and_digest() {
    let short =
        "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
    let r = parse(short).unwrap();
    assert_eq!(r.to_string(), format!("docker.io/library/{short}"));
    assert_eq!(r.tag, Some("latest"));
    assert!(r.digest.is_some());
}

/// normalize_test.go `TestInvalidReferenceComponents`: bad name, bad tag (`WithTag`), bad
/// digest (`WithDigest`).
#[test]
fn normalize_test_test_invalid_reference_components() {
    assert!(parse("-foo").is_err());
    assert!(parse("busybox").is_ok());
    assert!(validate_tag("-foo").is_err());
    assert!(parse("busybox:-foo").is_err());
    assert!(validate_digest("foo").is_err());
    assert!(parse("busybox@foo").is_err());
}

/// normalize_test.go `TestParseAnyReference`. The named vectors go through
/// `ParseNormalizedNamed` there too; the two digest-only ones are `ParseAnyReference`'s
/// own shortcut, which the kubelet does not use: `ParseNormalizedNamed` refuses the bare
/// identifier and reads `sha256:<hex>` as a name with a tag, as we do.
#[test]
fn normalize_test_test_parse_any_reference() {
    let d = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
    let id = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
    for (input, equivalent) in [
        ("redis".to_string(), "docker.io/library/redis".to_string()),
        (
            "redis:latest".into(),
            "docker.io/library/redis:latest".into(),
        ),
        (
            "docker.io/library/redis:latest".into(),
            "docker.io/library/redis:latest".into(),
        ),
        (format!("redis@{d}"), format!("docker.io/library/redis@{d}")),
        (
            format!("docker.io/library/redis@{d}"),
            format!("docker.io/library/redis@{d}"),
        ),
        ("dmcgowan/myapp".into(), "docker.io/dmcgowan/myapp".into()),
        (
            "dmcgowan/myapp:latest".into(),
            "docker.io/dmcgowan/myapp:latest".into(),
        ),
        (
            "docker.io/mcgowan/myapp:latest".into(),
            "docker.io/mcgowan/myapp:latest".into(),
        ),
        (
            format!("dmcgowan/myapp@{d}"),
            format!("docker.io/dmcgowan/myapp@{d}"),
        ),
        (
            format!("docker.io/dmcgowan/myapp@{d}"),
            format!("docker.io/dmcgowan/myapp@{d}"),
        ),
        (
            id[..63].to_string(),
            format!("docker.io/library/{}", &id[..63]),
        ),
        ("dbcc1".into(), "docker.io/library/dbcc1".into()),
    ] {
        let r = parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.to_string(), equivalent, "{input}");
    }
    assert_eq!(parse(id), Err(ImageError::HexOnly));
    assert_eq!(
        parse(d).unwrap().to_string(),
        format!("docker.io/library/sha256:{id}")
    );
}

/// normalize_test.go `TestNormalizedSplitHostname`.
#[test]
fn normalize_test_test_normalized_split_hostname() {
    for (input, domain, path) in [
        ("test.com/foo", "test.com", "foo"),
        ("test_com/foo", "docker.io", "test_com/foo"),
        ("docker/migrator", "docker.io", "docker/migrator"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("test-com:8080/foo", "test-com:8080", "foo"),
        ("foo", "docker.io", "library/foo"),
        ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
        ("docker.io/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
    ] {
        let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!((r.domain, &*r.path), (domain, path), "{input}");
    }
}

/// normalize_test.go `TestMatch` / `TestMatchError` test `FamiliarMatch`, a glob over the
/// familiar string that the kubelet never calls (registry patterns are `crate::matcher`).
/// Only their references are checked here: they must parse.
#[test]
fn normalize_test_test_match_references() {
    for input in [
        "foo",
        "foo/any/bat",
        "foo/a/bar",
        "foo/b/baz",
        "foo/c/baz:tag",
        "example.com/foo/c/baz:tag",
    ] {
        assert!(parse(input).is_ok(), "{input}");
    }
}

/// normalize_test.go `TestParseDockerRef`: `ParseDockerRef` is `ParseNormalizedNamed` plus
/// "digest wins over tag, else default tag `latest`", rebuilt here from our result.
#[test]
fn normalize_test_test_parse_docker_ref() {
    let d = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
    let docker_ref = |r: &ImageRef| match &r.digest {
        Some(d) => format!("{}@{d}", r.name()),
        None => format!("{}:{}", r.name(), r.tag.unwrap_or("latest")),
    };
    for (name, input, expected) in [
        (
            "nothing",
            "busybox".to_string(),
            "docker.io/library/busybox:latest".to_string(),
        ),
        (
            "tag only",
            "busybox:latest".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "digest only",
            format!("busybox@{d}"),
            format!("docker.io/library/busybox@{d}"),
        ),
        (
            "path only",
            "library/busybox".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "hostname only",
            "docker.io/busybox".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "no tag",
            "docker.io/library/busybox".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "no path",
            "docker.io/busybox:latest".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "no hostname",
            "library/busybox:latest".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "full reference with tag",
            "docker.io/library/busybox:latest".into(),
            "docker.io/library/busybox:latest".into(),
        ),
        (
            "gcr reference without tag",
            "gcr.io/library/busybox".into(),
            "gcr.io/library/busybox:latest".into(),
        ),
        (
            "both tag and digest",
            format!("gcr.io/library/busybox:latest@{d}"),
            format!("gcr.io/library/busybox@{d}"),
        ),
    ] {
        let r = parse(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(docker_ref(&r), expected, "{name}");
        assert!(go_parse(&expected).is_ok(), "{name}: output must parse");
    }
}

/// regexp_test.go `TestDomainRegexp` (`^domainAndPort$`). Ports are any digits and the
/// IPv6 literal is any hex digits and colons, as upstream's comments say ("will fail in
/// validation" happens when connecting, not when parsing).
#[test]
fn regexp_test_test_domain_regexp() {
    for (input, want) in [
        ("test.com", true),
        ("test.com:10304", true),
        ("test.com:http", false),
        ("localhost", true),
        ("localhost:8080", true),
        ("a", true),
        ("a.b", true),
        ("ab.cd.com", true),
        ("a-b.com", true),
        ("-ab.com", false),
        ("ab-.com", false),
        ("ab.c-om", true),
        ("ab.-com", false),
        ("ab.com-", false),
        ("0101.com", true),
        ("001a.com", true),
        ("b.gbc.io:443", true),
        ("b.gbc.io", true),
        ("xn--n3h.com", true),
        ("Asdf.com", true),
        ("192.168.1.1:75050", true),
        ("192.168.1.1:750050", true),
        ("[fd00:1:2::3]:75050", true),
        ("[fd00:1:2::3]75050", false),
        ("[fd00:1:2::3]::75050", false),
        ("[fd00:1:2::3%eth0]:75050", false),
        ("[fd00123123123]:75050", true),
        ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:75050", true),
        ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:750505", true),
        ("fd00:1:2::3:75050", false),
    ] {
        assert_eq!(validate_domain(input).is_ok(), want, "{input}");
    }
}

/// regexp_test.go `TestFullNameRegexp` (`anchoredNameRegexp`): match, and the
/// (domain, remote name) submatches.
#[test]
fn regexp_test_test_full_name_regexp() {
    let long = format!("{}a", "a/".repeat(128));
    let long_rest = format!("{}a", "a/".repeat(127));
    let cases: Vec<(&str, Option<(&str, &str)>)> = vec![
        ("", None),
        ("short", Some(("", "short"))),
        ("simple/name", Some(("simple", "name"))),
        ("library/ubuntu", Some(("library", "ubuntu"))),
        ("docker/stevvooe/app", Some(("docker", "stevvooe/app"))),
        (
            "aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb",
            Some(("aa", "aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb")),
        ),
        ("aa/aa/bb/bb/bb", Some(("aa", "aa/bb/bb/bb"))),
        ("a/a/a/a", Some(("a", "a/a/a"))),
        ("a/a/a/a/", None),
        ("a//a/a", None),
        ("a", Some(("", "a"))),
        ("a/aa", Some(("a", "aa"))),
        ("a/aa/a", Some(("a", "aa/a"))),
        ("foo.com", Some(("", "foo.com"))),
        ("foo.com/", None),
        ("foo.com:8080/bar", Some(("foo.com:8080", "bar"))),
        ("foo.com:http/bar", None),
        ("foo.com/bar", Some(("foo.com", "bar"))),
        ("foo.com/bar/baz", Some(("foo.com", "bar/baz"))),
        ("localhost:8080/bar", Some(("localhost:8080", "bar"))),
        (
            "sub-dom1.foo.com/bar/baz/quux",
            Some(("sub-dom1.foo.com", "bar/baz/quux")),
        ),
        ("blog.foo.com/bar/baz", Some(("blog.foo.com", "bar/baz"))),
        ("a^a", None),
        ("aa/asdf$$^/aa", None),
        ("asdf$$^/aa", None),
        ("aa-a/a", Some(("aa-a", "a"))),
        (&long, Some(("a", &long_rest))),
        ("a-/a/a/a", None),
        ("foo.com/a-/a/a", None),
        ("-foo/bar", None),
        ("foo/bar-", None),
        ("foo-/bar", None),
        ("foo/-bar", None),
        ("_foo/bar", None),
        ("foo_bar", Some(("", "foo_bar"))),
        ("foo_bar.com", Some(("", "foo_bar.com"))),
        ("foo_bar.com:8080", None),
        ("foo_bar.com:8080/app", None),
        ("foo.com/foo_bar", Some(("foo.com", "foo_bar"))),
        ("____/____", None),
        ("_docker/_docker", None),
        ("docker_/docker_", None),
        (
            "b.gcr.io/test.example.com/my-app",
            Some(("b.gcr.io", "test.example.com/my-app")),
        ),
        ("xn--n3h.com/myimage", Some(("xn--n3h.com", "myimage"))),
        ("xn--7o8h.com/myimage", Some(("xn--7o8h.com", "myimage"))),
        (
            "example.com/xn--7o8h.com/myimage",
            Some(("example.com", "xn--7o8h.com/myimage")),
        ),
        (
            "example.com/some_separator__underscore/myimage",
            Some(("example.com", "some_separator__underscore/myimage")),
        ),
        ("example.com/__underscore/myimage", None),
        ("example.com/..dots/myimage", None),
        ("example.com/.dots/myimage", None),
        ("example.com/nodouble..dots/myimage", None),
        ("docker./docker", None),
        (".docker/docker", None),
        ("docker-/docker", None),
        ("-docker/docker", None),
        ("do..cker/docker", None),
        ("do__cker:8080/docker", None),
        ("do__cker/docker", Some(("", "do__cker/docker"))),
        (
            "registry.io/foo/project--id.module--name.ver---sion--name",
            Some((
                "registry.io",
                "foo/project--id.module--name.ver---sion--name",
            )),
        ),
        ("Asdf.com/foo/bar", Some(("Asdf.com", "foo/bar"))),
        ("Foo/FarB", None),
    ];
    for (input, want) in cases {
        assert_eq!(go_name(input), want, "{input}");
    }
}

/// regexp_test.go `TestReferenceRegexp` (`referenceRegexp`): match, and the (name, tag,
/// digest) submatches. `go_parse` also validates digests with go-digest and applies the
/// length limit; no vector here is affected by either.
#[test]
fn regexp_test_test_reference_regexp() {
    let d = "sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912";
    // (input, Some((name, tag, digest))), "" for absent; None = no match
    type Want = Option<(String, &'static str, &'static str)>;
    let cases: Vec<(String, Want)> = vec![
        (
            "registry.com:8080/myapp:tag".into(),
            Some(("registry.com:8080/myapp".into(), "tag", "")),
        ),
        (
            format!("registry.com:8080/myapp@{d}"),
            Some(("registry.com:8080/myapp".into(), "", d)),
        ),
        (
            format!("registry.com:8080/myapp:tag2@{d}"),
            Some(("registry.com:8080/myapp".into(), "tag2", d)),
        ),
        ("registry.com:8080/myapp@sha256:badbadbadbad".into(), None),
        ("registry.com:8080/myapp:invalid~tag".into(), None),
        ("bad_hostname.com:8080/myapp:tag".into(), None),
        (
            format!("localhost:8080@{d}"),
            Some(("localhost".into(), "8080", d)),
        ),
        (
            format!("localhost:8080/name@{d}"),
            Some(("localhost:8080/name".into(), "", d)),
        ),
        (format!("localhost:http/name@{d}"), None),
        (format!("localhost@{d}"), Some(("localhost".into(), "", d))),
        ("registry.com:8080/myapp@bad".into(), None),
        ("registry.com:8080/myapp@2bad".into(), None),
    ];
    for (input, want) in cases {
        let got = go_parse(&input).ok().map(|(domain, path, tag, digest)| {
            let name = if domain.is_empty() {
                path.to_string()
            } else {
                format!("{domain}/{path}")
            };
            (name, tag.unwrap_or(""), digest.unwrap_or(""))
        });
        assert_eq!(got, want, "{input}");
    }
}

/// regexp_test.go `TestIdentifierRegexp` (`anchoredIdentifierRegexp`).
#[test]
fn regexp_test_test_identifier_regexp() {
    for (input, want) in [
        (
            "da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821",
            true,
        ),
        (
            "7EC43B381E5AEFE6E04EFB0B3F0693FF2A4A50652D64AEC573905F2DB5889A1C",
            false,
        ),
        (
            "da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf",
            false,
        ),
        (
            "sha256:da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821",
            false,
        ),
        (
            "da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf98218482",
            false,
        ),
    ] {
        assert_eq!(is_identifier(input), want, "{input}");
        assert_eq!(parse(input) == Err(ImageError::HexOnly), want, "{input}");
    }
}

/// The loose IPv6 forms upstream's grammar accepts, and the embedded-IPv4 form it
/// rejects, through the kubelet's entry point (regexp.go `ipv6address`; see
/// regexp_test.go `TestDomainRegexp` and normalize_test.go `TestValidateReferenceName`).
#[test]
fn ipv6_literals_follow_the_upstream_grammar() {
    for (input, domain) in [
        ("[fd00123123123]:75050/x", "[fd00123123123]:75050"),
        ("[1::2::3]/x", "[1::2::3]"),
        ("[FD00::1]/x", "[FD00::1]"),
    ] {
        assert_eq!(parse(input).map(|r| r.domain), Ok(domain));
    }
    for input in [
        "[2001:db8:3:4::192.0.2.33]:5000/x",
        "[::ffff:192.0.2.1]/x",
        "[]/x",
        "[fe80::1%25eth0]/x",
    ] {
        assert!(parse(input).is_err(), "{input}");
    }
}
