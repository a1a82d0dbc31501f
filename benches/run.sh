#!/usr/bin/env bash
# The whole benchmark report in one run: micro-benchmarks (divan), then the load benchmark
# (ours vs the bare-TLS floor, same process tree). About 1.5 minutes once built; the
# first build in release mode takes several minutes more.
# Usage: benches/run.sh [| tee bench-report.md]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench micro
echo
cargo bench --bench loadgen
