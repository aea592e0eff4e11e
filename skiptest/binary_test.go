package skiptest_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/skiptest"
)

// The built `headcount sidecar` in front of a real Skip follower: flags and
// HEADCOUNT_* env wiring, ops endpoints, and the drain on a real SIGTERM —
// draining while a stream is open, then gone and exit 0 once it is collected.
func TestSidecarBinaryDrainsARealSkipFollowerOnSIGTERM(t *testing.T) {
	dir := skiptest.Setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	bin := e2e.Binary(t)

	url := natstest.Server(t)
	view := fleet.NewView()
	watcher, err := fleet.Watch(natstest.Connect(t, url), view, fleet.WatchConfig{Services: []string{service}, Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(watcher.Close)

	leader := startSkip(ctx, t, dir, skiptest.Member{Leader: true})
	follower := startSkip(ctx, t, dir, skiptest.Member{
		LeaderControl: port(t, leader.Control), LeaderStreaming: port(t, leader.Streaming), Prefix: "bin-f1",
	})
	control, streaming, opsAddr := loopback(t), loopback(t), loopback(t)
	sc := exec.Command(bin, "sidecar",
		"--nats-url", url, "--id", "bin-f1",
		"--upstream-control", follower.Control, "--upstream-streaming", follower.Streaming,
		"--listen-control", control, "--listen-streaming", streaming, "--ops-addr", opsAddr,
		"--instance-ttl", "1s", "--health-period", "100ms", "--heartbeat", "5s", "--drain-timeout", "20s")
	sc.Env = append(os.Environ(), "HEADCOUNT_SERVICE="+service)
	logs, err := os.Create(filepath.Join(t.TempDir(), "sidecar.log"))
	require.NoError(t, err)
	defer logs.Close()
	sc.Stdout, sc.Stderr = logs, logs
	require.NoError(t, sc.Start())
	exited := make(chan error, 1)
	go func() { exited <- sc.Wait() }()
	t.Cleanup(func() {
		_ = sc.Process.Kill()
		if data, _ := os.ReadFile(logs.Name()); t.Failed() {
			t.Logf("sidecar logs:\n%s", data)
		}
	})

	require.Eventually(t, func() bool {
		code, _ := get(opsAddr + "/readyz")
		return code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "/readyz never 200")
	code, id := e2e.Do(t, http.MethodPost, control+"/v1/streams/posts", "{}")
	require.Equal(t, http.StatusCreated, code, id)
	require.True(t, strings.HasPrefix(id, "bin-f1/"), id)
	st, code := e2e.Subscribe(t, streaming, id)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "init", st.Next(t).Kind)
	member := func() fleet.Member { m, _ := view.Member(service, "bin-f1"); return m }
	require.Eventually(t, func() bool { return member().Instances == 1 && member().State == fleet.StateReady },
		10*time.Second, 20*time.Millisecond, "the view has %+v", member())
	assert.Equal(t, control, member().Control, "the sidecar's listener is registered")
	_, metrics := get(opsAddr + "/metrics")
	assert.Contains(t, metrics, "headcount_sidecar_instances 1")

	require.NoError(t, sc.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool { return member().State == fleet.StateDraining }, 10*time.Second, 20*time.Millisecond)
	code, _ = get(opsAddr + "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	select {
	case err := <-exited:
		t.Fatalf("the sidecar exited with a stream open: %v", err)
	case <-time.After(500 * time.Millisecond):
	}

	st.Close() // collected after the 1 s TTL: the drain ends
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status")
	case <-time.After(15 * time.Second):
		t.Fatal("the sidecar did not exit after its last instance went")
	}
	// "gone" reaches the view over NATS after the exit: within 5 s, where
	// the 15 s TTL of the 5 s heartbeat would take longer.
	assert.Eventually(t, func() bool { _, registered := view.Member(service, "bin-f1"); return !registered },
		5*time.Second, 10*time.Millisecond, "gone removes the member at once")
}

// loopback is a free 127.0.0.1 address.
func loopback(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

func get(addr string) (int, string) {
	resp, err := http.Get("http://" + addr)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
