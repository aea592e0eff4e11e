package e2e

import (
	"fmt"
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

	"github.com/headcount-dev/headcount/internal/freeport"
)

// Proc is one child process of the headcount binary, its output in a file
// that the test prints when it fails.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
	err  error
}

// Run starts bin with args as name; it is killed when t ends.
func Run(t testing.TB, name, bin string, args ...string) *Proc {
	t.Helper()
	return RunEnv(t, name, bin, nil, args...)
}

// RunEnv is Run with env (KEY=value) added to this process's environment.
func RunEnv(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: exec.Command(bin, args...), Log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	if env != nil {
		p.Cmd.Env = append(os.Environ(), env...)
	}
	logs, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd.Stdout, p.Cmd.Stderr = logs, logs
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		_ = logs.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			data, _ := os.ReadFile(p.Log)
			t.Logf("%s logs (last 4 kB):\n%s", name, tail(data, 4096))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Signal sends sig to the process.
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
}

// Wait waits up to timeout for the process to exit and returns its error
// (nil: exit status 0); it fails t if the process is still running.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.Name, timeout)
		return nil
	}
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// RSSOf is a process's resident memory in bytes, from /proc (Linux); 0 when
// it is gone.
func RSSOf(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// FreeAddr is a free 127.0.0.1 address for a child to bind (freeport.Port).
func FreeAddr(t testing.TB) string {
	t.Helper()
	p, err := freeport.Port("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// Get returns the status and body of GET http://addr, or 0 and the error.
func Get(addr string) (int, string) {
	resp, err := http.Get("http://" + addr)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Metric returns the value of the Prometheus series (name with its labels,
// exactly as exposed) on http://addr/metrics, and whether it was there.
func Metric(addr, series string) (float64, bool) {
	code, body := Get(addr + "/metrics")
	if code != http.StatusOK {
		return 0, false
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
