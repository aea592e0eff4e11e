#!/usr/bin/env bash
# Builds KEDA (the operator, its admission webhooks and its metrics server)
# into a git-ignored cache (default .cache/keda) for the KEDA e2e tests
# (k8se2e/keda_test.go). KEDA's release module is taken from the Go module
# proxy and built as its own main module (a writable copy of it), so its
# replace and exclude directives apply and its go.sum pins every dependency,
# as KEDA's Makefile builds it; `go install ...@v2.21.0` refuses a module with
# replace directives. The version is the one go.mod requires for KEDA's types
# (the one deploy/ targets).
#
# Cold, this is long (about 48 minutes on two cores; KEDA links every scaler's
# SDK), so CI never runs it: .ci/run runs the KEDA tests only when this cache
# is warm. Idempotent: binaries already built for this version are kept.
# `build-keda.sh --check` builds nothing: it exits 0 when the cache holds
# this version's three binaries, 1 otherwise (k8se2e/run.sh and .ci/run ask).
# KEDA_BUILD_JOBS is go build's -p (default: the cores); on a loaded shared
# machine a higher value takes a larger share of it.
set -euo pipefail
cd "$(dirname "$0")/.."

KEDA_VERSION="${KEDA_VERSION:-$(go list -m -f '{{.Version}}' github.com/kedacore/keda/v2)}"
CACHE="${HEADCOUNT_KEDA_CACHE:-$PWD/.cache/keda}"
BIN="$CACHE/bin"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOWORK=off CGO_ENABLED=0

stamp_ok() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$KEDA_VERSION" ]; }
# name:package, as KEDA's Makefile names the binaries.
BINARIES="keda:operator keda-admission-webhooks:webhooks keda-adapter:adapter"

if [ "${1:-}" = --check ]; then
  for b in $BINARIES; do stamp_ok "${b%%:*}" || exit 1; done
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"

src="$CACHE/src/keda-$KEDA_VERSION"
if [ ! -f "$src/go.mod" ]; then
  dir=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$src.tmp"
  mkdir -p "$(dirname "$src")"
  cp -r "$dir" "$src.tmp"
  chmod -R u+w "$src.tmp"
  mv "$src.tmp" "$src"
fi

ld="-s -w -X=github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v} -X=github.com/kedacore/keda/v2/version.GitCommit=release"
for b in $BINARIES; do
  name=${b%%:*}
  if ! stamp_ok "$name"; then
    echo "building $name $KEDA_VERSION ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
    (cd "$src" && go build -p "${KEDA_BUILD_JOBS:-$(nproc)}" -trimpath -ldflags "$ld" -o "$BIN/$name" "./cmd/${b#*:}")
    echo "$KEDA_VERSION" >"$BIN/$name.version"
  fi
done
echo "KEDA $KEDA_VERSION in $BIN"
