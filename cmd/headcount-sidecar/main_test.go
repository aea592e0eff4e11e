package main

import (
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/benchtest"
	"github.com/headcount-dev/headcount/internal/demotest"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// The sidecar runs beside every follower: it must not link the Kubernetes
// client or the NATS server, which make the full binary about 90 MB.
func TestLinksNeitherClientGoNorNATSServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/nats-io/nats.go", "the listing is of the sidecar's packages")
	for _, dep := range deps {
		for _, heavy := range []string{"k8s.io/client-go", "github.com/nats-io/nats-server"} {
			require.False(t, strings.HasPrefix(dep, heavy), "%s links %s", dep, heavy)
		}
	}
}

// The same flags and environment as `headcount sidecar`: one wiring.
func TestFlagsAreTheSidecarCommands(t *testing.T) {
	t.Setenv("HEADCOUNT_INSTANCE_TTL", "0s")
	root := newRoot()
	root.SetArgs([]string{"--service", "demo"})
	require.ErrorContains(t, root.Execute(), "--instance-ttl 0s: must be above zero")
}

// The chart's init container gives the follower's container the supervisor
// with `supervise --copy-to`: the copy is this binary, runnable from there.
func TestSuperviseCopiesItselfForAnInitContainer(t *testing.T) {
	bin := e2e.Build(t, "headcount-sidecar")
	dir := t.TempDir()
	out, err := exec.Command(bin, "supervise", "--copy-to", dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	copied := dir + "/headcount-sidecar"
	out, err = exec.Command(copied, "supervise", "--help").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "--leader-health")
	_, err = exec.Command(copied, "supervise", "--health-addr", "127.0.0.1:0", "--", "true").Output()
	require.ErrorContains(t, err, "exit status 1", "no --leader-health: refused")
}

const (
	mib     = 1 << 20
	streams = 300
)

// The sidecar's resident memory (VmRSS), idle and with 300 streams through
// it, for the light binary and for `headcount sidecar` of the full one, in
// rotating order each iteration (a fresh child each time); medians.
// HEADCOUNT_BENCH_FULL names another full binary (e.g. main's) to measure
// instead of this tree's.
//
//	go test -run '^$' -bench SidecarRSS -benchtime 5x ./cmd/headcount-sidecar/
func BenchmarkSidecarRSS(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("needs Linux: /proc")
	}
	full := os.Getenv("HEADCOUNT_BENCH_FULL")
	if full == "" {
		full = e2e.Binary(b)
	}
	commands := []struct {
		name string
		argv []string
	}{{"light", []string{e2e.Build(b, "headcount-sidecar")}}, {"full", []string{full, "sidecar"}}}
	url := natstest.Server(b)
	nc := natstest.Connect(b, url)
	leader := demotest.Leader(b, nc, "backend")
	follower := demotest.Follower(b, nc, "backend", "f-app", leader)
	idle := make([][]float64, len(commands))
	loaded := make([][]float64, len(commands))
	b.ResetTimer()
	for i := range b.N {
		for k := range commands {
			j := (i + k) % len(commands)
			idleRSS, loadedRSS := sidecarRSS(b, commands[j].argv, url, follower.ControlAddr(), follower.StreamingAddr())
			idle[j] = append(idle[j], idleRSS)
			loaded[j] = append(loaded[j], loadedRSS)
		}
	}
	b.StopTimer()
	for j, c := range commands {
		b.ReportMetric(benchtest.Median(idle[j]), c.name+"-idle-MiB")
		b.ReportMetric(benchtest.Median(loaded[j]), c.name+"-loaded-MiB")
	}
}

// sidecarRSS starts argv in front of the follower, samples its RSS once
// ready and idle, then with the streams open, and stops it.
func sidecarRSS(b *testing.B, argv []string, natsURL, upControl, upStreaming string) (idle, loaded float64) {
	control, streaming, opsAddr := e2e.FreeAddr(b), e2e.FreeAddr(b), e2e.FreeAddr(b)
	p := e2e.Run(b, "sidecar", argv[0], append(argv[1:], "--service", "demo", "--id", "s-1", "--nats-url", natsURL,
		"--listen-control", control, "--listen-streaming", streaming, "--ops-addr", opsAddr,
		"--upstream-control", upControl, "--upstream-streaming", upStreaming, "--log-level", "warn")...)
	require.Eventually(b, func() bool { code, _ := e2e.Get(opsAddr + "/readyz"); return code == http.StatusOK },
		20*time.Second, 10*time.Millisecond, "sidecar ready")
	idle = sampleRSS(p.Cmd.Process.Pid)
	var open []*e2e.Stream
	for range streams {
		code, id := e2e.Do(b, http.MethodPost, control+"/v1/streams/collection", `{"name":"posts"}`)
		require.Equal(b, http.StatusCreated, code, id)
		s, code := e2e.Subscribe(b, streaming, id)
		require.Equal(b, http.StatusOK, code)
		require.Equal(b, "init", s.Next(b).Kind)
		open = append(open, s)
	}
	loaded = sampleRSS(p.Cmd.Process.Pid)
	for _, s := range open {
		s.Close()
	}
	p.Signal(b, syscall.SIGKILL)
	_ = p.Wait(b, 10*time.Second)
	return idle, loaded
}

// sampleRSS is the median of five samples a tenth of a second apart, in MiB,
// after a second for the process to settle.
func sampleRSS(pid int) float64 {
	time.Sleep(time.Second)
	var rss []float64
	for range 5 {
		rss = append(rss, float64(e2e.RSSOf(pid))/mib)
		time.Sleep(100 * time.Millisecond)
	}
	return benchtest.Median(rss)
}
