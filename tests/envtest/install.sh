#!/usr/bin/env bash
# Builds the pinned test control plane (kube-apiserver, kube-controller-manager, kubectl
# from k8s.io/kubernetes; etcd from go.etcd.io/etcd/server/v3) from the Go modules in
# tests/envtest/kube and tests/envtest/etcd, into a cache directory keyed by the pinned
# versions, the Go version and the go.sum contents. Does nothing when that directory is
# already complete. Prints the directory (use it as KUBEBUILDER_ASSETS) as the only line
# on stdout; progress goes to stderr.
#
#   export KUBEBUILDER_ASSETS="$(tests/envtest/install.sh)"
#
# The cache root is $PSI_ENVTEST_CACHE, else $XDG_CACHE_HOME/pullsecret-injector/envtest,
# else ~/.cache/pullsecret-injector/envtest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

need() { command -v "$1" >/dev/null 2>&1 || { echo "install.sh: $1 not found (Go 1.26+ is required)" >&2; exit 1; }; }
need go

# The pinned versions, read from the modules themselves so there is one source of truth.
k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/kube/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || { echo "install.sh: cannot read pinned versions from go.mod" >&2; exit 1; }
go_version="$(go env GOVERSION)"
# Comment lines do not change what is built, so they do not change the key.
sum="$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" | grep -v '^[[:space:]]*//' | sha256sum | cut -c1-12)"

root="${PSI_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pullsecret-injector/envtest}"
dir="$root/k8s-${k8s_version}_etcd-${etcd_version}_${go_version}_${sum}"
bins=(kube-apiserver kube-controller-manager kubectl etcd)

complete() {
  local b
  for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || return 1; done
}

if complete; then
  echo "install.sh: control plane already built in $dir" >&2
  echo "$dir"
  exit 0
fi

start=$SECONDS
mkdir -p "$root"
tmp="$(mktemp -d "$root/.building.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Version stamps, as Kubernetes' own hack/lib/version.sh sets them, so /version and
# `kubectl version` report the real release rather than v0.0.0-master.
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ver_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ver_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ver_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "install.sh: building Kubernetes $k8s_version (kube-apiserver, kube-controller-manager, kubectl) with $go_version" >&2
(cd "$here/kube" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags="-s -w$ver_ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl)
echo "install.sh: building etcd $etcd_version" >&2
(cd "$here/etcd" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)

for b in "${bins[@]}"; do [[ -x "$tmp/$b" ]] || { echo "install.sh: $b was not built" >&2; exit 1; }; done
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "install.sh: built in $((SECONDS - start)) s into $dir" >&2
echo "$dir"
