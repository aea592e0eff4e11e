// Package skiptest installs and runs a real Skip service (@skipruntime/server
// under Node) for headcount's end-to-end tests: the leader and followers
// that the sidecar and router must serve unmodified.
package skiptest

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/freeport"
)

// Version is the Skip runtime the tests run.
const Version = "0.0.15"

// Packages are installed at Version, without their install scripts: the wasm
// runtime needs no native build.
var Packages = []string{"@skipruntime/server", "@skipruntime/helpers", "@skipruntime/wasm"}

// ServiceFile is the Skip service (service/service.mjs), copied next to the
// installed node_modules so that Node resolves its imports there.
const ServiceFile = "headcount-skiptest-service.mjs"

//go:embed service/service.mjs
var serviceJS []byte

// Missing says why Skip cannot run on this machine (no node or npm), or nil.
func Missing() error {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found on PATH: %w", tool, err)
		}
	}
	return nil
}

// Setup prepares a test to run Skip: it skips t loudly where Node or npm is
// missing, else installs Skip into CacheDir and returns that folder.
func Setup(t testing.TB) string {
	t.Helper()
	if err := Missing(); err != nil {
		t.Skipf("\n\n*** SKIPPED: the real-Skip end-to-end test needs Node and npm: %v ***\n\n", err)
	}
	dir, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := Install(ctx, dir); err != nil {
		t.Fatalf("installing %v@%s: %v", Packages, Version, err)
	}
	return dir
}

// CacheDir is <repo root>/.cache/skip, found from the working directory up.
func CacheDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".cache", "skip"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Install puts Packages at Version into dir (reusing an earlier install) and
// writes the service file there.
func Install(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !installed(dir) {
		manifest := filepath.Join(dir, "package.json")
		if err := os.WriteFile(manifest, []byte(`{"name":"headcount-skiptest","private":true,"type":"module"}`+"\n"), 0o644); err != nil {
			return err
		}
		args := []string{"install", "--prefix", dir, "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"}
		for _, p := range Packages {
			args = append(args, p+"@"+Version)
		}
		cmd := exec.CommandContext(ctx, "npm", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("npm %v: %w\n%s", args, err, out)
		}
		if !installed(dir) {
			return fmt.Errorf("npm install left no %v at %s in %s", Packages, Version, dir)
		}
	}
	return os.WriteFile(filepath.Join(dir, ServiceFile), serviceJS, 0o644)
}

func installed(dir string) bool {
	for _, p := range Packages {
		data, err := os.ReadFile(filepath.Join(dir, "node_modules", p, "package.json"))
		if err != nil {
			return false
		}
		var manifest struct{ Version string }
		if json.Unmarshal(data, &manifest) != nil || manifest.Version != Version {
			return false
		}
	}
	return true
}

// Member is one Skip process: the leader, or a follower of the leader's ports.
type Member struct {
	Leader          bool
	Control         int // control API port
	Streaming       int // streaming API port
	LeaderControl   int // follower only
	LeaderStreaming int // follower only
	Prefix          string
}

// Process is a running Skip member.
type Process struct {
	cmd       *exec.Cmd
	out       *e2e.SyncBuffer
	done      chan struct{}
	Control   string // 127.0.0.1:<port>
	Streaming string
}

// Start runs m from dir (see Install) and waits until both its APIs answer.
func Start(ctx context.Context, dir string, m Member) (*Process, error) {
	role := "follower"
	if m.Leader {
		role = "leader"
	}
	cmd := exec.Command("node", ServiceFile)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"SKIP_ROLE="+role,
		"SKIP_CONTROL_PORT="+strconv.Itoa(m.Control),
		"SKIP_STREAMING_PORT="+strconv.Itoa(m.Streaming),
		"SKIP_LEADER_HOST=127.0.0.1",
		"SKIP_LEADER_CONTROL="+strconv.Itoa(m.LeaderControl),
		"SKIP_LEADER_STREAMING="+strconv.Itoa(m.LeaderStreaming),
		"SKIP_RESOURCE_PREFIX="+m.Prefix,
	)
	p := &Process{cmd: cmd, out: &e2e.SyncBuffer{}, done: make(chan struct{}),
		Control:   net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Control)),
		Streaming: net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Streaming)),
	}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitHealthy(ctx); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("skip %s: %w\n%s", role, err, p.Output())
	}
	return p, nil
}

// waitHealthy waits for the control API's healthcheck and for the streaming
// API to answer at all: in 0.0.15 only the control API has /v1/healthcheck.
func (p *Process) waitHealthy(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	for _, addr := range []string{p.Control, p.Streaming} {
		for {
			resp, err := client.Get("http://" + addr + "/v1/healthcheck")
			if err == nil {
				_ = resp.Body.Close()
				if addr == p.Streaming || resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-p.done:
				return errors.New("exited before it was healthy")
			case <-ctx.Done():
				return fmt.Errorf("not healthy on %s: %w", addr, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Stop sends SIGTERM, and kills the process if it is still there after 5 s.
func (p *Process) Stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("did not stop on SIGTERM: killed")
	}
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process: SIGSTOP and SIGCONT hang it and let it
// go on, as a deadlock or a GC spiral would.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output is what the process wrote so far on stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

// FreePort returns a free loopback port (freeport.Port): Node cannot be
// handed a listener.
func FreePort() (int, error) { return freeport.Port("127.0.0.1") }
