// Package holdproxy is a TCP proxy that holds a connection while its target
// is down: it accepts at once and dials the target until it answers or a
// bound passes. A Skip follower exits when it cannot reach its leader at
// its start; reaching it through this proxy, a follower restarted during a
// leader outage loads its runtime meanwhile (seconds of CPU on a loaded
// machine) and waits for the leader instead of exiting: it serves moments
// after the leader is back instead of starting only then.
package holdproxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Proxy forwards every connection accepted on its listener to Target.
type Proxy struct {
	ln     net.Listener
	target string
	hold   time.Duration
	log    *slog.Logger

	stop  chan struct{} // closed by Close
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// retry is the pause between two dials of a target that refused.
const retry = 50 * time.Millisecond

// Start serves ln: each connection is forwarded to target, dialled until it
// answers, for at most hold (then the connection is closed).
func Start(ln net.Listener, target string, hold time.Duration, log *slog.Logger) *Proxy {
	p := &Proxy{ln: ln, target: target, hold: hold, log: log, stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting and closes every connection.
func (p *Proxy) Close() {
	close(p.stop)
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.log.Warn("hold proxy: accept failed", "addr", p.Addr(), "err", err)
			}
			return
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

// track adds c to the connections Close closes.
func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
	select {
	case <-p.stop: // Close has closed the others
		_ = c.Close()
	default:
	}
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		_ = c.Close()
	}
}

func (p *Proxy) forward(c net.Conn) {
	p.track(c)
	up := p.dial(c)
	if up == nil {
		p.untrack(c)
		return
	}
	p.track(up)
	// Either side ending ends both: a leader that died closes its
	// followers' connections, as it would without the proxy.
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	p.untrack(c, up)
	<-done
}

// dial dials the target until it answers, hold passes or c is closed.
func (p *Proxy) dial(c net.Conn) net.Conn {
	deadline := time.Now().Add(p.hold)
	for waited := false; ; waited = true {
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err == nil {
			if waited {
				p.log.Info("hold proxy: target answers; held connection forwarded", "target", p.target)
			}
			return up
		}
		if time.Now().After(deadline) {
			p.log.Warn("hold proxy: target did not answer in time; connection closed", "target", p.target, "hold", p.hold, "err", err)
			return nil
		}
		select {
		case <-p.stop:
			return nil
		case <-time.After(retry):
		}
	}
}
