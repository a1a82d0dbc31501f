//! Micro-benchmarks of the admission hot path (divan): image parsing, registry matching
//! against 10/100/1,000 entries, and the review split into its stages
//! (`parse_review` → `decide` → `response_json`) plus the whole `review()`.
//!
//! Run: `cargo bench --bench micro` (about 40 s). Times are per item: one image, one
//! match, one review. Every review benchmark cycles through 8 different Pods of its size.

mod common;

use std::hint::black_box;
use std::sync::LazyLock;
use std::time::Duration;

use divan::Bencher;
use pullsecret_injector::admission::mutate::plan_pod;
use pullsecret_injector::admission::pod::PodDoc;
use pullsecret_injector::admission::{
    self, AdmissionRequest, Endpoint, NamespaceFacts, decide, parse_review, response_json,
};
use pullsecret_injector::config::Config;
use pullsecret_injector::image::{self, ImageRef};

/// Pods per size the review benchmarks rotate through.
const VARIANTS: u64 = 8;

static CONFIGS: LazyLock<Vec<(usize, Config)>> = LazyLock::new(|| {
    common::ENTRY_COUNTS
        .iter()
        .map(|&n| (n, common::config(n)))
        .collect()
});

fn config(entries: usize) -> &'static Config {
    &CONFIGS
        .iter()
        .find(|(n, _)| *n == entries)
        .expect("entry count is in ENTRY_COUNTS")
        .1
}

static IMAGES: LazyLock<Vec<String>> = LazyLock::new(|| common::images(42, 256));

static PARSED: LazyLock<Vec<ImageRef>> = LazyLock::new(|| {
    IMAGES
        .iter()
        .map(|s| image::parse(s).expect("corpus images are valid"))
        .collect()
});

fn bodies(sites: usize) -> Vec<Vec<u8>> {
    (0..VARIANTS)
        .map(|seed| common::review_body(seed, sites))
        .collect()
}

fn requests(bodies: &[Vec<u8>]) -> Vec<(&'static str, AdmissionRequest<'_>)> {
    bodies
        .iter()
        .map(|b| parse_review(b).expect("corpus reviews parse"))
        .collect()
}

fn pods(bodies: &[Vec<u8>]) -> Vec<PodDoc<'_>> {
    requests(bodies)
        .iter()
        .map(|(_, r)| r.pod().expect("a pod").expect("readable").into_owned())
        .collect()
}

fn main() {
    // Short by default so the whole report stays within a few minutes; CLI flags
    // (`--sample-count`, `--max-time`, …) override.
    divan::Divan::default()
        .sample_count(100)
        .min_time(Duration::from_millis(50))
        .max_time(Duration::from_millis(300))
        .config_with_args()
        .main();
}

/// `image::parse` on a mix of Docker Hub short names, public and private registries,
/// ports and digests.
#[divan::bench]
fn image_parse(bencher: Bencher) {
    let images = &*IMAGES;
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % images.len();
        image::parse(black_box(&images[i]))
    });
}

/// `Matcher::matches` for one parsed image: should stay flat as entries grow.
#[divan::bench(args = common::ENTRY_COUNTS)]
fn matcher_matches(bencher: Bencher, entries: usize) {
    let cfg = config(entries);
    let images = &*PARSED;
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % images.len();
        cfg.matcher().matches(black_box(&images[i]))
    });
}

/// JSON → `AdmissionRequest` envelope plus the partial pod read (independent of the config).
#[divan::bench(consts = common::POD_SITES)]
fn review_1_parse<const SITES: usize>(bencher: Bencher) {
    let bodies = bodies(SITES);
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % bodies.len();
        let (_, req) = parse_review(black_box(&bodies[i])).unwrap();
        // The pod is usually read in the envelope's pass already; this reads it otherwise.
        req.pod().is_some_and(|p| p.is_ok())
    });
}

/// The decision alone (sites, matching, plan and the patch's JSON text) on an already read pod.
#[divan::bench(consts = common::POD_SITES, args = common::ENTRY_COUNTS)]
fn review_2_decide<const SITES: usize>(bencher: Bencher, entries: usize) {
    let cfg = config(entries);
    let bodies = bodies(SITES);
    let pods = pods(&bodies);
    let facts = NamespaceFacts::default();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % pods.len();
        let plan = plan_pod(black_box(&pods[i]), "team-a", cfg, &facts);
        plan.patch_json(&[])
    });
}

/// Response envelope with the base64 patch.
#[divan::bench(consts = common::POD_SITES)]
fn review_3_serialise<const SITES: usize>(bencher: Bencher) {
    let cfg = config(1000);
    let facts = NamespaceFacts::default();
    let bodies = bodies(SITES);
    let decided: Vec<_> = requests(&bodies)
        .into_iter()
        .map(|(v, r)| {
            let d = decide(Endpoint::Mutate, &r, cfg, &facts);
            (v, r.uid, d.verdict)
        })
        .collect();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % decided.len();
        let (v, uid, verdict) = &decided[i];
        response_json(v, uid, black_box(verdict))
    });
}

/// Bytes in, bytes out: what `/mutate` runs per request (without HTTP and metrics).
#[divan::bench(consts = common::POD_SITES, args = [10, 1000])]
fn review_4_full<const SITES: usize>(bencher: Bencher, entries: usize) {
    let cfg = config(entries);
    let bodies = bodies(SITES);
    let facts = NamespaceFacts::default();
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % bodies.len();
        admission::review(Endpoint::Mutate, black_box(&bodies[i]), cfg, &facts)
    });
}
