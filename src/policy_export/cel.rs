//! CEL building blocks: literals, globs and label selectors written as CEL, and the
//! message helpers that reproduce `admission::text` for the strings they can.
//!
//! Everything here is an expression *string*; the API server compiles and type-checks it
//! when the policy is created, and `tests/e2e_policy_export.rs` proves the result equal
//! to the webhook's through a real one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A CEL string literal (single-quoted; `\`, `'` and control characters escaped).
pub(crate) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A CEL list literal of strings.
pub(crate) fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| lit(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// `a || b || …`, or `false` for none.
pub(crate) fn any(terms: impl IntoIterator<Item = String>) -> String {
    let terms: Vec<String> = terms.into_iter().collect();
    if terms.is_empty() {
        "false".into()
    } else {
        format!("({})", terms.join(" || "))
    }
}

/// `a && b && …`, or `true` for none.
pub(crate) fn all(terms: impl IntoIterator<Item = String>) -> String {
    let terms: Vec<String> = terms.into_iter().collect();
    if terms.is_empty() {
        "true".into()
    } else {
        format!("({})", terms.join(" && "))
    }
}

/// RE2 for a `*` glob (`matcher::glob`: `*` is any run of characters, the rest literal),
/// anchored at both ends.
pub(crate) fn glob_regex(glob: &str) -> String {
    let parts: Vec<String> = glob.split('*').map(regex_escape).collect();
    format!("^{}$", parts.join(".*"))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `value` matches one glob: equality when the glob has no `*`, a regex otherwise.
pub(crate) fn glob_test(value: &str, glob: &str) -> String {
    if glob.contains('*') {
        format!("{value}.matches({})", lit(&glob_regex(glob)))
    } else {
        format!("{value} == {}", lit(glob))
    }
}

/// `value` matches any of `globs` (`false` for none).
pub(crate) fn any_glob(value: &str, globs: &[String]) -> String {
    any(globs.iter().map(|g| glob_test(value, g)))
}

/// A label selector over `labels` (a CEL expression of a `map(string, string)` that may
/// be absent: `has_labels` tests for it), with Kubernetes' semantics: `NotIn` and
/// `DoesNotExist` hold when the key is absent.
pub(crate) fn selector(sel: &LabelSelector, has_labels: &str, labels: &str) -> String {
    let present = |k: &str| format!("({has_labels} && {} in {labels})", lit(k));
    let value = |k: &str| format!("{labels}[{}]", lit(k));
    let mut terms = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        terms.push(format!("({} && {} == {})", present(k), value(k), lit(v)));
    }
    for e in sel.match_expressions.iter().flatten() {
        let k = e.key.as_str();
        let values = list(e.values.iter().flatten());
        terms.push(match e.operator.as_str() {
            "In" => format!("({} && {} in {values})", present(k), value(k)),
            "NotIn" => format!("!({} && {} in {values})", present(k), value(k)),
            "Exists" => present(k),
            // The config compiler rejects any other operator before this runs.
            _ => format!("!{}", present(k)),
        });
    }
    all(terms)
}

/// Rust's `{:?}` quoting of a string (`"…"`, with `\`, `"`, tab, CR, LF and NUL
/// escaped), for a CEL string expression. Other control and invisible characters are
/// left as they are (CEL has no code-point access); the README lists this difference.
pub(crate) fn debug_quote(e: &str) -> String {
    format!("'\"' + {} + '\"'", debug_escape(e))
}

/// The escaping part of [`debug_quote`], without the quotes.
pub(crate) fn debug_escape(e: &str) -> String {
    format!(
        r#"{e}.replace('\\', '\\\\').replace('"', '\\"').replace('\t', '\\t').replace('\r', '\\r').replace('\n', '\\n').replace('\u0000', '\\0')"#
    )
}

/// `text::clip(e, FIELD_MAX)` / `text::escape`'s bound: at most 256 bytes, cut with `…`.
/// Exact for ASCII (CEL's `substring` counts code points, not bytes).
pub(crate) fn bound(e: &str) -> String {
    format!("(size(bytes({e})) <= 256 ? {e} : {e}.substring(0, 253) + '…')")
}

/// `text::quote(e)`: the `{:?}`-escaped text bounded, then quoted.
pub(crate) fn quote(e: &str) -> String {
    format!("'\"' + {} + '\"'", bound(&format!("({})", debug_escape(e))))
}

/// `text::escape(e, FIELD_MAX)`: escaped and bounded, without quotes.
pub(crate) fn escape(e: &str) -> String {
    bound(&format!("({})", debug_escape(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_controls() {
        assert_eq!(lit("a'b\\c\n"), r"'a\'b\\c\n'");
        assert_eq!(lit("…"), "'…'");
    }

    #[test]
    fn globs_become_anchored_regexes() {
        assert_eq!(glob_regex("team-*"), "^team-.*$");
        assert_eq!(glob_regex("*.io"), "^.*\\.io$");
        assert_eq!(
            any_glob("x", &["kube-system".into()]),
            "(x == 'kube-system')"
        );
        assert_eq!(any_glob("x", &[]), "false");
    }
}
