package natsauth_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsembed"
)

// The scaler's own report intake: the built binary's `headcount scaler` in
// its own process, on an open NATS and on one with its JWT identity and
// TLS, each fed the same fixed rate of reports from 256 members (8
// connections, as many publishers would be) by this process, which also
// runs both NATS servers. What is measured is the scaler process's CPU time
// (/proc/<pid>/stat) per report applied to its view, so neither the
// publishers' nor the server's encryption is charged to it; every
// iteration measures both in rotating order, and the median of the
// per-iteration ratios (open CPU per report / auth+tls CPU per report, i.e.
// reports per CPU-second with auth and TLS as a share of without) is
// reported.
//
//	go test -run '^$' -bench ScalerProcess -benchtime 10x -count 3 ./natsauth/
func BenchmarkScalerProcess(b *testing.B) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc")
	}
	bin := e2e.Binary(b)
	modes := []struct {
		name      string
		auth, tls bool
	}{{"open", false, false}, {"auth+tls", true, true}}
	scalers := make([]*scalerProcess, len(modes))
	for i, m := range modes {
		scalers[i] = startScalerProcess(b, bin, m.auth, m.tls)
	}
	// 40,000 reports/s (four 10,000-follower fleets heartbeating every
	// second) for 2.5 s: about half a second of the scaler's CPU a sample,
	// fifty times the 10 ms step of /proc's counters.
	const rate, window = 40_000, 2500 * time.Millisecond
	perReport := make([][]float64, len(modes))
	b.ResetTimer()
	for i := range b.N {
		for k := range scalers {
			j := (i + k) % len(scalers)
			perReport[j] = append(perReport[j], scalers[j].cpuPerReport(b, rate, window))
		}
	}
	b.StopTimer()
	var ratios []float64
	for i := range perReport[0] {
		ratios = append(ratios, perReport[0][i]/perReport[1][i])
	}
	b.ReportMetric(median(perReport[0])*1e6, "open-scaler-cpu-µs/report")
	b.ReportMetric(median(perReport[1])*1e6, "auth+tls-scaler-cpu-µs/report")
	b.ReportMetric(median(ratios), "auth+tls-scaler-intake-ratio")
}

// scalerProcess is a `headcount scaler` child on its own NATS, and the
// connections that publish its members' reports.
type scalerProcess struct {
	proc    *e2e.Proc
	http    string // its ops listener
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
	processConns   = 8
)

func startScalerProcess(b *testing.B, bin string, withAuth, withTLS bool) *scalerProcess {
	b.Helper()
	var opts natsembed.Options
	var tlsOpts []nats.Option
	var env []string
	if withTLS {
		serverTLS, caFile := selfSigned(b)
		opts.TLS = serverTLS
		var err error
		tlsOpts, err = natsauth.Client{TLSCA: caFile}.Options()
		require.NoError(b, err)
		env = append(env, "HEADCOUNT_NATS_TLS_CA="+caFile)
	}
	var auth *natsauth.Authority
	if withAuth {
		var err error
		auth, err = natsauth.NewAuthority(subjects)
		require.NoError(b, err)
		opts.Auth = auth
		creds, err := auth.Issue(natsauth.Identity{Role: natsauth.RoleReader})
		require.NoError(b, err)
		file, err := creds.WriteFile(b.TempDir(), "scaler")
		require.NoError(b, err)
		env = append(env, "HEADCOUNT_NATS_CREDS="+file)
	}
	s, err := natsembed.Start(opts)
	require.NoError(b, err)
	b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })

	p := &scalerProcess{}
	for i := range processMembers {
		p.members = append(p.members, benchMember{name: fmt.Sprintf("follower-%d", i), incarnation: uuid.NewString()})
	}
	// Each connection publishes for its share of the members, with their
	// identities (one user may hold several).
	for c := range processConns {
		conn := slices.Clone(tlsOpts)
		if auth != nil {
			var ids []natsauth.Identity
			for i := c; i < processMembers; i += processConns {
				ids = append(ids, natsauth.Identity{Role: natsauth.RoleMember, Service: processService, Name: p.members[i].name})
			}
			creds, err := auth.Issue(ids...)
			require.NoError(b, err)
			conn = append(conn, creds.Option())
		}
		p.pubs = append(p.pubs, natstest.Connect(b, s.ClientURL(), conn...))
	}

	p.http = e2e.FreeAddr(b)
	p.proc = e2e.RunEnv(b, "scaler", bin, append(env, "HEADCOUNT_NATS_URL="+s.ClientURL()),
		// The members' addresses answer no identity probe: their reports
		// are applied unverified, as after a successful probe.
		"scaler", "--grpc-addr", "127.0.0.1:0", "--http-addr", p.http, "--no-verify-followers")
	require.Eventually(b, func() bool { code, _ := e2e.Get(p.http + "/readyz"); return code == http.StatusOK },
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
	cpu0, before := e2e.CPUSeconds(b, pid), p.sent
	const tick = 5 * time.Millisecond
	start := time.Now()
	sent := 0
	for next := start; time.Since(start) < window; next = next.Add(tick) {
		time.Sleep(time.Until(next))
		due := int(time.Since(start).Seconds() * float64(rate))
		p.publish(b, due-sent)
		sent = due
	}
	p.waitApplied(b)
	return (e2e.CPUSeconds(b, pid) - cpu0) / float64(p.sent-before)
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
		if n, ok := e2e.Metric(p.http, `headcount_messages_applied_total{kind="report"}`); ok {
			if int(n) == p.sent {
				return
			}
			require.Less(b, int(n), p.sent, "the scaler applied more reports than were sent")
		}
		require.True(b, time.Now().Before(deadline), "the scaler did not apply all %d reports in 30 s", p.sent)
		time.Sleep(wait)
	}
}
