#!/usr/bin/env bash
# `task e2e:k8s`: build (or reuse) the local control plane in .cache/k8s, then
# run the Kubernetes e2e tests against it. As root, the HPA test runs the
# adapter in a network namespace of its own; HEADCOUNT_K8S_REQUIRE=1 (CI)
# turns every skip into a failure. Extra arguments go to `go test`, e.g.
#   bash k8se2e/run.sh -run DeletionCost
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash k8se2e/build-controlplane.sh
t1=$(date +%s)
echo "== control plane ready in $((t1 - t0)) s"
export HEADCOUNT_K8S_BIN="${HEADCOUNT_K8S_CACHE:-$PWD/.cache/k8s}/bin"
export HEADCOUNT_K8S_LOGS="${HEADCOUNT_K8S_LOGS:-$PWD/.cache/k8s/logs}"
status=0
go test -count=1 -v -timeout 20m ./k8se2e "$@" || status=$?
echo "== Kubernetes e2e tests: $(($(date +%s) - t1)) s (total $(($(date +%s) - t0)) s)"
exit "$status"
