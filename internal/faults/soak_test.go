package faults_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// TestSoak is `task soak`: `headcount up` (on an external NATS, so that NATS
// can restart) plus two standalone routers, under the Go load client
// balancing over the ready routers, while a chaos loop kills followers
// (-9 and TERM), moves the load between a low and a high rate (the replica
// target follows), restarts NATS and rolls a standalone router. It runs
// only when HEADCOUNT_SOAK is a duration (at most 10m) and logs the counts,
// and the RSS and goroutines of every component at start and end.
func TestSoak(t *testing.T) {
	d := os.Getenv("HEADCOUNT_SOAK")
	if d == "" {
		t.Skip("set HEADCOUNT_SOAK=5m (task soak) to run the soak")
	}
	duration, err := time.ParseDuration(d)
	require.NoError(t, err)
	require.LessOrEqual(t, duration, 10*time.Minute, "the soak is bounded")

	s := newStack(t, 1)
	up := e2e.StartUp(t, s.bin, "--nats-url", s.url(), "--service", service, "--target", "20", "--min", "1", "--max", "6",
		"--instance-ttl", "5s", "--scale-down-window", "10s", "--drain-timeout", "5s")
	upRouter := &routerProc{id: "up", control: up.Control, streaming: up.Streaming}
	routerArgs := []string{"--shutdown-delay", "1s", "--shutdown-grace", "10s"}
	next := 0
	newRouter := func() *routerProc {
		next++
		return s.router("r-"+strconv.Itoa(next), routerArgs...)
	}
	pool := &readyPool{all: []*routerProc{upRouter, newRouter(), newRouter()}}
	for _, r := range pool.all {
		waitServing(t, r)
	}
	stopPolls := pool.poll()
	start := usage(t, up, pool.snapshot())

	base := &e2e.Load{Endpoints: pool.endpoints, Workers: 2, Every: 100 * time.Millisecond, KeepStreams: 60}
	base.Start()
	var (
		burst    *e2e.Load
		bursts   []e2e.Counts
		chaos    = map[string]int{}
		deadline = time.Now().Add(duration)
	)
	actions := []string{"kill -9 follower", "high load", "SIGTERM follower", "restart NATS", "low load", "roll router"}
	for i := 0; time.Now().Before(deadline); i++ {
		time.Sleep(8 * time.Second)
		action := actions[i%len(actions)]
		switch action {
		case "kill -9 follower", "SIGTERM follower":
			pids := followerPIDs(up.Cmd.Process.Pid)
			if len(pids) == 0 {
				continue
			}
			sig := syscall.SIGKILL
			if action == "SIGTERM follower" {
				sig = syscall.SIGTERM
			}
			_ = syscall.Kill(pids[rand.IntN(len(pids))], sig)
		case "high load":
			if burst == nil {
				burst = &e2e.Load{Endpoints: pool.endpoints, Workers: 6, Every: 50 * time.Millisecond, KeepStreams: 120, WriteEvery: -1}
				burst.Start()
			}
		case "low load":
			if burst != nil {
				bursts = append(bursts, burst.Stop())
				burst = nil
			}
		case "restart NATS":
			s.stopNATS(0)
			time.Sleep(5 * time.Second)
			s.startNATS(0)
		case "roll router":
			old := pool.all[1]
			fresh := newRouter()
			waitServing(t, fresh)
			pool.add(fresh)
			old.Signal(t, syscall.SIGTERM)
			go func() { <-old.Done(); pool.remove(old) }()
		}
		chaos[action]++
	}
	if burst != nil {
		bursts = append(bursts, burst.Stop())
	}
	total := base.Stop()
	time.Sleep(time.Second)
	end := usage(t, up, pool.snapshot())
	stopPolls()

	for _, b := range bursts {
		total = add(total, b)
	}
	t.Logf("soak %v on %s", duration, machine())
	t.Logf("chaos: %v", chaos)
	t.Logf("load: %v", total)
	t.Logf("usage at start:\n%s", start)
	t.Logf("usage at end:\n%s", end)
	assert.Zero(t, e2e.Failures(total.CreateFailed), "failed creations: %v", total.CreateFailed)
	assert.Zero(t, e2e.Failures(total.WriteFailed), "failed writes: %v", total.WriteFailed)
}

// readyPool is the routers a client balances over, by their /readyz.
type readyPool struct {
	mu    sync.Mutex
	all   []*routerProc
	ready map[*routerProc]bool
}

func (p *readyPool) snapshot() []*routerProc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*routerProc(nil), p.all...)
}

func (p *readyPool) add(r *routerProc) {
	p.mu.Lock()
	p.all = append(p.all, r)
	p.mu.Unlock()
}

func (p *readyPool) remove(r *routerProc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, o := range p.all {
		if o == r {
			p.all = append(p.all[:i], p.all[i+1:]...)
			return
		}
	}
}

func (p *readyPool) poll() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			ready := map[*routerProc]bool{}
			for _, r := range p.snapshot() {
				code, _ := e2e.Get(r.control + "/readyz")
				ready[r] = code == http.StatusOK
			}
			p.mu.Lock()
			p.ready = ready
			p.mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (p *readyPool) endpoints() []e2e.Endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []e2e.Endpoint
	for _, r := range p.all {
		if p.ready[r] {
			out = append(out, r.endpoint())
		}
	}
	return out
}

// waitServing waits until r is ready and sees a ready follower.
func waitServing(t *testing.T, r *routerProc) {
	t.Helper()
	require.Eventually(t, func() bool {
		ready, _ := e2e.Metric(r.control, `headcount_followers{service="svc",state="ready"}`)
		code, _ := e2e.Get(r.control + "/readyz")
		return ready >= 1 && code == http.StatusOK
	}, wait, 20*time.Millisecond, "router %s", r.id)
}

// followerPIDs are up's demo follower processes.
func followerPIDs(up int) []int {
	return children(up, func(cmdline string) bool { return strings.Contains(cmdline, " follower ") })
}

// usage lists the RSS of up, its followers and the routers, and the
// goroutines of those that export go_goroutines.
func usage(t *testing.T, up *e2e.Up, routers []*routerProc) string {
	var lines []string
	line := func(name string, pid int, metrics string) {
		rss := float64(e2e.RSSOf(pid)) / (1 << 20)
		g := "-"
		if metrics != "" {
			if v, ok := e2e.Metric(metrics, "go_goroutines"); ok {
				g = strconv.Itoa(int(v))
			}
		}
		lines = append(lines, fmt.Sprintf("  %-28s pid %-7d rss %6.1f MiB  goroutines %s", name, pid, rss, g))
	}
	line("up (NATS client, router, scaler, leader, supervisor)", up.Cmd.Process.Pid, up.Control)
	for _, pid := range followerPIDs(up.Cmd.Process.Pid) {
		line("follower", pid, "")
	}
	for _, r := range routers {
		if r.Proc != nil {
			line("router "+r.id, r.Cmd.Process.Pid, r.control)
		}
	}
	sort.Strings(lines[1:])
	return strings.Join(lines, "\n")
}

func add(a, b e2e.Counts) e2e.Counts {
	a.Created += b.Created
	a.StreamsOpened += b.StreamsOpened
	a.Updates += b.Updates
	a.Writes += b.Writes
	for _, p := range []struct{ dst, src map[string]int }{
		{a.CreateFailed, b.CreateFailed}, {a.StreamFailed, b.StreamFailed}, {a.StreamsCut, b.StreamsCut},
		{a.CutOwners, b.CutOwners}, {a.WriteFailed, b.WriteFailed},
	} {
		for k, v := range p.src {
			p.dst[k] += v
		}
	}
	return a
}

func machine() string {
	cpu := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs visible", cpu, runtime.NumCPU())
}
