package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary builds the real headcount binary for t and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	return Build(t, "headcount")
}

// Build builds the command cmd/<name> for t and returns its path.
func Build(t testing.TB, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", bin, "github.com/headcount-dev/headcount/cmd/"+name)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return bin
}

// Up is a running `headcount up` and its addresses: Streaming, Control and
// Scaler as host:port, NATS as a nats:// URL.
type Up struct {
	Cmd                              *exec.Cmd
	exited                           chan struct{}
	Streaming, Control, NATS, Scaler string
	// Creds is the file of the read-only NATS identity up made ("" with
	// --nats-url: that NATS's own credentials apply).
	Creds string
	logs  *SyncBuffer
}

// Logs is what up and its children wrote on stderr so far.
func (u *Up) Logs() string { return u.logs.String() }

// SyncBuffer is a bytes.Buffer safe for writers and readers at once (a
// child process's output read while it runs).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartUp runs `bin up` with args on free loopback ports, reads the
// addresses it writes to its --addr-file, and kills it when t ends (stop it
// earlier with Stop).
func StartUp(t testing.TB, bin string, args ...string) *Up {
	t.Helper()
	file := filepath.Join(t.TempDir(), "addrs.json")
	args = append([]string{"up", "--nats-addr", "127.0.0.1:0", "--streaming-addr", "127.0.0.1:0",
		"--control-addr", "127.0.0.1:0", "--scaler-addr", "127.0.0.1:0", "--addr-file", file}, args...)
	cmd := exec.Command(bin, args...)
	logs := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = io.Discard, io.MultiWriter(os.Stderr, logs)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	})
	deadline := time.Now().Add(2 * time.Minute) // the leader must be ready first
	for {
		data, err := os.ReadFile(file)
		if err == nil {
			var a struct {
				Streaming, Control, Scaler, NATS string
				NATSCreds                        string `json:"nats_creds"`
			}
			if err := json.Unmarshal(data, &a); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return &Up{Cmd: cmd, exited: exited, Streaming: strings.TrimPrefix(a.Streaming, "http://"),
				Control: strings.TrimPrefix(a.Control, "http://"), Scaler: a.Scaler, NATS: a.NATS,
				Creds: a.NATSCreds, logs: logs}
		}
		select {
		case <-exited:
			t.Fatalf("up exited before writing %s: %v", file, cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("up wrote no %s in 2 minutes", file)
		}
	}
}

// Stop sends Ctrl-C (SIGINT) and fails t unless up drains, stops and exits 0
// within timeout.
func (u *Up) Stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := u.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.exited:
		if !u.Cmd.ProcessState.Success() {
			t.Fatalf("up exited with %v on Ctrl-C, want 0", u.Cmd.ProcessState)
		}
	case <-time.After(timeout):
		t.Fatalf("up did not stop within %v of Ctrl-C", timeout)
	}
}
