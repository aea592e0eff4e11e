// Package demotest starts the demo leader and followers for tests; only tests
// import it, so shipped binaries never link the testing package.
package demotest

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
)

// The timings Start gives every server: short, so that tests are quick,
// except TTL: with three 100 ms heartbeats a loaded machine's stall under
// -race made views forget live followers and routers move all their streams.
// A killed server is still seen at once (its dials are refused).
const (
	Heartbeat   = 100 * time.Millisecond
	TTL         = 3 * time.Second
	InstanceTTL = time.Second
)

// Leader starts a leader for t on 127.0.0.1:0 with the timings above; it
// is shut down (publishing "gone") when t ends.
func Leader(t testing.TB, nc *nats.Conn, service string) *demo.Server {
	t.Helper()
	return Start(t, demo.StartLeader, demo.Config{Service: service, ID: "leader", NATS: nc})
}

// Follower starts follower id of leader for t like Leader, and
// waits until it is ready.
func Follower(t testing.TB, nc *nats.Conn, service, id string, leader *demo.Server) *demo.Server {
	t.Helper()
	s := Start(t, demo.StartFollower, demo.Config{Service: service, ID: id, NATS: nc,
		LeaderControl: leader.ControlAddr(), LeaderStreaming: leader.StreamingAddr()})
	require.Eventually(t, func() bool { return s.Agent().Report().State == fleet.StateReady },
		10*time.Second, 10*time.Millisecond, "follower %s ready", id)
	return s
}

// Start runs start with cfg, the tests' timings where cfg leaves them zero
// and a discarding logger; the server is stopped, without waiting for its
// instances, when t ends.
func Start(t testing.TB, start func(demo.Config, net.Listener, net.Listener) (*demo.Server, error), cfg demo.Config) *demo.Server {
	t.Helper()
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = Heartbeat
	}
	if cfg.TTL == 0 {
		cfg.TTL = TTL
	}
	if cfg.InstanceTTL == 0 {
		cfg.InstanceTTL = InstanceTTL
	}
	// Background goroutines may log after t ends, where t.Log would panic.
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := demo.StartLoopback(start, cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}
