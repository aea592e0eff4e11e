package local_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/status"
)

func TestUpScalesOutWithStreamsAndBackInWhenTheyClose(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	bin := e2e.Binary(t)
	up := e2e.StartUp(t, bin, "--target", "10", "--plan", "pro",
		"--scale-down-window", "4s", "--instance-ttl", "1s", "--drain-timeout", "10s")

	view := fleet.NewView()
	w, err := fleet.Watch(natstest.Connect(t, up.NATS, nats.UserCredentials(up.Creds)), view, fleet.WatchConfig{Services: []string{"demo"}})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	ready := func() int { return view.Totals("demo").Ready }
	require.Eventually(t, func() bool { return ready() == 1 }, 30*time.Second, 50*time.Millisecond, "one follower at rest")

	// 35 streams at 10 per replica: the target is ceil(35/10) = 4. Every
	// request must succeed while the fleet grows under it.
	var streams []*e2e.Stream
	var ids []string
	for i := range 35 {
		code, id := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/collection", `{"name":"posts"}`)
		require.Equal(t, http.StatusCreated, code, "creation %d: %s", i, id)
		s, code := e2e.Subscribe(t, up.Streaming, id)
		require.Equal(t, http.StatusOK, code, "stream %d (%s)", i, id)
		require.Equal(t, "init", s.Next(t).Kind)
		streams, ids = append(streams, s), append(ids, id)
		time.Sleep(30 * time.Millisecond) // a ramp, not a burst
	}
	// Reports are coalesced: the 35th instance may reach the view a beat
	// after the 35th stream opened.
	require.Eventually(t, func() bool { return ready() == 4 && view.Totals("demo").Instances == 35 }, 60*time.Second, 50*time.Millisecond,
		"4 followers ready for 35 instances; view: %+v", view.Totals("demo"))

	// `headcount status` shows the same fleet from NATS alone, and the
	// target that up's supervisor decided, with the processes it runs.
	out, err := exec.Command(bin, "status", "--nats-url", up.NATS, "--nats-creds", up.Creds, "--json").Output()
	require.NoError(t, err)
	var st status.Status
	require.NoError(t, json.Unmarshal(out, &st))
	require.Equal(t, int64(35), st.Live)
	require.Equal(t, int64(4), st.Target)
	require.Equal(t, "up", st.DecidedBy)
	require.Len(t, st.Members, 5, "leader and 4 followers")
	for _, m := range st.Members {
		if m.Role == string(fleet.RoleFollower) {
			require.Contains(t, m.Process, "running (pid ", "PROCESS of %s", m.ID)
		}
	}
	table, err := exec.Command(bin, "status", "--nats-url", up.NATS, "--nats-creds", up.Creds).Output()
	require.NoError(t, err)
	require.Contains(t, string(table), "replica target 4   bounds 1–10")

	// Every stream is still open on its owner.
	for i, s := range streams {
		require.True(t, s.Open(), "stream %s ended before its client closed it", ids[i])
		owner, _, _ := strings.Cut(ids[i], "/")
		m, ok := view.Member("demo", owner)
		require.True(t, ok, "owner %s of %s is in the fleet", owner, ids[i])
		require.Equal(t, fleet.StateReady, m.State)
	}

	for _, s := range streams {
		s.Close()
	}
	require.Eventually(t, func() bool {
		tot := view.Totals("demo")
		return tot.Ready == 1 && tot.Draining == 0 && tot.Starting == 0 && tot.Instances == 0
	}, 60*time.Second, 100*time.Millisecond, "back to one follower after the window; view: %+v", view.Totals("demo"))

	up.Stop(t, 30*time.Second) // Ctrl-C drains and stops everything
	require.NotContains(t, up.Logs(), "Permissions Violation", "up and every follower stay within their NATS grants")
}

// Only the fleet may speak on up's NATS: an anonymous client is refused, and
// a follower's own credentials (read from up's private directory, as a
// compromised follower could) cannot forge another member's `gone`, a
// placement or demand; the fleet is untouched.
func TestUpRefusesAnonymousAndForgedSpeakers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	up := e2e.StartUp(t, e2e.Binary(t), "--target", "10", "--drain-timeout", "5s")
	_, err := nats.Connect(up.NATS)
	require.ErrorContains(t, err, "Authorization Violation", "anonymous connect")

	view := fleet.NewView()
	w, err := fleet.Watch(natstest.Connect(t, up.NATS, nats.UserCredentials(up.Creds)), view, fleet.WatchConfig{Services: []string{"demo"}})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	require.Eventually(t, func() bool { return view.Totals("demo").Ready == 1 && view.Totals("demo").Leaders == 1 },
		30*time.Second, 50*time.Millisecond, "a leader and a follower")
	leader, _ := view.Leader("demo")

	violations := make(chan string, 16)
	follower := natstest.Connect(t, up.NATS, nats.UserCredentials(filepath.Join(filepath.Dir(up.Creds), "follower-1.creds")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations <- err.Error()
			}
		}))
	gone := leader.Report
	gone.State, gone.Seq = fleet.StateGone, leader.Seq+1_000_000
	body, err := json.Marshal(gone)
	require.NoError(t, err)
	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	for _, subj := range []string{subjects.Report("demo", "leader"), subjects.Placed("demo", "follower-1"), subjects.Demand("demo", "router-1")} {
		require.NoError(t, follower.Publish(subj, body))
		select {
		case v := <-violations:
			require.Contains(t, v, subj)
		case <-time.After(10 * time.Second):
			t.Fatalf("no permission violation for %s", subj)
		}
	}
	// The next roll call's answers arrive after anything the follower sent.
	require.NoError(t, w.RollCall())
	require.Eventually(t, func() bool { m, ok := view.Leader("demo"); return ok && m.Seq > leader.Seq },
		10*time.Second, 20*time.Millisecond, "the leader answered the roll call")
	got, ok := view.Leader("demo")
	require.True(t, ok)
	require.Equal(t, leader.Incarnation, got.Incarnation, "the forged gone retired nothing")
	require.Equal(t, fleet.StateReady, got.State)

	up.Stop(t, 30*time.Second)
}
