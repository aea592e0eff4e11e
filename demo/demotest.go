package demo

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/fleet"
)

// TestLeader starts a leader for t on 127.0.0.1:0 with a 100 ms heartbeat
// and a 1 s instance TTL; it is shut down (publishing "gone") when t ends.
func TestLeader(t testing.TB, nc *nats.Conn, service string) *Server {
	t.Helper()
	return testServer(t, StartLeader, Config{Service: service, ID: "leader", NATS: nc})
}

// TestFollower starts follower id of leader for t like TestLeader, and
// waits until it is ready.
func TestFollower(t testing.TB, nc *nats.Conn, service, id string, leader *Server) *Server {
	t.Helper()
	s := testServer(t, StartFollower, Config{Service: service, ID: id, NATS: nc,
		LeaderControl: leader.ControlAddr(), LeaderStreaming: leader.StreamingAddr()})
	deadline := time.Now().Add(10 * time.Second)
	for s.Agent().Report().State != fleet.StateReady {
		if time.Now().After(deadline) {
			t.Fatalf("follower %s not ready after 10s", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func testServer(t testing.TB, start func(Config, net.Listener, net.Listener) (*Server, error), cfg Config) *Server {
	t.Helper()
	cfg.Heartbeat = 100 * time.Millisecond
	cfg.InstanceTTL = time.Second
	// Background goroutines may log after t ends, where t.Log would panic.
	cfg.Logger = slog.New(slog.DiscardHandler)
	control, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streaming, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = control.Close()
		t.Fatal(err)
	}
	s, err := start(cfg, control, streaming)
	if err != nil {
		_ = control.Close()
		_ = streaming.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no wait for instances: the test is over
		_ = s.Shutdown(ctx)
	})
	return s
}
