#!/usr/bin/env bash
# `task e2e:k8s`: build (or reuse) the local control plane in .cache/k8s, then
# run the Kubernetes e2e tests against it. As root, the HPA test runs the
# adapter in a network namespace of its own; HEADCOUNT_K8S_REQUIRE=1 (CI)
# turns every skip into a failure. Extra arguments go to `go test`, e.g.
#   bash k8se2e/run.sh -run DeletionCost
# The KEDA tests (keda_test.go) run when KEDA is built in .cache/keda
# (k8se2e/build-keda.sh, `task e2e:keda`); otherwise they skip, loudly. This
# script never builds KEDA (about 48 minutes cold).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash k8se2e/build-controlplane.sh
t1=$(date +%s)
echo "== control plane ready in $((t1 - t0)) s"
export HEADCOUNT_K8S_BIN="${HEADCOUNT_K8S_CACHE:-$PWD/.cache/k8s}/bin"
export HEADCOUNT_K8S_LOGS="${HEADCOUNT_K8S_LOGS:-$PWD/.cache/k8s/logs}"
timeout=20m
if keda_bin=$(bash k8se2e/build-keda.sh --check); then
  export HEADCOUNT_KEDA_BIN="$keda_bin"
  timeout=35m
  echo "== KEDA built in $keda_bin: the KEDA tests run"
else
  echo "== ******** KEDA is not built (.cache/keda): the KEDA tests SKIP; \`task e2e:keda\` builds it (~48 min cold) ********"
fi
status=0
go test -count=1 -v -timeout "$timeout" ./k8se2e "$@" || status=$?
echo "== Kubernetes e2e tests: $(($(date +%s) - t1)) s (total $(($(date +%s) - t0)) s)"
exit "$status"
