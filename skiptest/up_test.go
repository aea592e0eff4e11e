package skiptest_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/skiptest"
)

// `headcount up` with the real Skip service as its leader and followers
// (--leader-cmd, --follower-cmd), each put behind a sidecar by the
// supervisor: it scales out on the instances the sidecars count, a write to
// the leader reaches the clients of every follower, and it scales back in.
func TestUpRunsRealSkipBehindSidecars(t *testing.T) {
	dir := skiptest.Setup(t)
	run := "cd '" + dir + "' && exec node " + skiptest.ServiceFile
	up := e2e.StartUp(t, e2e.Binary(t), "--service", "skipsvc", "--leader-cmd", run, "--follower-cmd", run,
		"--target", "3", "--plan", "starter", "--placement", "least-loaded", "--instance-ttl", "2s", "--scale-down-window", "3s", "--drain-timeout", "10s")

	view := fleet.NewView()
	w, err := fleet.Watch(natstest.Connect(t, up.NATS, nats.UserCredentials(up.Creds)), view, fleet.WatchConfig{Services: []string{"skipsvc"}, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	totals := func() fleet.Totals { return view.Totals("skipsvc") }
	require.Eventually(t, func() bool { return totals().Ready == 1 && totals().Leaders == 1 }, 60*time.Second, 50*time.Millisecond,
		"a Skip leader and follower registered by their sidecars: %+v", totals())

	open := func(n int) []*e2e.Stream {
		var out []*e2e.Stream
		for range n {
			code, id := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/posts", "{}")
			require.Equal(t, http.StatusCreated, code, id)
			s, code := e2e.Subscribe(t, up.Streaming, id)
			require.Equal(t, http.StatusOK, code, id)
			require.Equal(t, "init", s.Next(t).Kind)
			out = append(out, s)
		}
		return out
	}
	// 4 instances at 3 per replica: a second follower starts; the next
	// instances go to it, the emptiest.
	streams := open(4)
	require.Eventually(t, func() bool { return totals().Ready == 2 }, 60*time.Second, 50*time.Millisecond, "scaled out: %+v", totals())
	streams = append(streams, open(2)...)
	require.Eventually(t, func() bool { return totals().Instances == 6 }, 10*time.Second, 20*time.Millisecond,
		"the sidecars count every instance: %+v", totals())
	// Every follower ends up serving some of them: the emptiest gets new
	// ones, and the rebalance evens out the rest (a move counts its instance
	// twice for a moment, which can start a third follower: docs/moving.md).
	require.Eventually(t, func() bool {
		for _, m := range view.Members("skipsvc") {
			if m.Role == fleet.RoleFollower && m.State == fleet.StateReady && m.Instances == 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "every follower serves some of the streams: %+v", view.Members("skipsvc"))

	code, body := e2e.Do(t, http.MethodPatch, up.Control+"/v1/inputs/posts", `[["p1",[{"title":"hello"}]]]`)
	require.Equal(t, http.StatusOK, code, body)
	// The scale-out also rebalanced the streams (docs/moving.md): a moved
	// one sees a fresh init on its connection, so read states, not events.
	for i, s := range streams {
		c := &e2e.Client{ID: strconv.Itoa(i), Stream: s}
		c.Until(t, `"p1"`)
		require.True(t, strings.Contains(c.State[`"p1"`], "hello"), "stream %d has %v", i, c.State)
	}

	for _, s := range streams {
		s.Close()
	}
	require.Eventually(t, func() bool {
		tot := totals()
		return tot.Ready == 1 && tot.Draining == 0 && tot.Instances == 0
	}, 60*time.Second, 100*time.Millisecond, "scaled back in: %+v", totals())

	up.Stop(t, 40*time.Second) // Ctrl-C drains and stops everything
	require.NotContains(t, up.Logs(), "Permissions Violation", "up and every sidecar stay within their NATS grants")
}
