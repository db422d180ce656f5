#!/usr/bin/env bash
# Builds the Kubernetes control plane the operator's end-to-end tests run against, from Go
# modules: kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok). The modules that pin each
# version are in tests/control-plane/.
#
# The binaries are cached outside target/, keyed by the modules' go.mod and go.sum and the Go
# version, so later runs (and CI on the same machine) reuse them. Prints the bin directory.
#
#   MEMGATE_CONTROL_PLANE_CACHE  where the cache lives (default ~/.cache/memgate/control-plane)
set -euo pipefail
cd "$(dirname "$0")/.."

modules=tests/control-plane
cache_root="${MEMGATE_CONTROL_PLANE_CACHE:-$HOME/.cache/memgate/control-plane}"
key="$( (go version; cat "$0" "$modules"/*/go.mod "$modules"/*/go.sum) | sha256sum | cut -c1-16)"
bin="$cache_root/$key/bin"

# build MODULE OUTPUT LDFLAGS PACKAGE...: OUTPUT is a file, or a directory ending in / for
# several packages.
build() {
  local module=$1 output=$2 ldflags=$3
  shift 3
  (cd "$modules/$module" && go build -trimpath -ldflags="-s $ldflags" -o "$output" "$@")
}

# The version Kubernetes reports (`kubectl version`, helm's kubeVersion check), which its own
# build sets from git: the version go.mod pins.
kubernetes_version_flags() {
  local version major minor flags=""
  version=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$modules/kubernetes/go.mod")
  major=$(echo "${version#v}" | cut -d. -f1)
  minor=$(echo "${version#v}" | cut -d. -f2)
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $package.gitVersion=$version -X $package.gitMajor=$major -X $package.gitMinor=$minor"
    flags+=" -X $package.gitTreeState=clean"
  done
  echo "$flags"
}

if [ ! -f "$bin/.complete" ]; then
  started=$(date +%s)
  echo "building the control plane into $bin (first time for this version; about 6 minutes on 2 cores)" >&2
  rm -rf "$bin.partial" && mkdir -p "$bin.partial"
  build kubernetes "$bin.partial/" "$(kubernetes_version_flags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  build etcd "$bin.partial/etcd" "" go.etcd.io/etcd/server/v3
  build kwok "$bin.partial/kwok" "" sigs.k8s.io/kwok/cmd/kwok
  echo "built in $(($(date +%s) - started)) s" > "$bin.partial/.complete"
  rm -rf "$bin" && mv "$bin.partial" "$bin"
  # Only the current version is kept: each takes about 450 MB.
  find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
  echo "control plane built in $(($(date +%s) - started)) s" >&2
fi
echo "$bin"
