package local_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/local"
	"github.com/headcount-dev/headcount/natsembed"
)

// buildHeadcount compiles the real binary once per test run.
func buildHeadcount(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "headcount")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/headcount-dev/headcount/cmd/headcount")
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Run(), "go build")
	return bin
}

type upProcess struct {
	cmd                              *exec.Cmd
	streaming, control, nats, scaler string
}

// startUp runs `headcount up` on free loopback ports and reads its URLs.
func startUp(t *testing.T, bin string, args ...string) *upProcess {
	t.Helper()
	args = append([]string{"up", "--nats-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
		"--control-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	up := &upProcess{cmd: cmd}
	patterns := map[*string]*regexp.Regexp{
		&up.streaming: regexp.MustCompile(`router streaming \(public\)\s+(http://[0-9.:]+)`),
		&up.control:   regexp.MustCompile(`router control \(private\)\s+(http://[0-9.:]+)`),
		&up.scaler:    regexp.MustCompile(`KEDA external scaler\s+([0-9.:]+)`),
		&up.nats:      regexp.MustCompile(`NATS\s+(nats://[0-9.:]+)`),
	}
	lines := bufio.NewScanner(stdout)
	for found := 0; found < len(patterns) && lines.Scan(); {
		for dst, re := range patterns {
			if m := re.FindStringSubmatch(lines.Text()); m != nil {
				*dst = m[1]
				found++
			}
		}
	}
	require.NotEmpty(t, up.nats, "up printed its URLs")
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return up
}

// stream is one client holding an SSE stream open through the router.
type stream struct {
	id     string
	cancel context.CancelFunc
	ended  chan error // the reason the stream ended
}

func openStream(t *testing.T, up *upProcess) (*stream, error) {
	resp, err := http.Post(up.control+"/v1/streams/collection", "application/json", strings.NewReader(`{"name":"posts"}`))
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return nil, &httpError{resp.StatusCode, string(body)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, up.streaming+"/v1/streams/"+string(body), nil)
	req.Header.Set("Accept", "text/event-stream")
	sresp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if sresp.StatusCode != http.StatusOK {
		cancel()
		sresp.Body.Close()
		return nil, &httpError{sresp.StatusCode, "stream " + string(body)}
	}
	s := &stream{id: string(body), cancel: cancel, ended: make(chan error, 1)}
	lines := bufio.NewScanner(sresp.Body)
	for lines.Scan() && lines.Text() != "event: init" {
	}
	if lines.Err() != nil {
		cancel()
		return nil, lines.Err()
	}
	go func() {
		defer sresp.Body.Close()
		for lines.Scan() {
		}
		s.ended <- lines.Err()
	}()
	return s, nil
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return http.StatusText(e.code) + ": " + e.msg }

func TestUpScalesOutWithStreamsAndBackInWhenTheyClose(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	bin := buildHeadcount(t)
	up := startUp(t, bin, "--target", "10", "--plan", "pro",
		"--scale-down-window", "4s", "--instance-ttl", "1s", "--drain-timeout", "10s")

	view := fleet.NewView()
	w, err := fleet.Watch(natsembed.Connect(t, up.nats), view, fleet.WatchConfig{Services: []string{"demo"}})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	ready := func() int { return view.Totals("demo").Ready }
	require.Eventually(t, func() bool { return ready() == 1 }, 30*time.Second, 50*time.Millisecond, "one follower at rest")

	// 35 streams at 10 per replica: the target is ceil(35/10) = 4.
	var streams []*stream
	var failed atomic.Int32
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 35 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 30 * time.Millisecond) // a ramp, not a burst
			s, err := openStream(t, up)
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
				failed.Add(1)
				return
			}
			mu.Lock()
			streams = append(streams, s)
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Zero(t, failed.Load(), "failed requests")
	require.Eventually(t, func() bool { return ready() == 4 }, 60*time.Second, 50*time.Millisecond,
		"4 followers ready for 35 instances; view: %+v", view.Totals("demo"))
	require.Equal(t, int64(35), view.Totals("demo").Instances)

	// `headcount status` shows the same fleet from NATS alone.
	out, err := exec.Command(bin, "status", "--nats-url", up.nats, "--json", "--target", "10").Output()
	require.NoError(t, err)
	var st local.Status
	require.NoError(t, json.Unmarshal(out, &st))
	require.Equal(t, int64(35), st.Live)
	require.Equal(t, int64(4), st.Target)
	require.Len(t, st.Members, 5, "leader and 4 followers")
	table, err := exec.Command(bin, "status", "--nats-url", up.nats).Output()
	require.NoError(t, err)
	require.Contains(t, string(table), "replica target 4")

	// Every stream is still open on its owner.
	for _, s := range streams {
		select {
		case err := <-s.ended:
			t.Fatalf("stream %s ended before its client closed it: %v", s.id, err)
		default:
		}
		owner, _, _ := strings.Cut(s.id, "/")
		m, ok := view.Member("demo", owner)
		require.True(t, ok, "owner %s of %s is in the fleet", owner, s.id)
		require.Equal(t, fleet.StateReady, m.State)
	}

	for _, s := range streams {
		s.cancel()
	}
	require.Eventually(t, func() bool {
		tot := view.Totals("demo")
		return tot.Ready == 1 && tot.Draining == 0 && tot.Starting == 0 && tot.Instances == 0
	}, 60*time.Second, 100*time.Millisecond, "back to one follower after the window; view: %+v", view.Totals("demo"))

	// Ctrl-C drains and stops everything cleanly.
	require.NoError(t, up.cmd.Process.Signal(os.Interrupt))
	done := make(chan error, 1)
	go func() { done <- up.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "up exits 0 on Ctrl-C")
	case <-time.After(30 * time.Second):
		t.Fatal("up did not stop within 30 s of Ctrl-C")
	}
}
