//! Allocation budgets of the hot path, counted by a global allocator that tallies the
//! current thread's allocations. Counts, not timings: they do not depend on the machine.
//!
//! - `image::parse` borrows from its input: nothing is allocated except the `library/`
//!   path of a Docker Hub short name.
//! - `Config::entries_for` answers on the stack for up to four matching entries.
//! - A review allocates the same whether the config has ten entries or a thousand.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pullsecret_injector::admission::{self, Endpoint, NamespaceFacts};
use pullsecret_injector::config::Config;
use pullsecret_injector::image;

mod support;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System` unchanged; the counter is a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Allocations (and reallocations) made on this thread while `f` runs, and its result.
fn counted<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

/// Four fixed entries, then `n - 4` that match none of the test's images.
fn config(n: usize) -> Config {
    let mut y = String::from(
        "registries:
  - name: tcr
    match: [demo-tcr.tencentcloudcr.com, \"*.tencentcloudcr.com\"]
    secret: tcr-pull
    alwaysPull: true
  - name: ghcr-acme
    match: [ghcr.io/acme]
    secret: ghcr-acme
  - name: ghcr-all
    match: [ghcr.io]
    secret: ghcr-all
  - name: local
    match: [\"localhost:5000\", \"[::1]:5000\"]
    secret: local-registry
",
    );
    for i in 4..n {
        y.push_str(&format!(
            "  - name: reg-{i}\n    match: [registry-{i}.corp.example.com, \"*.tenant-{i}.cr.example.net\", ghcr.io/org-{i}]\n    secret: pull-{i}\n"
        ));
    }
    Config::parse(&y, "config.yaml").expect("test config parses")
}

const QUALIFIED: [&str; 6] = [
    "ghcr.io/acme/app:1.2.3",
    "demo-tcr.tencentcloudcr.com/team/api@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "eu.tencentcloudcr.com/x/y/z:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "localhost:5000/tools/debug",
    "[::1]:5000/app:latest",
    "docker.io/bitnami/postgresql:16",
];

#[test]
fn parsing_a_qualified_reference_allocates_nothing() {
    for s in QUALIFIED {
        let (n, r) = counted(|| image::parse(s).map(|r| r.path.len()));
        assert!(r.is_ok(), "{s}");
        assert_eq!(n, 0, "image::parse({s:?}) allocated {n} times");
    }
}

#[test]
fn a_docker_hub_short_name_allocates_only_its_library_path() {
    for s in [
        "nginx",
        "nginx:1.25",
        "docker.io/redis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let (n, r) = counted(|| image::parse(s).map(|r| r.path.into_owned()));
        assert!(r.expect(s).starts_with("library/"), "{s}");
        assert_eq!(n, 1, "image::parse({s:?}) allocated {n} times");
    }
}

#[test]
fn matching_allocates_nothing_with_a_thousand_entries() {
    let cfg = config(1000);
    for s in QUALIFIED {
        let img = image::parse(s).expect(s);
        let (n, hits) = counted(|| cfg.entries_for(&img, "team-a", None).len());
        assert_eq!(n, 0, "entries_for({s:?}) allocated {n} times ({hits} hits)");
    }
    // Two entries for one image (`ghcr.io/acme` and `ghcr.io`) still fit on the stack.
    let img = image::parse("ghcr.io/acme/app").expect("valid");
    let (n, hits) = counted(|| cfg.entries_for(&img, "team-a", None).len());
    assert_eq!((n, hits), (0, 2));
}

/// A CREATE review of a Pod with one container per image (the shared test helpers').
fn review_body(images: &[&str]) -> Vec<u8> {
    let names: Vec<String> = (0..images.len()).map(|i| format!("c{i}")).collect();
    let containers: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(images.iter().copied())
        .collect();
    let review = support::review_for(support::pod(&containers), "team-a", "CREATE");
    serde_json::to_vec(&review).expect("serialisable")
}

#[test]
fn a_review_allocates_the_same_with_ten_or_a_thousand_entries() {
    let body = review_body(&QUALIFIED);
    let facts = NamespaceFacts::default();
    let mut counts = Vec::new();
    for entries in [10, 1000] {
        let cfg = config(entries);
        let (n, out) = counted(|| admission::review(Endpoint::Mutate, &body, &cfg, &facts));
        let out = out.expect("the review is answered");
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(text.contains("\"patch\""), "{text}");
        counts.push(n);
    }
    // The counter sees the review's own allocations (its answer, at least).
    assert!(counts[0] > 0, "nothing counted");
    assert_eq!(
        counts[0], counts[1],
        "allocations with 10 and 1,000 entries"
    );
}
