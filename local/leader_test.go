package local_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/status"
)

// memberPID is the first pid of member id's processes, as `headcount
// status` shows them from up's decision.
func (u upRun) memberPID(t *testing.T, id string) int {
	t.Helper()
	out, err := exec.Command(u.bin, "status", "--nats-url", u.NATS, "--nats-creds", u.Creds, "--json").Output()
	require.NoError(t, err)
	var st status.Status
	require.NoError(t, json.Unmarshal(out, &st))
	pid := 0
	for _, m := range st.Members {
		if m.ID == id {
			_, _ = fmt.Sscanf(m.Process[strings.Index(m.Process, "(pid ")+5:], "%d", &pid)
		}
	}
	require.NotZero(t, pid, "%s's pid in %+v", id, st.Members)
	return pid
}

// kill -9 of the demo leader, its own process under up: up restarts it at
// once, and the follower (which outlives it) serves the new leader's
// collections soon after it is ready: a write made to the restarted leader
// is in the init of a stream created through the router, and nothing the
// dead leader held is (a leader keeps its inputs in memory).
func TestUpRestartsAKilledLeaderAndItsFollowersServeAgain(t *testing.T) {
	up := startUp(t, "--target", "10", "--instance-ttl", "2s", "--drain-timeout", "5s")
	view := up.view
	require.Eventually(t, func() bool { tot := view.Totals("demo"); return tot.Leaders == 1 && tot.Ready == 1 },
		30*time.Second, 20*time.Millisecond, "a leader and a follower")
	code, body := e2e.Do(t, http.MethodPatch, up.Control+"/v1/inputs/posts", `[["before",[1]]]`)
	require.Equal(t, http.StatusOK, code, body)
	before, _ := view.Leader("demo")

	require.NoError(t, syscall.Kill(up.memberPID(t, before.Follower), syscall.SIGKILL))
	killed := time.Now()
	var leaderReady time.Time
	require.Eventually(t, func() bool {
		m, ok := view.Leader("demo")
		leaderReady = time.Now()
		return ok && m.Incarnation != before.Incarnation
	}, 60*time.Second, 5*time.Millisecond, "a new leader incarnation, ready")

	var serving time.Time
	var init string
	for n := 0; serving.IsZero() && time.Since(leaderReady) < time.Minute; n++ {
		key := fmt.Sprintf("after-%d", n)
		if code, _ := e2e.Do(t, http.MethodPatch, up.Control+"/v1/inputs/posts", `[["`+key+`",[1]]]`); code != http.StatusOK {
			continue
		}
		code, id := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/collection", `{"name":"posts"}`)
		if code != http.StatusCreated {
			continue
		}
		s, code := e2e.Subscribe(t, up.Streaming, id)
		if code != http.StatusOK {
			continue
		}
		if e := s.Next(t); e.Kind == "init" && strings.Contains(e.Data, key) {
			serving, init = time.Now(), e.Data
		}
		s.Close()
	}
	require.False(t, serving.IsZero(), "no follower served the new leader's data within a minute of it being ready")
	require.NotContains(t, init, "before", "the restarted leader starts empty")
	t.Logf("leader ready %v after kill -9; a follower served its data %v after that",
		leaderReady.Sub(killed).Round(time.Millisecond), serving.Sub(leaderReady).Round(time.Millisecond))
	// Generous bounds for a loaded machine: the targets are about 1 s and 3 s.
	require.Less(t, leaderReady.Sub(killed), 30*time.Second)
	require.Less(t, serving.Sub(leaderReady), 15*time.Second)

	up.Stop(t, 30*time.Second)
}
