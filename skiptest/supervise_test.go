package skiptest_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/skiptest"
)

// `headcount supervise`, the follower container's entrypoint in the chart
// (as `headcount-sidecar supervise`): a real Skip 0.0.15 follower as its
// child, kill -9 of the real Skip leader, which is restarted on its ports
// at once or after 10 s (longer than a 1+2+4 s doubling backoff). The
// follower exits with its leader; the supervisor starts it again once the
// leader answers, exactly once per leader restart (never while the leader
// is away, where it would exit again), and itself never exits: the kubelet
// would see nothing, so no CrashLoopBackOff. Its /healthz (the container's
// liveness probe) stays 200 throughout. Logged: how long after the leader
// answered the follower served again.
func TestSuperviseRestartsARealSkipFollowerInPlace(t *testing.T) {
	dir := skiptest.Setup(t)
	bin := e2e.Binary(t)
	ports := make([]int, 5)
	for i := range ports {
		p, err := skiptest.FreePort()
		require.NoError(t, err)
		ports[i] = p
	}
	lc, ls, fc, fs, hp := ports[0], ports[1], ports[2], ports[3], ports[4]
	leaderMember := skiptest.Member{Leader: true, Control: lc, Streaming: ls}
	startLeader := func() *skiptest.Process {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l, err := skiptest.Start(ctx, dir, leaderMember)
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Stop() })
		return l
	}
	leader := startLeader()

	addr := func(port int, path string) string { return "127.0.0.1:" + strconv.Itoa(port) + path }
	url := func(port int, path string) string { return "http://" + addr(port, path) }
	sup := e2e.RunEnv(t, "supervise", bin, []string{
		"SKIP_ROLE=follower", "SKIP_CONTROL_PORT=" + strconv.Itoa(fc), "SKIP_STREAMING_PORT=" + strconv.Itoa(fs),
		"SKIP_LEADER_HOST=127.0.0.1", "SKIP_LEADER_CONTROL=" + strconv.Itoa(lc), "SKIP_LEADER_STREAMING=" + strconv.Itoa(ls),
		"SKIP_RESOURCE_PREFIX=follower-1",
	}, "supervise", "--leader-health", url(lc, "/v1/healthcheck"), "--child-health", url(fc, "/v1/healthcheck"),
		"--health-addr", "127.0.0.1:"+strconv.Itoa(hp), "--", "node", dir+"/"+skiptest.ServiceFile)
	serving := func() bool {
		code, _ := get(addr(fc, "/v1/healthcheck"))
		return code == http.StatusOK && postJSON(addr(fc, "/v1/streams/posts"), "{}") == http.StatusCreated
	}
	require.Eventually(t, serving, 2*time.Minute, 50*time.Millisecond, "the supervised follower serves")

	for _, down := range []time.Duration{0, 10 * time.Second} {
		t.Run(fmt.Sprintf("down %v", down), func(t *testing.T) {
			child := childPID(t, sup.Cmd.Process.Pid)
			require.NotZero(t, child)
			// The supervisor's liveness, sampled through the outage: the
			// longest stretch it failed (the kubelet restarts the
			// container after 3 failures 10 s apart, by default).
			stopSampling := make(chan struct{})
			sampled := make(chan time.Duration, 1)
			go func() {
				var longest time.Duration
				var since time.Time
				for {
					select {
					case <-stopSampling:
						sampled <- longest
						return
					case <-time.After(100 * time.Millisecond):
					}
					code, _ := get(addr(hp, "/healthz"))
					switch {
					case code == http.StatusOK:
						since = time.Time{}
					case since.IsZero():
						since = time.Now()
					default:
						longest = max(longest, time.Since(since))
					}
				}
			}()
			leader.Kill()
			killed := time.Now()
			require.Eventually(t, func() bool { return !alive(child) }, 30*time.Second, 10*time.Millisecond, "the Skip follower exits with its leader")
			t.Logf("the Skip follower exited %v after kill -9 of its leader", time.Since(killed).Round(time.Millisecond))
			if down > 0 {
				time.Sleep(down - time.Since(killed))
				assert.Zero(t, childPID(t, sup.Cmd.Process.Pid), "no follower started while its leader is away")
			}
			leader = startLeader()
			leaderBack := time.Now()
			require.Eventually(t, serving, 2*time.Minute, 20*time.Millisecond, "the follower serves again")
			back := time.Since(leaderBack)
			close(stopSampling)
			t.Logf("the follower served again %v after its leader answered (leader down %v)", back.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond)-back.Round(time.Millisecond))
			failing := <-sampled
			t.Logf("the supervisor's /healthz (the liveness probe) failed for at most %v in a row", failing)
			assert.Less(t, failing, 2*time.Second, "the liveness probe passes through the outage (a failure is the gate's lag in seeing the leader go)")
			assert.False(t, sup.Exited(), "the supervisor (the container's process) never exits")
			assert.NotEqual(t, child, childPID(t, sup.Cmd.Process.Pid), "a new follower process")
			assert.Less(t, back, 30*time.Second, "served again soon after the leader (about Skip's own start)")
		})
	}
	logs, err := os.ReadFile(sup.Log)
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(logs), "member process exited"), "one restart per leader restart: never started while the leader was away\n%s", logs)

	sup.Signal(t, syscall.SIGTERM)
	require.NoError(t, sup.Wait(t, 30*time.Second), "SIGTERM stops the follower and the supervisor cleanly")
}

// childPID is the one child of pid (0: none), from /proc: a Go program
// forks from any of its threads, each of which lists its own children.
func childPID(t *testing.T, pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var children []string
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		children = append(children, strings.Fields(string(data))...)
	}
	require.LessOrEqual(t, len(children), 1, "at most one follower process")
	if len(children) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(children[0])
	return n
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// A zombie (Z) is gone: its supervisor has not reaped it yet.
	return err == nil && !strings.Contains(string(data), ") Z ")
}

// postJSON is a POST of body to addr (host:port + path); 0 when it failed.
func postJSON(addr, body string) int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post("http://"+addr, "application/json", strings.NewReader(body))
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
