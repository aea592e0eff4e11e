package scaler

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// TestLoad10kAgents runs the scaler in its own process, fed by 10,000 real
// agents heartbeating every second, and measures its CPU and RSS and the
// GetMetrics latency meanwhile. It is a measurement, not a unit test:
//
//	HEADCOUNT_SCALER_LOAD=1 go test -run TestLoad10kAgents -v -timeout 10m ./scaler/
//
// HEADCOUNT_SCALER_LOAD_AGENTS and HEADCOUNT_SCALER_LOAD_DURATION change the
// fleet size (10000) and the measured window (30, seconds);
// HEADCOUNT_SCALER_LOAD_CPUPROFILE writes the scaler process's CPU profile.
func TestLoad10kAgents(t *testing.T) {
	if os.Getenv("HEADCOUNT_SCALER_LOAD") == "" {
		t.Skip("a measurement: set HEADCOUNT_SCALER_LOAD=1")
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	agents := envInt(t, "HEADCOUNT_SCALER_LOAD_AGENTS", 10_000)
	window := time.Duration(envInt(t, "HEADCOUNT_SCALER_LOAD_DURATION", 30)) * time.Second
	url := natstest.Server(t)

	args := []string{"-test.run=^TestScalerProcess$"}
	if prof := os.Getenv("HEADCOUNT_SCALER_LOAD_CPUPROFILE"); prof != "" {
		args = append(args, "-test.cpuprofile="+prof)
	}
	child := exec.Command(os.Args[0], args...)
	child.Env = append(os.Environ(), "HEADCOUNT_SCALER_PROCESS="+url)
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	require.NoError(t, err)
	stdout, err := child.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, child.Start())
	t.Cleanup(func() {
		_ = stdin.Close() // the child stops when its stdin closes
		_ = child.Wait()
	})
	addr := ""
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	require.NotEmpty(t, addr, "the scaler process did not start")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	c, _ := dial(t, addr)

	var reports atomic.Int64
	counter := natstest.Connect(t, url)
	_, err = counter.Subscribe("headcount.load.report.*", func(*nats.Msg) { reports.Add(1) })
	require.NoError(t, err)

	conns := make([]*nats.Conn, 16)
	for i := range conns {
		conns[i] = natstest.Connect(t, url)
	}
	quiet := slog.New(slog.DiscardHandler)
	var want int64
	start := time.Now()
	for i := range agents {
		a, err := agent.New(conns[i%len(conns)], agent.Config{
			Service: "load", Follower: fmt.Sprintf("follower-%d", i),
			Control: "10.0.0.1:8081", Streaming: "10.0.0.1:8080",
			Heartbeat: time.Second, Logger: quiet,
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = a.Close() })
		a.Ready()
		a.Set(int64(i % 50))
		want += int64(i % 50)
		// Spread the heartbeats over the second, as independent pods would.
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * time.Second / time.Duration(agents))))
	}
	r := ref("load")
	eventuallyLive(t, float64(want), r, c)
	time.Sleep(3 * time.Second) // warm up: past the start-up burst

	pid := child.Process.Pid
	cpu0, t0, reports0 := e2e.CPUSeconds(t, pid), time.Now(), reports.Load()
	var lat []time.Duration
	var rss int64
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: r}
	for next := t0; time.Since(t0) < window; next = next.Add(20 * time.Millisecond) {
		time.Sleep(time.Until(next))
		begin := time.Now()
		res, err := c.GetMetrics(context.Background(), req)
		lat = append(lat, time.Since(begin))
		require.NoError(t, err)
		assert.Equal(t, float64(want), res.MetricValues[0].MetricValueFloat)
		rss = max(rss, rssBytes(t, pid))
	}
	elapsed := time.Since(t0)
	cores := (e2e.CPUSeconds(t, pid) - cpu0) / elapsed.Seconds()
	rate := float64(reports.Load()-reports0) / elapsed.Seconds()
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))] }
	t.Logf("agents=%d window=%s reports/s=%.0f scaler_cpu_cores=%.3f scaler_rss_max_MiB=%.1f GetMetrics_grpc p50=%s p99=%s max=%s (n=%d)",
		agents, elapsed.Round(time.Second), rate, cores, float64(rss)/(1<<20), q(0.5), q(0.99), q(1), len(lat))
	assert.Greater(t, rate, 0.9*float64(agents), "every agent heartbeats once a second")
}

// TestScalerProcess is TestLoad10kAgents' scaler process: it serves on a
// loopback port, prints it, and stops when its stdin closes.
func TestScalerProcess(t *testing.T) {
	url := os.Getenv("HEADCOUNT_SCALER_PROCESS")
	if url == "" {
		t.Skip("helper process of TestLoad10kAgents")
	}
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	s, _, _ := watched(t, nc)
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(s, ServerConfig{}).Serve(ctx, ln, time.Second) }()
	fmt.Println("ADDR " + ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	require.NoError(t, <-done)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	return n
}

func rssBytes(t *testing.T, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
