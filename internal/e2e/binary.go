package e2e

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary builds the real headcount binary for t and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "headcount")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/headcount-dev/headcount/cmd/headcount")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// Up is a running `headcount up` and the URLs it printed.
type Up struct {
	Cmd                              *exec.Cmd
	Streaming, Control, NATS, Scaler string
	// Creds is the file of the read-only NATS identity up printed ("" with
	// --nats-url: that NATS's own credentials apply).
	Creds string
	logs  *syncBuffer
}

// Logs is what up and its children wrote on stderr so far.
func (u *Up) Logs() string { return u.logs.String() }

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var upURLs = map[string]*regexp.Regexp{
	"streaming": regexp.MustCompile(`router streaming \(public\)\s+http://([0-9.:]+)`),
	"control":   regexp.MustCompile(`router control \(private\)\s+http://([0-9.:]+)`),
	"scaler":    regexp.MustCompile(`KEDA external scaler\s+([0-9.:]+)`),
	"nats":      regexp.MustCompile(`NATS\s+((?:nats|tls)://[0-9.:]+)`),
}

// upCreds is printed with the embedded NATS only (not with --nats-url).
var upCreds = regexp.MustCompile(`NATS reader credentials\s+(\S+)`)

// StartUp runs `bin up` with args on free loopback ports, reads the URLs it
// prints, and kills it when t ends (stop it earlier with Cmd.Process.Signal).
func StartUp(t testing.TB, bin string, args ...string) *Up {
	t.Helper()
	args = append([]string{"up", "--nats-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
		"--control-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, args...)
	logs := &syncBuffer{}
	cmd.Stderr = io.MultiWriter(os.Stderr, logs)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	})
	found := map[string]string{}
	complete := func() bool {
		for name := range upURLs {
			if found[name] == "" {
				return false
			}
		}
		return true
	}
	lines := bufio.NewScanner(stdout)
	// The addresses come in one block that ends with an empty line; what
	// follows (the load commands) is not read, so a missing one fails at once.
	for lines.Scan() {
		line := lines.Text()
		for name, re := range upURLs {
			if m := re.FindStringSubmatch(line); m != nil {
				found[name] = m[1]
			}
		}
		if m := upCreds.FindStringSubmatch(line); m != nil {
			found["creds"] = m[1]
		}
		if strings.TrimSpace(line) == "" && found["nats"] != "" {
			break
		}
	}
	if !complete() {
		t.Fatalf("up printed only %v", found)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return &Up{Cmd: cmd, Streaming: found["streaming"], Control: found["control"], NATS: found["nats"], Scaler: found["scaler"], Creds: found["creds"], logs: logs}
}

// Stop sends Ctrl-C (SIGINT) and fails t unless up drains, stops and exits 0
// within timeout.
func (u *Up) Stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := u.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- u.Cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up exited with %v on Ctrl-C, want 0", err)
		}
	case <-time.After(timeout):
		t.Fatalf("up did not stop within %v of Ctrl-C", timeout)
	}
}
