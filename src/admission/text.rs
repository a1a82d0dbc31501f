//! Tenant-supplied strings in the text we send back (denials, audit annotations).
//!
//! A Pod can hold thousands of containers and an image of megabytes, and Rust's `{:?}`
//! escaping turns each control character into up to ten. Unbounded, one Pod makes a
//! multi-megabyte `status.message` that the API server returns, audits and logs. So each
//! string is escaped and shortened here, and only the first offences are spelled out.
//! Short strings come out exactly as `{:?}` wrote them before, so normal messages keep
//! their wording byte for byte.

use std::fmt::Write;

/// Bytes of escaped text kept from one tenant-supplied string (image, container name,
/// registry, pull policy, parser detail), ellipsis included.
pub const FIELD_MAX: usize = 256;
/// Offences spelled out in one denial or audit annotation; the rest are only counted.
pub const OFFENCES_MAX: usize = 10;

const ELLIPSIS: char = '…';

/// `s` escaped as `{:?}` escapes it, without the quotes, in at most `max` bytes. A cut
/// ends in `…` and never falls inside an escape sequence.
pub fn escape(s: &str, max: usize) -> String {
    bounded(s, max, true)
}

/// Text that already quotes what it took from the tenant (a parser's error message) made
/// inert: control and invisible characters escaped as `{:?}` would, quotes and
/// backslashes left as they are so the message reads as written; bounded like `escape`.
pub fn clip(s: &str, max: usize) -> String {
    bounded(s, max, false)
}

fn bounded(s: &str, max: usize, escape_quotes: bool) -> String {
    let plain = |c: char| c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\');
    if s.len() <= max && s.chars().all(plain) {
        return s.to_string();
    }
    let room = max.saturating_sub(ELLIPSIS.len_utf8());
    let mut out = String::new();
    // Where to cut if the rest does not fit: the last escape boundary leaving room for `…`.
    let mut cut = 0;
    let mut one = String::new();
    let mut buf = [0u8; 4];
    for c in s.chars() {
        // The one-character string's Debug is exactly this character's part of the whole
        // string's Debug (`str`'s Debug escapes character by character).
        one.clear();
        if !escape_quotes && (c == '"' || c == '\\') {
            one.push(c);
        } else {
            let _ = write!(one, "{:?}", &*c.encode_utf8(&mut buf));
            one.pop();
            one.remove(0);
        }
        let piece = one.as_str();
        if out.len() + piece.len() > max {
            out.truncate(cut);
            out.push(ELLIPSIS);
            return out;
        }
        out.push_str(piece);
        if out.len() <= room {
            cut = out.len();
        }
    }
    out
}

/// `s` as `{:?}` quotes it, its escaped content shortened to `FIELD_MAX` bytes.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s, FIELD_MAX))
}

/// `items` joined with `"; "`, at most `OFFENCES_MAX` of them, then how many were left out.
pub fn join_capped<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = items.len();
    let mut out: Vec<&str> = items.take(OFFENCES_MAX).collect();
    let more = total - out.len();
    let summary = format!("... and {more} more offences");
    if more > 0 {
        out.push(&summary);
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_read_exactly_as_debug_does() {
        for s in [
            "",
            "evil.io/x:1",
            "Docker.io/Nginx",
            "a b",
            "say \"hi\"",
            "back\\slash",
            "it's",
            "é",
            "e\u{301}",
            "a\r\nb",
            "\u{1b}[31m",
            "\u{202e}rtl",
            "\u{0}\u{7f}\u{85}\u{2028}\u{feff}",
        ] {
            assert_eq!(quote(s), format!("{s:?}"), "{s:?}");
        }
    }

    #[test]
    fn long_strings_are_cut_between_escapes() {
        let cases: &[(&str, usize, &str)] = &[
            ("abcde", 5, "abcde"),
            ("abcdef", 5, "ab…"),
            ("abcdefgh", 6, "abc…"),
            ("ab\ncd", 6, "ab\\ncd"),
            ("ab\ncd", 5, "ab…"),
            ("ab\ncdef", 7, "ab\\n…"),
            ("a\u{1b}", 7, "a\\u{1b}"),
            ("a\u{1b}b", 7, "a…"),
            ("ééé", 6, "ééé"),
            ("éééé", 6, "é…"),
        ];
        for &(s, max, want) in cases {
            let got = escape(s, max);
            assert_eq!(got, want, "escape({s:?}, {max})");
        }
    }

    #[test]
    fn clipping_keeps_quotes_and_escapes_the_rest() {
        assert_eq!(clip(r#"invalid tag "a\"b""#, 64), r#"invalid tag "a\"b""#);
        assert_eq!(clip("bad \"\r\n\u{202e}\"", 64), r#"bad "\r\n\u{202e}""#);
        assert_eq!(clip(&"x".repeat(300), 10), "xxxxxxx…");
    }

    #[test]
    fn huge_input_is_bounded() {
        let s = "\u{1b}[2J\r\n".repeat(100_000);
        let q = quote(&s);
        assert!(q.len() <= FIELD_MAX + 2, "{}", q.len());
        assert!(q.ends_with("…\""));
        assert!(!q.chars().any(char::is_control));
    }

    #[test]
    fn joining() {
        let items: Vec<String> = (0..13).map(|i| format!("o{i}")).collect();
        let at = |n: usize| join_capped(items[..n].iter().map(String::as_str));
        assert_eq!(at(0), "");
        assert_eq!(at(3), "o0; o1; o2");
        assert_eq!(at(10), "o0; o1; o2; o3; o4; o5; o6; o7; o8; o9");
        assert_eq!(
            at(11),
            "o0; o1; o2; o3; o4; o5; o6; o7; o8; o9; ... and 1 more offences"
        );
        assert!(at(13).ends_with("o9; ... and 3 more offences"));
    }
}
