package router_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
)

// A router that starts after a stream moved knows the stream's old id at
// once: it calls the roll, and the router proxying the stream answers with
// its moved ids (instead of within a quarter of --moved-ttl, 2.5 min here).
func TestProcessesFreshRouterKnowsMovedIDsAtOnce(t *testing.T) {
	f := startProcessFleet(t)
	moved := make(chan fleet.Moved, 16)
	f.watcher.OnMoved(func(_ string, m fleet.Moved) {
		select {
		case moved <- m:
		default:
		}
	})
	followers := map[string]*e2e.Proc{}
	for _, id := range []string{"follower-a", "follower-b"} {
		followers[id] = f.follower(t, id)
	}
	router := func(id string) (control, streaming string) {
		control, streaming = e2e.FreeAddr(t), e2e.FreeAddr(t)
		startProc(t, f.bin, append([]string{"router", "--id", id, "--control-addr", control, "--streaming-addr", streaming,
			"--moved-ttl", "10m"}, f.common...)...)
		require.Eventually(t, func() bool {
			resp, err := http.Get("http://" + control + "/readyz")
			if err != nil {
				return false // not listening yet
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, 10*time.Second, 20*time.Millisecond)
		return control, streaming
	}
	require.Eventually(t, func() bool {
		_, lead := f.view.Leader(svc)
		return lead && f.view.Totals(svc).Ready == 2
	}, 30*time.Second, 20*time.Millisecond, "2 ready followers and the leader")
	control1, streaming1 := router("r-1")

	code, id := e2e.Do(t, http.MethodPost, control1+"/v1/streams/collection", createBody)
	require.Equal(t, http.StatusCreated, code, id)
	st, code := e2e.Subscribe(t, streaming1, id)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "init", st.Next(t).Kind)

	// Its owner drains: the stream moves, and the owner exits.
	owner, _, _ := fleet.SplitInstanceID(id)
	require.NoError(t, followers[owner].Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case m := <-moved:
		require.Equal(t, id, m.From)
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not move off its draining owner")
	}
	select {
	case <-followers[owner].Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("%s still draining after 20 s", owner)
	}
	require.True(t, st.Open(), "the moved stream is still open")

	// A router started now reaches the new owner by the old id through the
	// roll call it makes (about a quarter of a second; 10 s allowed for a
	// loaded machine, still far below the 2.5 min of the periodic
	// republishing at --moved-ttl 10m): a DELETE through it ends the stream.
	control2, _ := router("r-2")
	require.Eventually(t, func() bool {
		code, body := e2e.Do(t, http.MethodDelete, control2+"/v1/streams/"+id, "")
		t.Logf("DELETE of the old id through the fresh router: %d %s", code, body)
		return code == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "DELETE of the old id through a fresh router")
	require.True(t, st.Ended(), "deleting the instance by its old id ends the stream")
}
