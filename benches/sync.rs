//! Placeholder replaced by the sync benchmark (see benches/BENCHMARKS.md).
fn main() {}
