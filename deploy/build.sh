#!/bin/sh
# Builds headcount's binaries with the version stamped (`<binary> --version`):
# the image's build stage (deploy/Dockerfile) and `task build` both run this,
# so a binary built here is the one an image ships.
#   deploy/build.sh VERSION OUTDIR [PACKAGE...]
set -eu
version=$1
out=$2
shift 2
[ $# -gt 0 ] || set -- ./cmd/headcount ./cmd/headcount-sidecar ./cmd/headcount-adapter
CGO_ENABLED=0 exec go build -trimpath -buildvcs=false -ldflags="-s -w -X main.version=$version" -o "$out/" "$@"
