package router_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// kill -9 of the leader process under creations, writes and open streams,
// kept down 2 s (past its report's ttl: no leader registered), then
// restarted on its addresses: no write that did not reach it fails, no
// creation fails, no stream is cut. A write in flight at the kill reached
// the leader and may have been applied: it is the one failure allowed (a
// 502, never resent).
func TestProcessesLeaderRestartCostsNoRefusedWriteCreationOrStream(t *testing.T) {
	f := startProcessFleet(t)
	f.follower(t, "follower-a")
	f.follower(t, "follower-b")
	control, streaming := e2e.FreeAddr(t), e2e.FreeAddr(t)
	startProc(t, f.bin, append([]string{"router", "--id", "r-1", "--control-addr", control, "--streaming-addr", streaming,
		"--write-retry", "60s"}, f.common...)...)
	require.Eventually(t, func() bool {
		_, lead := f.view.Leader(svc)
		resp, err := http.Get("http://" + control + "/readyz")
		if err != nil {
			return false // not listening yet
		}
		_ = resp.Body.Close()
		return lead && f.view.Totals(svc).Ready == 2 && resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "the leader, two followers and the router")

	load := &e2e.Load{
		Endpoints: func() []e2e.Endpoint { return []e2e.Endpoint{{Control: control, Streaming: streaming}} },
		Workers:   1, Every: 100 * time.Millisecond, KeepStreams: 50, WriteEvery: 50 * time.Millisecond,
	}
	load.Start()
	writes := func(n int) func() bool {
		from := load.Snapshot().Writes
		return func() bool { return load.Snapshot().Writes >= from+n }
	}
	require.Eventually(t, writes(20), 30*time.Second, 10*time.Millisecond, "writes before the kill")

	f.leader.Signal(t, syscall.SIGKILL)
	<-f.leader.Done()
	killed := time.Now()
	retried := func() float64 { return metricAt(t, "http://"+control, writesRetried) }
	require.Eventually(t, func() bool { return retried() >= 1 }, 10*time.Second, 10*time.Millisecond, "writes wait for the leader")
	require.Eventually(t, func() bool { _, lead := f.view.Leader(svc); return !lead }, 10*time.Second, 10*time.Millisecond,
		"the dead leader leaves the view")
	time.Sleep(time.Until(killed.Add(2 * time.Second)))
	during := load.Snapshot()
	f.startLeader(t)
	require.Eventually(t, writes(20), 60*time.Second, 10*time.Millisecond, "writes after the restart")
	require.Eventually(t, func() bool { return load.Snapshot().Created >= during.Created+10 }, 60*time.Second, 10*time.Millisecond,
		"creations after the restart")
	counts := load.Stop()
	t.Logf("leader down %v; writes retried %v; %s", time.Since(killed).Round(time.Millisecond), retried(), counts)

	require.Zero(t, e2e.Failures(counts.CreateFailed), "creations: %s", counts)
	require.Zero(t, e2e.Failures(counts.StreamFailed)+e2e.Failures(counts.StreamsCut), "streams: %s", counts)
	reached := counts.WriteFailed["502 upstream_error"]
	require.LessOrEqual(t, reached, 1, "at most the write in flight at the kill: %s", counts)
	require.Equal(t, reached, e2e.Failures(counts.WriteFailed), "no write that never reached the leader failed: %s", counts)
}
