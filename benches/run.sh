#!/usr/bin/env bash
# The whole benchmark report in one run: micro-benchmarks (divan), then the load benchmark:
# ours, the bare-TLS floor and both peers (kube-rs-example style, Go k8s.io/api) from the
# same run, over HTTP/1.1 keep-alive, HTTP/2 and new connections, with the ratios the
# performance targets are stated in. About 7 minutes once built; the first release build
# takes several minutes more (the Go peer's first build fetches k8s.io/api). Run as root
# (or with CAP_SYS_NICE) for the servers to run real-time, as the published figures were;
# otherwise the report says the isolation was refused (benches/BENCHMARKS.md, "Isolation").
# Usage: benches/run.sh [| tee bench-report.md]
set -euo pipefail
cd "$(dirname "$0")/.."
LOADGEN_GO_PEER="$(benches/peers/build.sh)"
export LOADGEN_GO_PEER
cargo bench --bench micro
echo
cargo bench --bench loadgen
