package router_test

import (
	"bufio"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// kill -9 of the only follower: no follower can take its streams. Through
// r-1 (--stream-wait 60s) they stay open with keep-alive comments and
// continue on the next follower that is ready, each with one fresh init
// then the update of a write made after; through r-2 (--stream-wait 1s)
// they end cleanly, counted as expired.
func TestProcessesStreamsWaitOutAnOutageOfEveryFollower(t *testing.T) {
	f := startProcessFleet(t)
	a := f.follower(t, "follower-a")
	type routerProc struct{ control, streaming string }
	var routers []routerProc
	for _, r := range []struct{ id, wait string }{{"r-1", "60s"}, {"r-2", "1s"}} {
		c, s := e2e.FreeAddr(t), e2e.FreeAddr(t)
		startProc(t, f.bin, append([]string{"router", "--id", r.id, "--control-addr", c, "--streaming-addr", s,
			"--stream-wait", r.wait, "--stream-keepalive", "200ms"}, f.common...)...)
		routers = append(routers, routerProc{c, s})
	}
	require.Eventually(t, func() bool {
		for _, r := range routers {
			resp, err := http.Get("http://" + r.control + "/readyz")
			if err != nil {
				return false // not listening yet
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
		}
		_, lead := f.view.Leader(svc)
		return lead && f.view.Totals(svc).Ready == 1
	}, 30*time.Second, 20*time.Millisecond, "the leader, a follower and two routers")
	open := func(r routerProc, n int) []*e2e.Client {
		var out []*e2e.Client
		for range n {
			code, id := e2e.Do(t, http.MethodPost, r.control+"/v1/streams/collection", createBody)
			require.Equal(t, http.StatusCreated, code, id)
			st, code := e2e.Subscribe(t, r.streaming, id)
			require.Equal(t, http.StatusOK, code)
			c := &e2e.Client{ID: id, Stream: st}
			require.Equal(t, "init", c.Next(t).Kind)
			out = append(out, c)
		}
		return out
	}
	waiting, expiring := open(routers[0], 20), open(routers[1], 5)
	// One more through r-1, read raw: the keep-alives are SSE comments.
	code, rawID := e2e.Do(t, http.MethodPost, routers[0].control+"/v1/streams/collection", createBody)
	require.Equal(t, http.StatusCreated, code, rawID)
	req, err := http.NewRequest(http.MethodGet, "http://"+routers[0].streaming+"/v1/streams/"+rawID, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	t.Cleanup(func() { _ = resp.Body.Close() })
	var comments atomic.Int64
	go func() {
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), ":") {
				comments.Add(1)
			}
		}
	}()
	metric := func(r routerProc, name string) float64 {
		return metricAt(t, "http://"+r.control, "headcount_router_streams_"+name+`{service="svc"}`)
	}

	a.Signal(t, syscall.SIGKILL)
	killed := time.Now()
	require.Eventually(t, func() bool { return metric(routers[0], "waiting") == 21 }, 10*time.Second, 10*time.Millisecond,
		"r-1 keeps its 21 streams waiting")
	require.Eventually(t, func() bool { return comments.Load() >= 3 }, 10*time.Second, 10*time.Millisecond, "keep-alive comments")
	for _, c := range expiring {
		assert.True(t, c.Stream.Ended(), "r-2's stream %s ended after its 1 s wait", c.ID)
	}
	assert.Equal(t, 5.0, metric(routers[1], "expired_total"))
	assert.Zero(t, metric(routers[1], "waiting"))
	for _, c := range waiting {
		require.True(t, c.Stream.Open(), "r-1's stream %s open through the outage", c.ID)
	}

	f.follower(t, "follower-b")
	require.Eventually(t, func() bool { return f.view.Totals(svc).Ready == 1 }, 30*time.Second, 10*time.Millisecond)
	ready := time.Now()
	require.Eventually(t, func() bool { return metric(routers[0], "resumed_total") == 21 }, 30*time.Second, 10*time.Millisecond)
	t.Logf("outage %v; 21 streams resumed %v after a follower was ready",
		ready.Sub(killed).Round(time.Millisecond), time.Since(ready).Round(time.Millisecond))
	assert.Zero(t, metric(routers[0], "waiting"))
	assert.Zero(t, metric(routers[0], "expired_total"))
	code, body := e2e.Do(t, http.MethodPatch, routers[0].control+"/v1/inputs/posts", `[["after",[1]]]`)
	require.Equal(t, http.StatusOK, code, body)
	for _, c := range waiting {
		c.Until(t, `"after"`)
		require.Equal(t, 2, c.Inits, "one fresh init after the outage: %v", c.Seen)
		owner, _, _ := strings.Cut(c.ID, "/")
		require.Equal(t, "follower-a", owner, "the client keeps its id")
	}
}
