#!/usr/bin/env bash
# Builds the local control plane used by the Kubernetes e2e tests into a
# git-ignored cache (default .cache/k8s): kube-apiserver and
# kube-controller-manager from the Go module proxy (a wrapper module requiring
# k8s.io/kubernetes, with one replace per staging module, as k8s.io/kubernetes
# itself cannot be required without them), and etcd from go.etcd.io/etcd.
# Idempotent: binaries already built for these versions are kept, so a warm
# run costs seconds; the Go build cache (~/.cache/go-build) makes a rebuild
# after a version bump cheaper too.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-v1.37.2}"   # the release matching k8s.io/api v0.37.2 in go.mod
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
CACHE="${HEADCOUNT_K8S_CACHE:-$PWD/.cache/k8s}"
BIN="$CACHE/bin"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOWORK=off
mkdir -p "$BIN"

stamp_ok() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$2" ]; }

build_k8s() {
  local w="$CACHE/src/kubernetes-$K8S_VERSION"
  mkdir -p "$w"
  if [ ! -f "$w/go.sum" ]; then
    # The staging modules are published as k8s.io/<name> v0.<minor>.<patch>.
    local staging="v0.${K8S_VERSION#v1.}"
    local mod
    mod=$(cd "$w" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module headcount.local/k8s-controlplane"
      echo
      echo "go 1.26.0"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 '"$staging"'#p' "$mod"
      echo ")"
    } >"$w/go.mod"
    cat >"$w/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
    # tidy -e records what tools.go imports (quietly: it lists every
    # download); go get then pins the release and fails loudly if something
    # is missing.
    (cd "$w" && { go mod tidy -e >/dev/null 2>&1 || true; } &&
      go get "k8s.io/kubernetes@$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  fi
  local minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  for c in kube-apiserver kube-controller-manager; do
    if ! stamp_ok "$c" "$K8S_VERSION"; then
      echo "building $c $K8S_VERSION"
      (cd "$w" && go build -trimpath -ldflags "$ld" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c")
      echo "$K8S_VERSION" >"$BIN/$c.version"
    fi
  done
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && return
  local w="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$w"
  if [ ! -f "$w/go.mod" ]; then
    (cd "$w" && printf 'module headcount.local/etcd\n\ngo 1.26.0\n' >go.mod && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  fi
  echo "building etcd $ETCD_VERSION"
  (cd "$w" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  echo "$ETCD_VERSION" >"$BIN/etcd.version"
}

build_etcd
build_k8s
echo "control plane in $BIN"
