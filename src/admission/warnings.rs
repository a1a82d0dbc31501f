//! Warnings the API server will actually deliver: it silently drops any warning holding a
//! control character, advises ≤120 characters, and truncates everything to 256 once the
//! total passes 4 KiB. Shaping them here keeps what tenants see predictable.

use std::collections::HashSet;

pub const WARNING_MAX: usize = 120;
/// At most this many warnings per response; the rest are summarised in one more line.
pub const WARNINGS_MAX: usize = 10;

/// Shortens to `max` characters on a char boundary.
pub fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Strips control characters, shortens, deduplicates and caps.
pub fn shape(warnings: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    let mut dropped = 0;
    for w in warnings {
        let w = fit(&w.replace(|c: char| c.is_control(), " "), WARNING_MAX);
        if !seen.insert(w.clone()) {
            continue;
        }
        if out.len() < WARNINGS_MAX {
            out.push(w);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        out.push(format!("... and {dropped} more warnings"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaping() {
        let long = "x".repeat(300);
        let mut ws = vec!["a\nb".to_string(), "a\nb".to_string(), long];
        ws.extend((0..20).map(|i| format!("w{i}")));
        let out = shape(ws);
        assert_eq!(out[0], "a b");
        assert_eq!(out[1].chars().count(), WARNING_MAX);
        assert_eq!(out.len(), WARNINGS_MAX + 1);
        assert_eq!(out.last().unwrap(), "... and 12 more warnings");
    }
}
