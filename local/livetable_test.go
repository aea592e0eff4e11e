package local_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/local"
)

// TestLiveTableStaysOneTableAt80x24 runs the built binary's `up` in an
// 80×24 tmux pane while it scales 1 → 4 → 1 and checks, every 100 ms, that
// the pane shows one table, never a stale half of an earlier one.
func TestLiveTableStaysOneTableAt80x24(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("SKIPPED: tmux is not installed (apt-get install -y tmux; .ci/run does): the live table is untested")
	}
	bin := e2e.Binary(t)
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addrs.json")
	socket := "headcount-table-" + strconv.Itoa(os.Getpid())
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-L", socket, "-f", "/dev/null"}, args...)...).CombinedOutput()
		require.NoError(t, err, "tmux %v: %s", args, out)
		return string(out)
	}
	upCmd := strings.Join([]string{bin, "up", "--nats-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
		"--control-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0", "--addr-file", addrFile,
		"--instance-ttl", "1s", "--scale-down-window", "2s", "--drain-timeout", "5s",
		"2>" + filepath.Join(dir, "up.log")}, " ")
	tmux("new-session", "-d", "-s", "up", "-x", "80", "-y", "24", upCmd)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", socket, "kill-server").Run() })

	var addrs local.Addrs
	waitUntil(t, 2*time.Minute, func() bool {
		data, err := os.ReadFile(addrFile)
		return err == nil && json.Unmarshal(data, &addrs) == nil
	}, "up's addresses", func() string { return tmux("capture-pane", "-p", "-t", "up") })
	view, _ := natstest.Watch(t, natstest.Connect(t, addrs.NATS, nats.UserCredentials(addrs.NATSCreds)), fleet.WatchConfig{Services: []string{"demo"}})
	streaming, control := strings.TrimPrefix(addrs.Streaming, "http://"), strings.TrimPrefix(addrs.Control, "http://")

	// The pane must show exactly one table whenever it shows one.
	checks := 0
	check := func() {
		pane := tmux("capture-pane", "-p", "-t", "up")
		headers, titles := 0, 0
		for line := range strings.SplitSeq(pane, "\n") {
			if strings.HasPrefix(line, "MEMBER ") {
				headers++
			}
			if strings.HasPrefix(line, "service demo ") {
				titles++
			}
		}
		if headers+titles > 0 {
			require.Equal(t, 1, headers, "one table header in the pane:\n%s", pane)
			require.Equal(t, 1, titles, "one title line in the pane:\n%s", pane)
			checks++
		}
	}
	followers := func() int { t := view.Totals("demo"); return t.Ready + t.Starting + t.Draining }
	watch := func(within time.Duration, cond func() bool, what string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			check()
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v; %+v\n%s", what, within, view.Totals("demo"), tmux("capture-pane", "-p", "-t", "up"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		check()
	}
	watch(60*time.Second, func() bool { return followers() == 1 }, "one follower")

	streams := openDemoStreams(t, control, streaming, 35)
	watch(90*time.Second, func() bool { return view.Totals("demo").Ready == 4 }, "four ready followers")
	for _, s := range streams {
		s.Close()
	}
	watch(90*time.Second, func() bool { return followers() == 1 && view.Totals("demo").Instances == 0 }, "back to one follower")
	require.Greater(t, checks, 20, "the pane was checked throughout")
	t.Logf("the pane showed one table in each of %d looks:\n%s", checks, tmux("capture-pane", "-p", "-t", "up"))
}
