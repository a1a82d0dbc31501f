//! `--diff`: a unified diff of only what a command changed, so a reviewer sees exactly the
//! injected lines. Both sides are written by the same serializer, so formatting the input
//! differently from how we write it never shows up as a change.

use similar::TextDiff;

/// A unified diff (3 lines of context) with `a/NAME` and `b/NAME` headers; empty when
/// nothing changed.
pub(crate) fn unified(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    // `a//tmp/x.yaml` would read as a different path; git writes `a/tmp/x.yaml`.
    let name = name.trim_start_matches('/');
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_lines_are_marked() {
        let d = unified("x.yaml", "a: 1\nb: 2\n", "a: 1\nb: 2\nc: 3\n");
        assert!(d.starts_with("--- a/x.yaml\n+++ b/x.yaml\n"), "{d}");
        assert_eq!(d.lines().filter(|l| l.starts_with('+')).count(), 2, "{d}");
        assert_eq!(d.lines().filter(|l| l.starts_with('-')).count(), 1, "{d}");
        assert!(unified("x", "a\n", "a\n").is_empty());
    }
}
