//! JUnit XML for `test --junit FILE`: the format CI systems (GitLab, Jenkins, GitHub
//! test reporters) read. One `<testsuite>` per suite file, one `<testcase>` per test.

use std::fmt::Write;

use super::suite::SuiteResult;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all, not even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\t') => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn render(suites: &[SuiteResult]) -> String {
    let tests: usize = suites.iter().map(|s| s.cases.len().max(1)).sum();
    let failures: usize = suites
        .iter()
        .map(|s| s.cases.iter().filter(|c| !c.failures.is_empty()).count())
        .sum();
    let errors = suites.iter().filter(|s| s.error.is_some()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"pullsecret-injector\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">"
    );
    for s in suites {
        let f = s.cases.iter().filter(|c| !c.failures.is_empty()).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{}\">",
            esc(&s.name),
            esc(&s.file),
            s.cases.len().max(1),
            usize::from(s.error.is_some())
        );
        if let Some(e) = &s.error {
            let _ = writeln!(
                x,
                "    <testcase classname=\"{}\" name=\"load suite\">\n      <error message=\"{}\"/>\n    </testcase>",
                esc(&s.name),
                esc(e)
            );
        }
        for c in &s.cases {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\"",
                esc(&s.name),
                esc(&c.name)
            );
            if c.failures.is_empty() {
                x.push_str("/>\n");
            } else {
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    esc(&c.failures[0]),
                    esc(&c.failures.join("\n"))
                );
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(esc("a<b>&\"'\u{1b}"), "a&lt;b&gt;&amp;&quot;&apos;\\u{1b}");
    }
}
