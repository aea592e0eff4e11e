package natsauth_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/benchtest"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/natsauth"
)

// The cost of authorization and TLS to the process that does the work: the
// built binary's `headcount scaler` (report intake) or `headcount router`
// (creations) in its own process, once on an open NATS and once on one with
// its JWT identity and TLS, both fed the same fixed rate by this process,
// which also runs both NATS servers and everything else. The figure is the
// child's CPU time (e2e.CPUSeconds, to the nanosecond) per report applied
// or per creation answered, so neither the publishers' nor the server's encryption is
// charged to it. Every iteration measures both, in rotating order; the
// medians of each mode's CPU per unit and of the per-iteration ratios (open
// CPU / auth+tls CPU, i.e. work per CPU-second with auth and TLS as a share
// of without) are reported.
//
//	go test -run '^$' -bench 'ScalerProcess|RouterProcess' -benchtime 10x -count 3 ./natsauth/
var processModes = []struct {
	name      string
	auth, tls bool
}{{"open", false, false}, {"auth+tls", true, true}}

// BenchmarkScalerProcess offers 40,000 reports/s (four 10,000-follower
// fleets heartbeating every second) for 2.5 s a sample, about half a second
// of the scaler's CPU: 256 members on 64 connections, consecutive reports
// on different connections and spread over every millisecond, so that
// they reach NATS one by one, as from independent agents.
func BenchmarkScalerProcess(b *testing.B) {
	benchProcessCost(b, "report", func(bin string, withAuth, withTLS bool) func() float64 {
		p := startScalerProcess(b, bin, withAuth, withTLS)
		return func() float64 { return p.cpuPerReport(b, 40_000, 2500*time.Millisecond) }
	})
}

// BenchmarkRouterProcess offers 1,500 creations/s from 8 clients for 4 s a
// sample.
func BenchmarkRouterProcess(b *testing.B) {
	benchProcessCost(b, "creation", func(bin string, withAuth, withTLS bool) func() float64 {
		p := startRouterProcess(b, bin, withAuth, withTLS)
		return func() float64 { return p.cpuPerCreation(b, 1500, 4*time.Second) }
	})
}

// benchProcessCost starts a child of the built binary per mode (start
// returns its sampler: CPU seconds per unit over one sample), takes every
// sample once per iteration, in rotating order, and reports the medians.
func benchProcessCost(b *testing.B, unit string, start func(bin string, withAuth, withTLS bool) func() float64) {
	if runtime.GOOS != "linux" {
		b.Skip("needs Linux: /proc and the per-process CPU clock")
	}
	bin := e2e.Binary(b)
	var samples []func() float64
	for _, m := range processModes {
		samples = append(samples, start(bin, m.auth, m.tls))
	}
	per := make([][]float64, len(samples))
	b.ResetTimer()
	for i := range b.N {
		for k := range samples {
			j := (i + k) % len(samples)
			per[j] = append(per[j], samples[j]())
		}
	}
	b.StopTimer()
	var ratios []float64
	for i := range per[0] {
		ratios = append(ratios, per[0][i]/per[1][i])
	}
	for j, m := range processModes {
		b.ReportMetric(benchtest.Median(per[j])*1e6, m.name+"-cpu-µs/"+unit)
	}
	b.ReportMetric(benchtest.Median(ratios), "auth+tls-"+unit+"s-per-cpu-ratio")
}

// paced calls f(n) every millisecond for window, n being what is due at
// rate per second since the start, and returns how many were due in all.
func paced(rate int, window time.Duration, f func(n int)) int {
	const tick = time.Millisecond
	start, sent := time.Now(), 0
	for next := start; time.Since(start) < window; next = next.Add(tick) {
		time.Sleep(time.Until(next))
		due := int(time.Since(start).Seconds() * float64(rate))
		f(due - sent)
		sent = due
	}
	return sent
}

// scalerProcess is a `headcount scaler` child on its own NATS, and the
// connections that publish its members' reports.
type scalerProcess struct {
	proc    *e2e.Proc
	ops     string // its /healthz /readyz /metrics listener
	pubs    []*nats.Conn
	members []benchMember
	sent    int // reports published so far
}

type benchMember struct {
	name, incarnation string
	seq               uint64
}

const (
	processService = "load"
	processMembers = 256
	processConns   = 64
)

func startScalerProcess(b *testing.B, bin string, withAuth, withTLS bool) *scalerProcess {
	b.Helper()
	n := startBenchNATS(b, withAuth, withTLS)
	p := &scalerProcess{ops: e2e.FreeAddr(b)}
	for i := range processMembers {
		p.members = append(p.members, benchMember{name: fmt.Sprintf("follower-%d", i), incarnation: uuid.NewString()})
	}
	// Each connection publishes for its share of the members.
	for c := range processConns {
		var ids []natsauth.Identity
		for i := c; i < processMembers; i += processConns {
			ids = append(ids, member(processService, p.members[i].name))
		}
		p.pubs = append(p.pubs, n.connect(b, ids...))
	}
	p.proc = e2e.RunEnv(b, "scaler", bin, n.env(b, natsauth.Identity{Role: natsauth.RoleReader}),
		// The members' addresses answer no identity probe: their reports
		// are applied unverified, as after a successful probe.
		"scaler", "--grpc-addr", "127.0.0.1:0", "--http-addr", p.ops, "--no-verify-followers")
	require.Eventually(b, func() bool { code, _ := e2e.Get(p.ops + "/readyz"); return code == http.StatusOK },
		30*time.Second, 20*time.Millisecond, "the scaler is ready")
	// Every member once, so that the measured reports are updates.
	p.publish(b, processMembers)
	p.waitApplied(b)
	return p
}

// cpuPerReport offers rate reports/s for window, waits until the scaler has
// applied them all, and returns its CPU seconds per report meanwhile.
func (p *scalerProcess) cpuPerReport(b *testing.B, rate int, window time.Duration) float64 {
	pid := p.proc.Cmd.Process.Pid
	cpu0 := e2e.CPUSeconds(b, pid)
	n := paced(rate, window, func(n int) { p.publish(b, n) })
	p.waitApplied(b)
	return (e2e.CPUSeconds(b, pid) - cpu0) / float64(n)
}

// publish sends n reports, one member after another, each on its member's
// connection, as an agent would write it.
func (p *scalerProcess) publish(b *testing.B, n int) {
	for range n {
		i := p.sent % processMembers
		m := &p.members[i]
		m.seq++
		data, err := json.Marshal(fleet.Report{
			V: fleet.Version, Service: processService, Follower: m.name, Incarnation: m.incarnation,
			Role: fleet.RoleFollower, State: fleet.StateReady, Control: "10.0.0.1:8081", Streaming: "10.0.0.1:8080",
			Instances: int64(m.seq % 50), Created: int64(m.seq), Seq: m.seq, TTLMillis: 600_000,
		})
		require.NoError(b, err)
		require.NoError(b, p.pubs[i%processConns].Publish(subjects.Report(processService, m.name), data))
		p.sent++
	}
}

// waitApplied waits until the scaler has applied every report sent (its
// /metrics says so): then the CPU it spent on them is all counted.
func (p *scalerProcess) waitApplied(b *testing.B) {
	b.Helper()
	for _, c := range p.pubs {
		require.NoError(b, c.Flush())
	}
	deadline := time.Now().Add(30 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if n, ok := e2e.Metric(p.ops, `headcount_messages_applied_total{kind="report"}`); ok {
			if int(n) == p.sent {
				return
			}
			require.Less(b, int(n), p.sent, "the scaler applied more reports than were sent")
		}
		require.True(b, time.Now().Before(deadline), "the scaler did not apply all %d reports in 30 s", p.sent)
		time.Sleep(wait)
	}
}

// routerProcess is a `headcount router` child on its own NATS, placing on a
// follower of this process that it verifies as it would a real one.
type routerProcess struct {
	proc    *e2e.Proc
	control string
	client  *http.Client
}

func startRouterProcess(b *testing.B, bin string, withAuth, withTLS bool) *routerProcess {
	b.Helper()
	n := startBenchNATS(b, withAuth, withTLS)
	startFollower(b, n)
	p := &routerProcess{control: "http://" + e2e.FreeAddr(b), client: benchClient()}
	p.proc = e2e.RunEnv(b, "router", bin, n.env(b, natsauth.Identity{Role: natsauth.RoleRouter, Service: benchService, Name: "r-1"}),
		"router", "--service", benchService, "--id", "r-1", "--streaming-addr", e2e.FreeAddr(b), "--control-addr", p.control[len("http://"):])
	require.Eventually(b, func() bool { return create(p.client, p.control) == nil }, 30*time.Second, 20*time.Millisecond,
		"the router places on the follower")
	return p
}

// cpuPerCreation offers rate creations/s from 8 clients for window and
// returns the router's CPU seconds per creation meanwhile.
func (p *routerProcess) cpuPerCreation(b *testing.B, rate int, window time.Duration) float64 {
	pid := p.proc.Cmd.Process.Pid
	cpu0 := e2e.CPUSeconds(b, pid)
	due := make(chan struct{}, rate)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range due {
				if err := create(p.client, p.control); err != nil {
					b.Error(err)
				}
			}
		})
	}
	n := paced(rate, window, func(n int) {
		for range n {
			due <- struct{}{}
		}
	})
	close(due)
	wg.Wait()
	return (e2e.CPUSeconds(b, pid) - cpu0) / float64(n)
}
