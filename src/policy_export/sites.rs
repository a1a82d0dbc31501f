//! The variables every exported policy starts with: the pod's image sites (as
//! `admission::pod` lists them), each image normalised as `image::parse` normalises it
//! (with the same error messages), and the registry entries that apply to each image in
//! this namespace (as `Config::entries_for` answers).
//!
//! CEL has no functions of its own and no `let`, so each step is a variable holding one
//! list with an element per site, read by index in the next step (`variables.x[i]`).

use super::cel::{self, all, any, any_glob, glob_test, lit};
use crate::config::Config;
use crate::matcher::{Pattern, PatternParts};

/// Which images a policy judges, as `mutate` and `validate` choose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// On create every site; on an ephemeral-container update only the new ones.
    Mutate,
    /// As `Mutate`, and on other updates the images new to the pod.
    Validate,
}

/// The API server's annotation map of the object, tested for presence first.
pub(crate) const HAS_ANNOTATIONS: &str = "has(object.metadata.annotations)";
pub(crate) const ANNOTATIONS: &str = "object.metadata.annotations";

/// A site record: every value a string, since CEL map literals must be homogeneous.
fn container_sites(obj: &str, list: &str, noun: &str, filter: Option<&str>) -> String {
    let record = format!(
        "{{'list': {}, 'i': string(i), 'noun': {}, 'name': string(has(c.name) ? c.name : ''), \
         'image': string(has(c.image) ? c.image : ''), \
         'pp': string(has(c.imagePullPolicy) ? c.imagePullPolicy : ''), 'field': 'imagePullPolicy'}}",
        lit(list),
        lit(noun)
    );
    let body = match filter {
        Some(f) => format!("{obj}.spec.{list}.transformList(i, c, {f}, {record})"),
        None => format!("{obj}.spec.{list}.transformList(i, c, {record})"),
    };
    format!("(has({obj}.spec.{list}) ? {body} : [])")
}

fn volume_sites(obj: &str) -> String {
    format!(
        "(has({obj}.spec.volumes) ? {obj}.spec.volumes.transformList(i, c, has(c.image), \
         {{'list': 'volumes', 'i': string(i), 'noun': 'image volume', 'name': string(has(c.name) ? c.name : ''), \
         'image': string(has(c.image.reference) ? c.image.reference : ''), \
         'pp': string(has(c.image.pullPolicy) ? c.image.pullPolicy : ''), 'field': 'pullPolicy'}}) : [])"
    )
}

/// Every site of `obj`, in `PodDoc::sites` order; ephemeral containers filtered by `eph`.
fn all_sites(obj: &str, eph: Option<&str>) -> String {
    [
        container_sites(obj, "initContainers", "init container", None),
        container_sites(obj, "containers", "container", None),
        container_sites(obj, "ephemeralContainers", "ephemeral container", eph),
        volume_sites(obj),
    ]
    .join(" + ")
}

/// `request.subResource`, which is absent (not empty) on a plain create.
pub(crate) const SUBRESOURCE: &str = "(has(request.subResource) ? request.subResource : '')";

/// A sound, cheap test that `image::parse` accepts an image: either one lower-case path
/// component (a Docker Hub short name), or a first component that is a host of
/// lower-case DNS labels with an optional port — or, without `.` or `:`, a path
/// component, as the parser reads it — followed by lower-case path components; then an
/// optional tag and sha256 digest. Callers add: at most 200 characters (the path stays
/// under 255 even with `library/`) and not 64 hex digits alone (an image id). Everything
/// it accepts parses; what it refuses may still parse (IPv6 hosts, other digests) and is
/// then judged in full.
const PLAINLY_VALID: &str = concat!(
    "^(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*",
    "|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?",
    "|[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*)",
    "(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+)",
    "(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
);

/// True when every image of the object passes [`PLAINLY_VALID`]: then no image warning
/// can arise, and a policy that only warns about images need not run (match conditions
/// cannot read variables, so this reads the object directly).
pub(crate) fn all_plainly_valid() -> String {
    let ok = |e: &str| {
        format!(
            "({e}.matches({}) && size({e}) <= 200 && !{e}.matches('^[0-9a-f]{{64}}$'))",
            lit(PLAINLY_VALID)
        )
    };
    let list = |l: &str| {
        format!(
            "(!has(object.spec.{l}) || object.spec.{l}.all(c, has(c.image) && {}))",
            ok("c.image")
        )
    };
    format!(
        "({} && {} && {} && (!has(object.spec.volumes) || object.spec.volumes.all(v, !has(v.image) ||          (has(v.image.reference) && {}))))",
        list("initContainers"),
        list("containers"),
        list("ephemeralContainers"),
        ok("v.image.reference")
    )
}

/// `(name, expression)` pairs, in the order they must be declared.
pub(crate) type Vars = Vec<(String, String)>;

fn push(v: &mut Vars, name: &str, expr: impl Into<String>) {
    v.push((name.to_string(), expr.into()));
}

/// The sites, their normalised references and the entries in scope for each.
pub(crate) fn prelude(cfg: &Config, which: Which) -> Vars {
    let mut v = Vars::new();
    push(
        &mut v,
        "oldEphemeral",
        "oldObject != null && has(oldObject.spec.ephemeralContainers) ? \
         oldObject.spec.ephemeralContainers.map(c, has(c.name) ? c.name : '') : []",
    );
    let new_eph = "!((has(c.name) ? c.name : '') in variables.oldEphemeral)";
    let create = all_sites("object", None);
    let ephemeral = container_sites(
        "object",
        "ephemeralContainers",
        "ephemeral container",
        Some(new_eph),
    );
    let sites = match which {
        Which::Mutate => format!(
            "request.operation == 'CREATE' ? {create} : \
             (has(request.subResource) ? request.subResource : '') == 'ephemeralcontainers' ? {ephemeral} : []"
        ),
        Which::Validate => {
            push(
                &mut v,
                "oldImages",
                format!(
                    "oldObject == null ? [] : ({}).map(s, s.image)",
                    all_sites("oldObject", None)
                ),
            );
            format!(
                "request.operation == 'CREATE' ? {create} : \
                 (has(request.subResource) ? request.subResource : '') == 'ephemeralcontainers' ? {ephemeral} : \
                 (has(request.subResource) ? request.subResource : '') == '' ? ({create}).filter(s, !(s.image in variables.oldImages)) : []"
            )
        }
    };
    push(&mut v, "sites", sites);
    normalise(&mut v);
    push(&mut v, "matched", matched(cfg));
    v
}

/// `image::parse`, step by step; `err` holds its error message, or `''`.
fn normalise(v: &mut Vars) {
    // splitDockerDomain: the first '/'-separated component decides.
    push(
        v,
        "first",
        "variables.sites.map(s, s.image.contains('/') ? s.image.substring(0, s.image.indexOf('/')) : '')",
    );
    push(
        v,
        "hostful",
        "variables.sites.transformList(i, s, s.image.contains('/') && \
         (variables.first[i] == 'localhost' || variables.first[i].contains('.') || variables.first[i].contains(':')))",
    );
    push(
        v,
        "domain",
        "variables.sites.transformList(i, s, variables.hostful[i] ? \
         (variables.first[i] == 'index.docker.io' ? 'docker.io' : variables.first[i]) : 'docker.io')",
    );
    push(
        v,
        "rem",
        "variables.sites.transformList(i, s, variables.hostful[i] ? \
         s.image.substring(size(variables.first[i]) + 1) : s.image)",
    );
    push(
        v,
        "digest",
        "variables.rem.map(r, r.contains('@') ? r.substring(r.indexOf('@') + 1) : '')",
    );
    push(
        v,
        "nameTag",
        "variables.rem.map(r, r.contains('@') ? r.substring(0, r.indexOf('@')) : r)",
    );
    push(
        v,
        "name",
        "variables.nameTag.map(n, n.contains(':') ? n.substring(0, n.indexOf(':')) : n)",
    );
    push(
        v,
        "path",
        "variables.name.transformList(i, n, variables.domain[i] == 'docker.io' && !n.contains('/') ? 'library/' + n : n)",
    );
    push(v, "digestErr", digest_errors());
    push(
        v,
        "tagErr",
        format!(
            "variables.nameTag.map(n, !n.contains(':') ? '' : \
             n.substring(n.indexOf(':') + 1).matches({}) ? '' : \
             'invalid tag ' + {})",
            lit(TAG_RE),
            cel::debug_quote("n.substring(n.indexOf(':') + 1)")
        ),
    );
    push(
        v,
        "badComponents",
        format!(
            "variables.name.map(n, n.split('/').filter(c, !c.matches({})))",
            lit(COMPONENT_RE)
        ),
    );
    let q_first = cel::debug_quote("variables.first[i]");
    let q_domain = cel::debug_quote("variables.domain[i]");
    let q_comp = cel::debug_quote("variables.badComponents[i][0]");
    push(
        v,
        "err",
        format!(
            "variables.sites.transformList(i, s, \
             s.image == '' ? 'empty image reference' : \
             s.image.trim() != s.image ? 'image reference has leading or trailing whitespace' : \
             s.image.matches('^[0-9a-f]{{64}}$') ? 'cannot specify 64-byte hexadecimal strings as an image reference' : \
             (s.image.contains('/') && !variables.hostful[i] && variables.first[i].matches('[A-Z]')) ? \
               'registry host ' + {q_first} + ' is ambiguous (upper-case first component)' : \
             (variables.rem[i].contains(':') ? variables.rem[i].substring(0, variables.rem[i].indexOf(':')) : variables.rem[i]).matches('[A-Z]') ? \
               'repository name must be lowercase' : \
             !variables.domain[i].matches({domain_re}) ? 'invalid registry host ' + {q_domain} : \
             variables.digestErr[i] != '' ? variables.digestErr[i] : \
             variables.tagErr[i] != '' ? variables.tagErr[i] : \
             size(variables.badComponents[i]) > 0 ? 'invalid repository path component ' + {q_comp} : \
             size(variables.path[i]) > 255 ? 'repository name must not be longer than 255 characters' : '')",
            domain_re = lit(DOMAIN_RE),
        ),
    );
    // `split_host_port`, then the host lower-cased and split into labels (a bracketed
    // IPv6 host is one label), as `matcher` compares them.
    push(
        v,
        "host",
        "variables.domain.map(d, (d.startsWith('[') ? (d.contains(']') ? d.substring(0, d.indexOf(']') + 1) : d) : \
         (d.contains(':') ? d.substring(0, d.lastIndexOf(':')) : d)).lowerAscii())",
    );
    push(
        v,
        "port",
        "variables.domain.map(d, d.startsWith('[') ? (d.contains(']:') ? d.substring(d.indexOf(']:') + 2) : '') : \
         (d.contains(':') ? d.substring(d.lastIndexOf(':') + 1) : ''))",
    );
    push(
        v,
        "labels",
        "variables.host.map(h, h.startsWith('[') ? [h] : h.split('.'))",
    );
}

/// `[\w][\w.-]{0,127}` (`distribution/reference` tag).
const TAG_RE: &str = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";
/// A path component: `[a-z0-9]+ (separator [a-z0-9]+)*`, separators `.`, `_`, `__`, `-+`.
const COMPONENT_RE: &str = "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*$";
/// `domainAndPort`: a bracketed IPv6 literal or dot-separated DNS labels, optional port.
const DOMAIN_RE: &str = "^(\\[[0-9A-Fa-f:]+\\]|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*)(:[0-9]+)?$";

/// go-digest's `Parse` as `image::validate_digest` words it.
fn digest_errors() -> String {
    let alg = "d.substring(0, d.indexOf(':'))";
    let hex = "d.substring(d.indexOf(':') + 1)";
    let invalid = format!("'invalid digest ' + {}", cel::debug_quote("d"));
    format!(
        "variables.digest.transformList(i, d, !variables.rem[i].contains('@') ? '' : \
         !d.contains(':') ? {invalid} : \
         ({alg} == 'sha256' || {alg} == 'sha384' || {alg} == 'sha512') ? \
           ((({alg} == 'sha256' && {hex}.matches('^[0-9a-f]{{64}}$')) || \
             ({alg} == 'sha384' && {hex}.matches('^[0-9a-f]{{96}}$')) || \
             ({alg} == 'sha512' && {hex}.matches('^[0-9a-f]{{128}}$'))) ? '' : {invalid}) : \
         ({alg}.matches('^[A-Za-z]') && size(bytes({hex})) >= 32) ? \
           'unsupported digest algorithm ' + {} : {invalid})",
        cel::debug_quote(alg)
    )
}

/// Whether pattern `p` matches the image of site `i` (`Pattern::matches`).
pub(crate) fn pattern_test(p: &Pattern, i: &str) -> String {
    match p.parts() {
        PatternParts::Any => "true".into(),
        PatternParts::Host { labels, port, path } => {
            let mut t = vec![format!("size(variables.labels[{i}]) == {}", labels.len())];
            for (k, l) in labels.iter().enumerate() {
                t.push(glob_test(&format!("variables.labels[{i}][{k}]"), l));
            }
            t.push(format!(
                "variables.port[{i}] == {}",
                lit(port.unwrap_or(""))
            ));
            if !path.is_empty() {
                t.push(format!(
                    "(variables.path[{i}] == {} || variables.path[{i}].startsWith({}))",
                    lit(path),
                    lit(&format!("{path}/"))
                ));
            }
            all(t)
        }
    }
}

/// `Config::entries_for` per site: indexes of the entries with a matching pattern whose
/// namespace scope holds this namespace, in config order (the matcher's order).
fn matched(cfg: &Config) -> String {
    let mut terms = Vec::new();
    for (k, r) in cfg.registries.iter().enumerate() {
        let hit = any(r.patterns.iter().map(|p| pattern_test(p, "i")));
        let scope = &r.namespaces;
        let mut s = vec![hit];
        if !scope.include.is_empty() {
            s.push(any_glob("request.namespace", &scope.include));
        }
        if !scope.exclude.is_empty() {
            s.push(format!(
                "!{}",
                any_glob("request.namespace", &scope.exclude)
            ));
        }
        if let Some(sel) = &scope.selector {
            s.push(cel::selector(
                sel,
                "(namespaceObject != null && has(namespaceObject.metadata.labels))",
                "namespaceObject.metadata.labels",
            ));
        }
        terms.push(format!("({} ? {k} : -1)", all(s)));
    }
    if terms.is_empty() {
        terms.push("-1".into());
    }
    format!(
        "variables.sites.transformList(i, s, variables.err[i] != '' ? [-1].filter(x, x >= 0) : \
         [{}].filter(x, x >= 0))",
        terms.join(", ")
    )
}

/// `site.describe()`: `container "app"`.
pub(crate) fn describe(s: &str) -> String {
    format!("{s}.noun + ' ' + {}", cel::quote(&format!("{s}.name")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The gate must never call an image plainly valid that `image::parse` refuses (the
    /// warnings policy would then stay silent where the webhook warns).
    fn plainly_valid(image: &str) -> bool {
        let re = regex::Regex::new(PLAINLY_VALID).unwrap();
        re.is_match(image)
            && image.chars().count() <= 200
            && !regex::Regex::new("^[0-9a-f]{64}$").unwrap().is_match(image)
    }

    #[test]
    fn the_gate_accepts_common_images_and_refuses_the_tricky_ones() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/nginx",
            "myorg/app:2",
            "ghcr.io/acme/app:1.2",
            "localhost:5000/app",
            "localhost/app",
            "demo-tcr.tencentcloudcr.com/docker/getting-started:latest",
            "registry.k8s.io/pause:3.10@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(plainly_valid(ok), "{ok}");
            assert!(crate::image::parse(ok).is_ok(), "{ok}");
        }
        for tricky in [
            "my_reg.io/app",
            "a.b_c/x",
            "a-/x",
            "Nginx",
            "MyUser/app",
            "ghcr.io/acme/App",
            "ghcr.io/acme//app",
            "[::1]:5000/app",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(!plainly_valid(tricky), "{tricky}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn whatever_the_gate_accepts_parses(
            prefix in prop::sample::select(vec!["", "ghcr.io/", "localhost:5000/", "my_reg.io/", "a-/",
                "a.b_c/", "A.io/", "foo/", "a:/", "x.y:1/", "localhost/", "a__b/", "a---b.c/"]),
            comps in prop::collection::vec("[a-z0-9._-]{1,8}", 1..4),
            tag in prop::option::of("[A-Za-z0-9._:-]{0,8}"),
            digest in prop::option::of("[0-9a-f]{62,66}"),
        ) {
            let mut image = format!("{prefix}{}", comps.join("/"));
            if let Some(t) = tag {
                image.push(':');
                image.push_str(&t);
            }
            if let Some(d) = digest {
                image.push_str("@sha256:");
                image.push_str(&d);
            }
            if plainly_valid(&image) {
                prop_assert!(crate::image::parse(&image).is_ok(), "{}", image);
            }
        }
    }
}
