package local_test

// The front door: what a new user does first, tried as they would, with the
// real binary.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
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

// TestReadmeLoadLoopStopsOnOneCtrlC pastes README's load command into an
// interactive bash under tmux, waits for its 35 streams, presses Ctrl-C once
// and checks that every stream ended and the shell is still there.
func TestReadmeLoadLoopStopsOnOneCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	for _, tool := range []string{"tmux", "bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: %s is not installed (apt-get install -y tmux curl; .ci/run does): README's load loop is untested", tool)
		}
	}
	loop := readmeLine(t, "seq 35")
	bin := e2e.Binary(t)
	// A loaded machine may take seconds between a creation and its stream:
	// README's instance ttl (30 s) keeps the instance for it, as for a user.
	up := e2e.StartUp(t, bin, "--target", "100", "--drain-timeout", "5s")
	loop = strings.NewReplacer("http://127.0.0.1:8081", "http://"+up.Control, "http://127.0.0.1:8080", "http://"+up.Streaming).Replace(loop)
	require.NotContains(t, loop, "127.0.0.1:808", "the README's default addresses were all replaced")

	socket := "headcount-test-" + strconv.Itoa(os.Getpid())
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-L", socket, "-f", "/dev/null"}, args...)...).CombinedOutput()
		require.NoError(t, err, "tmux %v: %s", args, out)
		return string(out)
	}
	tmux("new-session", "-d", "-s", "load", "-x", "250", "-y", "50", "bash --norc --noprofile -i")
	streams := func() []int { return processesWith("curl", up.Streaming+"/v1/streams/") }
	t.Cleanup(func() {
		_ = exec.Command("tmux", "-L", socket, "kill-server").Run()
		for _, pid := range streams() { // only if the test failed
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	})
	// Type only once bash shows its prompt: keys sent while it starts may be
	// echoed and read twice, or lost.
	waitUntil(t, 10*time.Second, func() bool {
		pane := strings.TrimSpace(tmux("capture-pane", "-p", "-t", "load"))
		return strings.HasSuffix(pane, "$") || strings.HasSuffix(pane, "#")
	}, "bash's prompt", func() string { return tmux("capture-pane", "-p", "-t", "load") })
	tmux("send-keys", "-t", "load", "-l", loop)
	tmux("send-keys", "-t", "load", "Enter")

	view, _ := natstest.Watch(t, natstest.Connect(t, up.NATS, nats.UserCredentials(up.Creds)), fleet.WatchConfig{Services: []string{"demo"}})
	state := func() string {
		pane := strings.TrimSpace(tmux("capture-pane", "-p", "-t", "load"))
		tree, _ := exec.Command("ps", "-o", "pid,stat,args", "--forest", "-s", strings.TrimSpace(tmux("display", "-p", "-t", "load", "#{pane_pid}"))).CombinedOutput()
		return fmt.Sprintf("%d curl streams, view %+v\nthe shell shows:\n%s\nits processes:\n%s", len(streams()), view.Totals("demo"), pane, tree)
	}
	waitUntil(t, 60*time.Second, func() bool { return len(streams()) == 35 && view.Totals("demo").Instances == 35 }, "35 streams open", state)
	pane := tmux("capture-pane", "-p", "-t", "load")
	_, printed, counted := strings.Cut(pane, "\n35 of 35 streams opened")
	require.True(t, counted, "the loop counts what it opened:\n%s", pane)
	require.NotContains(t, printed, "failed", "and says nothing failed")

	tmux("send-keys", "-t", "load", "C-c")
	waitUntil(t, 5*time.Second, func() bool { return len(streams()) == 0 }, "one Ctrl-C ends every stream", state)

	tmux("send-keys", "-t", "load", "echo shell-still-here", "Enter")
	waitUntil(t, 5*time.Second, func() bool { return strings.Contains(tmux("capture-pane", "-p", "-t", "load"), "\nshell-still-here") },
		"the interactive shell survived the Ctrl-C", state)
	up.Stop(t, 30*time.Second)
}

// waitUntil polls cond until within passes, then fails t with what and the
// state at that moment.
func waitUntil(t *testing.T, within time.Duration, cond func() bool, what string, state func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; %s", what, within, state())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readmeLine is the one line of README.md's shell blocks that contains marker.
func readmeLine(t *testing.T, marker string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	var found []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.Contains(line, marker) && !strings.Contains(line, "`") {
			found = append(found, line)
		}
	}
	require.Len(t, found, 1, "README.md has one command with %q", marker)
	return found[0]
}

// processesWith lists the pids of processes named name whose command line
// contains s.
func processesWith(name, s string) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(data, "\x00"), []byte{0})
		if filepath.Base(string(args[0])) == name && bytes.Contains(data, []byte(s)) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestUpWithNATSPortTakenFailsFastNamingIt holds the NATS address itself and
// checks that up exits at once with an error naming it and the cause.
func TestUpWithNATSPortTakenFailsFastNamingIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := e2e.Binary(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	addr := taken.Addr().String()

	cmd := exec.Command(bin, "up", "--nats-addr", addr, "--streaming-addr", "127.0.0.1:0",
		"--control-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	require.NoError(t, cmd.Start())
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.Error(t, err, "up must fail")
	case <-time.After(15 * time.Second): // a process that fails does at once; a loaded machine starts it slowly
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("up still running 15 s after starting with %s taken; output:\n%s", addr, stderr.String())
	}
	t.Logf("failed after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	require.Contains(t, stderr.String(), addr)
	require.Contains(t, stderr.String(), "address already in use")
	require.Contains(t, stderr.String(), "--nats-addr")
	require.Contains(t, stderr.String(), "another `headcount up` is probably running")
}

// TestStatusShowsWhatUpDecides runs status next to up with a non-default
// target and plan: status prints up's target and bounds, not defaults.
func TestStatusShowsWhatUpDecides(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	bin := e2e.Binary(t)
	up := e2e.StartUp(t, bin, "--target", "5", "--plan", "starter")

	var st status.Status
	require.Eventually(t, func() bool {
		out, err := exec.Command(bin, "status", "--nats-url", up.NATS, "--nats-creds", up.Creds, "--json").Output()
		if err != nil || json.Unmarshal(out, &st) != nil {
			return false
		}
		return st.DecidedBy == "up" && st.Target == 1 && len(st.Members) == 2
	}, 30*time.Second, 100*time.Millisecond, "status sees up's decision and its leader and follower: %+v", st)
	require.Equal(t, 5.0, st.TargetPerReplica)
	require.Equal(t, int64(1), st.Min)
	require.Equal(t, int64(3), st.Max, "starter's bounds")

	table, err := exec.Command(bin, "status", "--nats-url", up.NATS, "--nats-creds", up.Creds).Output()
	require.NoError(t, err)
	require.Contains(t, string(table), "replica target 1   bounds 1–3   5 instances per replica   (decided by up)")
	require.Contains(t, string(table), "running (pid ", "the PROCESS column names the follower's processes")
	up.Stop(t, 30*time.Second)
}

// TestReadmeLoadLoopSaysWhatItOpenedUnderLoad runs README's load loop
// against `up --instance-ttl 5s` (README's faster round trip) while every
// core is kept busy: what the loop says it opened is open, and whatever it
// did not open it reports as failed.
func TestReadmeLoadLoopSaysWhatItOpenedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: %s is not installed: README's load loop is untested", tool)
		}
	}
	bin := e2e.Binary(t)
	up := e2e.StartUp(t, bin, "--instance-ttl", "5s", "--drain-timeout", "5s")
	loop := strings.NewReplacer("http://127.0.0.1:8081", "http://"+up.Control, "http://127.0.0.1:8080", "http://"+up.Streaming).Replace(readmeLine(t, "seq 35"))

	var busy atomic.Bool // every core spins until the test ends
	busy.Store(true)
	for range runtime.NumCPU() {
		go func() {
			for busy.Load() {
			}
		}()
	}
	defer busy.Store(false)

	out := &e2e.SyncBuffer{}
	cmd := exec.Command("bash", "-c", loop)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	streams := func() []int { return processesWith("curl", up.Streaming+"/v1/streams/") }
	opened := regexp.MustCompile(`(\d+) of 35 streams opened`)
	var said int
	waitUntil(t, 3*time.Minute, func() bool {
		m := opened.FindStringSubmatch(out.String())
		if m == nil {
			return false
		}
		said, _ = strconv.Atoi(m[1])
		return true
	}, "the loop's count", out.String)
	// Each open stream outlives the instance ttl; a failed one has said so.
	time.Sleep(6 * time.Second)
	failedCreations := strings.Count(out.String(), "creation ")
	failedStreams := strings.Count(out.String(), "failed\n") - failedCreations
	t.Logf("the loop said %d opened; %d creations and %d streams failed; %d streams open\n%s", said, failedCreations, failedStreams, len(streams()), out.String())
	require.Equal(t, 35, said+failedCreations, "every creation counted or reported")
	require.Equal(t, said, len(streams())+failedStreams, "every stream it opened is open or reported")
	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT))
	waitUntil(t, 10*time.Second, func() bool { return len(streams()) == 0 }, "Ctrl-C ends every stream", out.String)
	up.Stop(t, 30*time.Second)
}
