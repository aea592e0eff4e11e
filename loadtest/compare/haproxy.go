package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// haproxyConfig is Skip's reference setup (examples/hackernews, haproxy-aux.cfg):
// creations round robin over the followers, writes pinned to the leader
// (weight 0, chosen only by use-server), and a stream sent to the follower
// named by the instance id's prefix, /v1/streams/<follower>/<uuid>. The
// followers are listed statically rather than registered through the runtime
// API. Like the example it sets no maxconn: HAProxy derives it from the file
// descriptor limit.
var haproxyConfig = template.Must(template.New("haproxy").Parse(`defaults
    mode http
    timeout connect 2s
    timeout client 1m
    timeout server 1m
    timeout tunnel 1h
{{- if .NoDelay}}
    option http-no-delay
{{- end}}

frontend control
    bind {{.Control}}
    default_backend skip_control

frontend streaming
    bind {{.Streaming}}
    default_backend skip_stream

backend skip_control
    use-server leader if { path_beg -i /v1/inputs/ }
    server leader {{.Leader}} weight 0
    balance roundrobin
{{- range .Followers}}
    server {{.ID}} {{.Control}}
{{- end}}

backend skip_stream
    http-request set-var(req.follower) path,field(4,/)
    http-request set-path /v1/streams/%[path,field(5,/)]
    use-server %[var(req.follower)] if TRUE
{{- range .Followers}}
    server {{.ID}} {{.Streaming}}
{{- end}}
`))

type haproxyMember struct{ ID, Control, Streaming string }

type haproxyParams struct {
	Control, Streaming, Leader string
	Followers                  []haproxyMember
	NoDelay                    bool
}

// haproxy is a running HAProxy process.
type haproxy struct {
	cmd                   *exec.Cmd
	done                  chan error
	controlURL, streamURL string
}

// ensureHAProxy returns the haproxy binary, installing Debian's package
// when it is missing.
func ensureHAProxy(bin string, out io.Writer) (string, error) {
	if path, err := exec.LookPath(bin); err == nil {
		return path, nil
	}
	fmt.Fprintln(out, "haproxy not found: apt-get install -y haproxy")
	for _, args := range [][]string{{"update"}, {"install", "-y", "haproxy"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return exec.LookPath(bin)
}

func startHAProxy(bin, dir string, s *stack, noDelay bool) (*haproxy, error) {
	var followers []haproxyMember
	for _, f := range s.followers {
		followers = append(followers, haproxyMember{ID: f.Agent().Report().Follower,
			Control: f.ControlAddr(), Streaming: f.StreamingAddr()})
	}
	return startHAProxyFor(bin, dir, s.leader.ControlAddr(), followers, noDelay)
}

// startHAProxyFor runs HAProxy as Skip's example configures it in front of
// leader (control address) and followers.
func startHAProxyFor(bin, dir, leader string, followers []haproxyMember, noDelay bool) (*haproxy, error) {
	control, err := freeAddr()
	if err != nil {
		return nil, err
	}
	streaming, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := haproxyParams{Control: control, Streaming: streaming, Leader: leader, Followers: followers, NoDelay: noDelay}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	var cfg strings.Builder
	if err := haproxyConfig.Execute(&cfg, p); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	h := &haproxy{cmd: exec.Command(bin, "-db", "-f", cfgPath), done: make(chan error, 1),
		controlURL: "http://" + control, streamURL: "http://" + streaming}
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	go func() { h.done <- h.cmd.Wait() }()
	for _, addr := range []string{control, streaming} {
		if err := h.await(addr, 5*time.Second); err != nil {
			h.stop()
			return nil, fmt.Errorf("haproxy (see %s): %w", logf.Name(), err)
		}
	}
	return h, nil
}

// await waits until addr accepts connections or haproxy exits.
func (h *haproxy) await(addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			return conn.Close()
		}
		select {
		case err := <-h.done:
			h.done <- err
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return errors.New("not listening on " + addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (h *haproxy) stop() {
	_ = h.cmd.Process.Signal(os.Interrupt)
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

// freeAddr picks a free loopback port for a child process to bind.
func freeAddr() (string, error) {
	ln, err := listen()
	if err != nil {
		return "", err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}
