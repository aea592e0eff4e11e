package local_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/status"
)

// upRun is the built binary's up, and a view of its service "demo" fed
// with up's read-only identity.
type upRun struct {
	*e2e.Up
	bin  string
	view *fleet.View
	w    *fleet.Watcher
}

// startUp runs up with args (skipped with -short: it builds and runs the
// whole system).
func startUp(t *testing.T, args ...string) upRun {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	u := upRun{bin: e2e.Binary(t), view: fleet.NewView()}
	u.Up = e2e.StartUp(t, u.bin, args...)
	var err error
	u.w, err = fleet.Watch(natstest.Connect(t, u.NATS, nats.UserCredentials(u.Creds)), u.view, fleet.WatchConfig{Services: []string{"demo"}})
	require.NoError(t, err)
	t.Cleanup(u.w.Close)
	return u
}

func TestUpScalesOutWithStreamsAndBackInWhenTheyClose(t *testing.T) {
	up := startUp(t, "--target", "10", "--plan", "pro",
		"--scale-down-window", "4s", "--instance-ttl", "1s", "--drain-timeout", "10s")
	view, bin := up.view, up.bin
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
	up := startUp(t, "--target", "10", "--drain-timeout", "5s")
	view, w := up.view, up.w
	_, err := nats.Connect(up.NATS)
	require.ErrorContains(t, err, "Authorization Violation", "anonymous connect")

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

// A follower that up stops (scale-down) or that dies (kill -9; restarted
// under a new identity) loses its NATS identity at once: credentials copied
// from it while it ran are cut and refused, its file is gone, and the
// follower that remains keeps reporting with its own.
func TestUpRevokesTheIdentityOfAnExitedFollower(t *testing.T) {
	up := startUp(t, "--target", "1", "--plan", "pro",
		"--scale-down-window", "2s", "--instance-ttl", "1s", "--drain-timeout", "5s")
	view, w, bin := up.view, up.w, up.bin
	ready := func(n int) func() bool { return func() bool { return view.Totals("demo").Ready == n } }
	require.Eventually(t, ready(1), 30*time.Second, 50*time.Millisecond, "one follower at rest")

	// Two streams at one per replica: two followers.
	streams := openDemoStreams(t, up.Control, up.Streaming, 2)
	require.Eventually(t, ready(2), 30*time.Second, 50*time.Millisecond, "two followers")

	// What a compromised follower could take: its credentials file, and a
	// connection of its own.
	dir := filepath.Dir(up.Creds)
	stolen := map[string]string{}
	cut := map[string]chan struct{}{}
	for _, id := range []string{"follower-1", "follower-2"} {
		b, err := os.ReadFile(filepath.Join(dir, id+".creds"))
		require.NoError(t, err)
		stolen[id] = filepath.Join(t.TempDir(), id+".creds")
		require.NoError(t, os.WriteFile(stolen[id], b, 0o600))
		closed := make(chan struct{})
		nc, err := nats.Connect(up.NATS, nats.UserCredentials(stolen[id]), nats.NoReconnect(),
			nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		require.NoError(t, err, id)
		t.Cleanup(nc.Close)
		cut[id] = closed
	}
	refused := func(id string, fileGone bool) {
		t.Helper()
		select {
		case <-cut[id]:
		case <-time.After(20 * time.Second):
			t.Fatalf("the connection made with %s's credentials stayed open", id)
		}
		_, err := nats.Connect(up.NATS, nats.UserCredentials(stolen[id]))
		require.ErrorContains(t, err, "Authorization Violation", "%s's copied credentials", id)
		if fileGone {
			_, err = os.Stat(filepath.Join(dir, id+".creds"))
			require.ErrorIs(t, err, os.ErrNotExist, "%s's file", id)
		}
	}

	// Scale-down: the streams close, one follower is stopped after the window.
	for _, s := range streams {
		s.Close()
	}
	var stopped, kept string
	require.Eventually(t, func() bool {
		if view.Totals("demo").Ready != 1 || view.Totals("demo").Draining != 0 {
			return false
		}
		for _, id := range []string{"follower-1", "follower-2"} {
			if _, err := os.Stat(filepath.Join(dir, id+".creds")); errors.Is(err, os.ErrNotExist) {
				stopped = id
			} else if m, ok := view.Member("demo", id); ok && m.State == fleet.StateReady {
				kept = id
			}
		}
		return stopped != "" && kept != ""
	}, 60*time.Second, 100*time.Millisecond, "one follower stopped; view: %+v", view.Totals("demo"))
	refused(stopped, true)
	select {
	case <-cut[kept]:
		t.Fatalf("%s's connection was cut with %s's", kept, stopped)
	default:
	}
	before, _ := view.Member("demo", kept)
	require.NoError(t, w.RollCall())
	require.Eventually(t, func() bool { m, ok := view.Member("demo", kept); return ok && m.Seq > before.Seq },
		10*time.Second, 20*time.Millisecond, "%s still reports", kept)

	// kill -9: restarted under a new identity; the old one is revoked.
	out, err := exec.Command(bin, "status", "--nats-url", up.NATS, "--nats-creds", up.Creds, "--json").Output()
	require.NoError(t, err)
	var st status.Status
	require.NoError(t, json.Unmarshal(out, &st))
	pid := 0
	for _, m := range st.Members {
		if m.ID == kept {
			_, _ = fmt.Sscanf(m.Process[strings.Index(m.Process, "(pid ")+5:], "%d", &pid)
		}
	}
	require.NotZero(t, pid, "%s's pid in %+v", kept, st.Members)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	refused(kept, false) // its file is rewritten for the restart
	require.Eventually(t, func() bool {
		m, ok := view.Member("demo", kept)
		return ok && m.State == fleet.StateReady && m.Incarnation != before.Incarnation
	}, 30*time.Second, 50*time.Millisecond, "%s restarted", kept)
	natstest.Connect(t, up.NATS, nats.UserCredentials(filepath.Join(dir, kept+".creds")))

	up.Stop(t, 30*time.Second)
	require.NotContains(t, up.Logs(), "cannot revoke")
}
