#!/usr/bin/env bash
# Generate a CA and a webhook serving certificate for pullsecret-injector.
#
# Thin wrapper around `pullsecret-injector certs`, which does the real work
# (no openssl needed). Writes ca.crt, ca.key, tls.crt and tls.key into the
# output directory and prints the base64 caBundle on stdout.
#
# Usage:
#   certs/gen-certs.sh [-o OUT_DIR] [-s SERVICE] [-n NAMESPACE] [-d EXTRA_DNS]...
#
# Defaults: OUT_DIR=certs/out, SERVICE=pullsecret-injector,
#           NAMESPACE=pullsecret-injector.
# SERVICE must be the name of the webhook Service (with the Helm chart:
# <release>-pullsecret-injector, or just the release name if it already
# contains "pullsecret-injector").
#
# The binary is taken from $PULLSECRET_INJECTOR if set, else from PATH, else
# from target/release or target/debug of this repository.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"

out_dir="${here}/out"
service="pullsecret-injector"
namespace="pullsecret-injector"
extra_dns=()

usage() {
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -o|--out-dir)   out_dir="$2"; shift 2 ;;
    -s|--service)   service="$2"; shift 2 ;;
    -n|--namespace) namespace="$2"; shift 2 ;;
    -d|--dns)       extra_dns+=("$2"); shift 2 ;;
    -h|--help)      usage; exit 0 ;;
    *) echo "gen-certs.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

find_binary() {
  if [[ -n "${PULLSECRET_INJECTOR:-}" ]]; then
    echo "${PULLSECRET_INJECTOR}"; return 0
  fi
  if command -v pullsecret-injector >/dev/null 2>&1; then
    command -v pullsecret-injector; return 0
  fi
  local candidate
  for candidate in "${repo}/target/release/pullsecret-injector" "${repo}/target/debug/pullsecret-injector"; do
    if [[ -x "${candidate}" ]]; then
      echo "${candidate}"; return 0
    fi
  done
  return 1
}

if ! bin="$(find_binary)"; then
  echo "gen-certs.sh: pullsecret-injector binary not found (PATH, target/release, target/debug)." >&2
  echo "Build it with: cargo build --release   (or set PULLSECRET_INJECTOR=/path/to/binary)" >&2
  exit 1
fi

args=(certs --out-dir "${out_dir}" --service "${service}" --namespace "${namespace}")
for d in "${extra_dns[@]+"${extra_dns[@]}"}"; do
  args+=(--dns "$d")
done

mkdir -p "${out_dir}"
echo "gen-certs.sh: ${bin} ${args[*]}" >&2
# stdout of the binary is the base64 caBundle; pass it through unchanged.
"${bin}" "${args[@]}"
chmod 600 "${out_dir}/ca.key" "${out_dir}/tls.key" 2>/dev/null || true
echo "gen-certs.sh: wrote ${out_dir}/{ca.crt,ca.key,tls.crt,tls.key}" >&2
