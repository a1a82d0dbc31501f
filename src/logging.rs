//! Log output that a tenant's text cannot disguise. The JSON format escapes control
//! characters itself, but writes other characters as they are, and the Unicode
//! bidirectional controls among them (U+202E RIGHT-TO-LEFT OVERRIDE and friends) make a
//! terminal or log viewer show a line's text in another order than it is. They can only
//! come from request-derived values (a Pod's `generateName`, a review's uid), so the
//! writer spells each one as a JSON `\uXXXX` escape: the same JSON value, inert on screen.

use std::io::{self, Write};

/// The bidirectional formatting characters (Unicode's `Bidi_Control` property): ALM,
/// LRM, RLM, LRE..RLO, LRI..PDI.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Wraps a writer of JSON lines, escaping bidirectional controls as `\uXXXX`. Only valid
/// inside JSON strings, which is the only place a JSON line can hold such a character.
pub(crate) struct BidiEscaping<W>(pub(crate) W);

impl<W: Write> Write for BidiEscaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing-subscriber hands over each event whole; a buffer that is not valid
        // UTF-8 (a split sequence) is passed through unchanged rather than altered.
        match std::str::from_utf8(buf) {
            Ok(text) if text.chars().any(is_bidi_control) => {
                let mut out = String::with_capacity(text.len() + 16);
                for c in text.chars() {
                    if is_bidi_control(c) {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    } else {
                        out.push(c);
                    }
                }
                self.0.write_all(out.as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(line: &str) -> String {
        let mut w = BidiEscaping(Vec::new());
        w.write_all(line.as_bytes()).unwrap();
        String::from_utf8(w.0).unwrap()
    }

    #[test]
    fn bidi_controls_become_json_escapes_and_the_value_reads_back() {
        let value = "web-\u{202E}gpj.exe\u{2066}x\u{200F}";
        let line = serde_json::json!({"pod": value}).to_string();
        let out = escaped(&line);
        assert!(!out.chars().any(is_bidi_control), "{out:?}");
        assert!(out.contains(r"\u202e") && out.contains(r"\u2066") && out.contains(r"\u200f"));
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["pod"], value);
    }

    #[test]
    fn other_text_passes_unchanged() {
        for line in [r#"{"pod":"web-é-日本"}"#, "plain\n", ""] {
            assert_eq!(escaped(line), line);
        }
    }
}
