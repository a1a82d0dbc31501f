#!/usr/bin/env bash
# Builds the benchmark's peer webhooks (not part of the product). For now one: the Go peer
# (benches/peers/go), a typical Go implementation of our /mutate that benches/loadgen.rs
# can run beside ours. Prints the binary's path on success.
# Usage: benches/peers/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v go >/dev/null 2>&1; then
    echo "benches/peers/build.sh: 'go' is not on PATH; install Go 1.26 or newer to build the Go peer" >&2
    exit 1
fi

out="$PWD/target/peers/go-peer"
mkdir -p "$(dirname "$out")"
(cd benches/peers/go && go build -trimpath -o "$out" .)
echo "$out"
