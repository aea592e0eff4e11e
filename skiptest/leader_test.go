package skiptest_test

import (
	"encoding/json"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/skiptest"
)

// kill -9 of the real Skip leader under `up`: its followers exit with it
// (Skip 0.0.15), up restarts the leader at once and the followers when it
// is ready; every open stream stays open and continues with one fresh init
// then the update of a write made after the recovery, and creations made
// during the outage are held and answered.
func TestUpRealSkipLeaderKillCostsNoStream(t *testing.T) {
	dir := skiptest.Setup(t)
	run := "cd '" + dir + "' && exec node " + skiptest.ServiceFile
	up := e2e.StartUp(t, e2e.Binary(t), "--service", "skipsvc", "--leader-cmd", run, "--follower-cmd", run,
		"--target", "100", "--instance-ttl", "5s", "--drain-timeout", "10s")
	nc := natstest.Connect(t, up.NATS, nats.UserCredentials(up.Creds))
	view := fleet.NewView()
	w, err := fleet.Watch(nc, view, fleet.WatchConfig{Services: []string{"skipsvc"}, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	totals := func() fleet.Totals { return view.Totals("skipsvc") }
	require.Eventually(t, func() bool { return totals().Ready == 1 && totals().Leaders == 1 }, 60*time.Second, 50*time.Millisecond,
		"a Skip leader and follower: %+v", totals())

	const n = 10
	clients := make([]*e2e.Client, n)
	for i := range clients {
		code, id := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/posts", "{}")
		require.Equal(t, http.StatusCreated, code, id)
		s, code := e2e.Subscribe(t, up.Streaming, id)
		require.Equal(t, http.StatusOK, code, id)
		clients[i] = &e2e.Client{ID: id, Stream: s}
		require.Equal(t, "init", clients[i].Next(t).Kind)
	}

	// The leader's processes, from up's decision: the Skip process first.
	decisions := make(chan fleet.Decision, 16)
	sub, err := nc.Subscribe(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Decision("skipsvc"), func(m *nats.Msg) {
		var d fleet.Decision
		if json.Unmarshal(m.Data, &d) == nil {
			decisions <- d
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, w.RollCall())
	pid := 0
	for pid == 0 {
		select {
		case d := <-decisions:
			for _, p := range d.Processes {
				if p.ID == "leader-1" && len(p.PIDs) > 0 {
					pid = p.PIDs[0]
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no decision with the leader's processes")
		}
	}
	before, _ := view.Leader("skipsvc")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	killed := time.Now()

	// Creations during the outage are held, then answered.
	var held sync.WaitGroup
	codes := make([]int, 3)
	for i := range codes {
		held.Go(func() { codes[i], _ = e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/posts", "{}") })
	}
	var leaderBack, followersBack time.Time
	require.Eventually(t, func() bool {
		m, ok := view.Leader("skipsvc")
		leaderBack = time.Now()
		return ok && m.Incarnation != before.Incarnation
	}, 60*time.Second, 10*time.Millisecond, "the leader restarted")
	require.Eventually(t, func() bool {
		followersBack = time.Now()
		for _, m := range view.Members("skipsvc") {
			if m.Role == fleet.RoleFollower && m.State == fleet.StateReady && m.Incarnation != "" {
				return true
			}
		}
		return false
	}, 60*time.Second, 10*time.Millisecond, "a follower ready again")
	held.Wait()
	t.Logf("leader ready %v after kill -9; a follower ready %v after the leader",
		leaderBack.Sub(killed).Round(time.Millisecond), followersBack.Sub(leaderBack).Round(time.Millisecond))
	for i, code := range codes {
		assert.Equal(t, http.StatusCreated, code, "creation %d during the outage", i)
	}

	require.Eventually(t, func() bool {
		code, _ := e2e.Do(t, http.MethodPatch, up.Control+"/v1/inputs/posts", `[["after",[{"title":"back"}]]]`)
		return code == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "a write after the recovery")
	for _, c := range clients {
		c.Until(t, `"after"`)
		assert.Equal(t, 2, c.Inits, "stream %s: one fresh init after the outage: %v", c.ID, c.Seen)
		assert.True(t, c.Stream.Open(), "stream %s open", c.ID)
	}
	t.Logf("every stream continued %v after the kill", time.Since(killed).Round(time.Millisecond))
	up.Stop(t, 40*time.Second)
}
