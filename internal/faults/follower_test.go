package faults_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// A follower process dies (kill -9) behind its sidecar, between two health
// checks, under load through two routers: no creation fails, and the dead
// follower gets no attempt after the first refusal each router sees, only
// those already in flight at that router then (the sidecar's 503 ejects it at that router
// and makes every view take it out at once).
func TestKilledFollowerBehindSidecarCostsNoCreation(t *testing.T) {
	s := newStack(t, 1)
	s.startLeader()
	type pair struct {
		app          *e2e.Proc
		ops          string
		control, str string
	}
	pairs := map[string]*pair{}
	for _, id := range []string{"s-1", "s-2"} {
		p := &pair{ops: e2e.FreeAddr(t), control: e2e.FreeAddr(t), str: e2e.FreeAddr(t)}
		// The follower registers under another service: only its sidecar
		// speaks for it to the routers.
		p.app = e2e.Run(t, id+"-app", s.bin, "follower", "--service", "backend", "--id", id+"-app",
			"--nats-url", s.url(), "--control-addr", p.control, "--streaming-addr", p.str,
			"--leader-control", s.lc, "--leader-streaming", s.ls, "--resource-prefix", id)
		e2e.Run(t, id, s.bin, "sidecar", "--service", service, "--id", id, "--nats-url", s.url(),
			"--listen-control", "127.0.0.1:0", "--listen-streaming", "127.0.0.1:0", "--ops-addr", p.ops,
			"--upstream-control", p.control, "--upstream-streaming", p.str)
		pairs[id] = p
	}
	r1, r2 := s.router("r-1"), s.router("r-2")
	s.waitRouted(r1, 2)
	s.waitRouted(r2, 2)

	load := &e2e.Load{Endpoints: s.endpoints, Workers: 4, Every: 50 * time.Millisecond, KeepStreams: 10_000}
	load.Start()
	require.Eventually(t, func() bool { return load.Snapshot().Created >= 40 }, wait, 20*time.Millisecond)
	refusals := func() float64 {
		v, _ := e2e.Metric(pairs["s-1"].ops, `headcount_sidecar_requests_total{api="control",code="503",route="create"}`)
		return v
	}
	require.Zero(t, refusals())
	pairs["s-1"].app.Signal(t, syscall.SIGKILL)
	before := load.Snapshot().Created
	require.Eventually(t, func() bool { return load.Snapshot().Created >= before+60 }, wait, 20*time.Millisecond)
	counts := load.Stop()

	t.Logf("%v", counts)
	t.Logf("creations that reached the dead follower's sidecar: %v", refusals())
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations: %v", counts.CreateFailed)
	// Each router may send it the creations in flight at its own first
	// refusal (each worker has one at a time, and r-2 meets its refusal after
	// r-1), and none after: at most workers × routers in all, where a router
	// that kept trying it would send it about half of the 60 creations.
	routers := 2
	assert.LessOrEqual(t, refusals(), float64(load.Workers*routers), "attempts on the dead follower beyond those in flight at each router's first refusal")
}

// The same under `headcount up`: kill -9 of a demo follower (no sidecar;
// the router's dial is refused) costs no creation, and the router tries it
// no more after the first refusal.
func TestKilledDemoFollowerUnderUpCostsNoCreation(t *testing.T) {
	bin := binary(t)
	up := e2e.StartUp(t, bin, "--min", "2", "--max", "2", "--instance-ttl", "60s")
	ep := e2e.Endpoint{Control: up.Control, Streaming: up.Streaming}
	require.Eventually(t, func() bool {
		ready, _ := e2e.Metric(up.Control, `headcount_followers{service="demo",state="ready"}`)
		return ready == 2
	}, wait, 20*time.Millisecond)
	load := &e2e.Load{Endpoints: func() []e2e.Endpoint { return []e2e.Endpoint{ep} }, Workers: 4, Every: 50 * time.Millisecond, KeepStreams: 10_000}
	load.Start()
	require.Eventually(t, func() bool { return load.Snapshot().Created >= 40 }, wait, 20*time.Millisecond)
	retries := func() float64 {
		v, _ := e2e.Metric(up.Control, `headcount_router_retries_total{service="demo"}`)
		return v
	}
	retried := retries()
	pid := childPID(t, up.Cmd.Process.Pid, "--id follower-1 ")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	before := load.Snapshot().Created
	require.Eventually(t, func() bool { return load.Snapshot().Created >= before+60 }, wait, 20*time.Millisecond)
	counts := load.Stop()

	t.Logf("%v", counts)
	t.Logf("retries after the death: %v", retries()-retried)
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations: %v", counts.CreateFailed)
	assert.LessOrEqual(t, retries()-retried, float64(load.Workers), "attempts on the dead follower beyond those in flight at its death")
}

// childPID finds the child of parent whose command line contains arg.
func childPID(t *testing.T, parent int, arg string) int {
	t.Helper()
	pids := children(parent, func(cmdline string) bool { return strings.Contains(cmdline, arg) })
	if len(pids) == 0 {
		t.Fatalf("no child of %d with %q", parent, arg)
	}
	return pids[0]
}

// children lists the processes whose parent is parent and whose command
// line (arguments joined by spaces) satisfies match.
func children(parent int, match func(cmdline string) bool) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		stat, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		if fields[1] != strconv.Itoa(parent) {
			continue
		}
		cmdline, _ := os.ReadFile(d + "/cmdline")
		if match(strings.ReplaceAll(string(cmdline), "\x00", " ")) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			out = append(out, pid)
		}
	}
	return out
}
