//! Any text as registry patterns (every line but the last) and an image reference (the
//! last line). Never a panic; the production `Matcher` index and matching every pattern
//! directly (`Pattern::matches`, the kubelet's rule) agree on every input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullsecret_injector::image;
use pullsecret_injector::matcher::{Matcher, Pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let Some(reference) = lines.pop() else {
        return;
    };
    let Ok(img) = image::parse(reference) else {
        return;
    };
    let mut index = Matcher::new();
    let mut patterns = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Ok(p) = Pattern::parse(line) {
            index.insert(p.clone(), i);
            patterns.push((i, p));
        }
    }
    let mut by_index = index.matches(&img);
    by_index.sort_unstable();
    by_index.dedup();
    let direct: Vec<usize> = patterns
        .iter()
        .filter(|(_, p)| p.matches(&img))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(by_index, direct, "index and direct match disagree for {reference:?}");
});
