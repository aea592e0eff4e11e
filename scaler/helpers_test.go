package scaler

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// wait bounds every eventual assertion: generous, the machine is shared.
const wait = 10 * time.Second

// watched is a scaler fed from nc as the scaler command composes it: one
// watcher of every service, whose changes wake the scaler's streams.
func watched(t testing.TB, nc *nats.Conn) (*Scaler, *fleet.View, *fleet.Watcher) {
	t.Helper()
	view, w := natstest.Watch(t, nc, fleet.WatchConfig{})
	cfg := DefaultConfig()
	cfg.Connected = w.Connected
	s := New(view, cfg)
	w.OnChange(s.Changed)
	return s, view, w
}

// serve runs a scaler fed by the NATS server at url, with its gRPC server on
// a random loopback port; stop (also run at cleanup) shuts it down gracefully.
func serve(t testing.TB, url string, sc ServerConfig) (s *Scaler, addr string, stop func()) {
	t.Helper()
	s, _, _ = watched(t, natstest.Connect(t, url))
	addr, stop = serveScaler(t, s, sc)
	return s, addr, stop
}

// serveScaler serves s's gRPC on a random loopback port; stop (also run at
// cleanup) shuts it down gracefully.
func serveScaler(t testing.TB, s *Scaler, sc ServerConfig) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(s, sc).Serve(ctx, ln, 5*time.Second) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		assert.NoError(t, <-done)
		s.Close()
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) (externalscaler.ExternalScalerClient, *grpc.ClientConn) {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cc, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return externalscaler.NewExternalScalerClient(cc), cc
}

// ref is a ScaledObject trigger for service; extra are key/value pairs.
func ref(service string, extra ...string) *externalscaler.ScaledObjectRef {
	md := map[string]string{KeyService: service, KeyTarget: "100", "scalerAddress": "ignored:9090"}
	for i := 0; i+1 < len(extra); i += 2 {
		md[extra[i]] = extra[i+1]
	}
	return &externalscaler.ScaledObjectRef{Name: "so", Namespace: "default", ScalerMetadata: md}
}

func liveOf(t testing.TB, c externalscaler.ExternalScalerClient, r *externalscaler.ScaledObjectRef) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: r, MetricName: "headcount-" + r.ScalerMetadata[KeyService]})
	require.NoError(t, err)
	require.Len(t, res.MetricValues, 1)
	return res.MetricValues[0].MetricValueFloat
}

// eventuallyLive waits until every client reports want for r.
func eventuallyLive(t testing.TB, want float64, r *externalscaler.ScaledObjectRef, clients ...externalscaler.ExternalScalerClient) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, c := range clients {
			if liveOf(t, c, r) != want {
				return false
			}
		}
		return true
	}, wait, 5*time.Millisecond, "want %v live instances", want)
}

func newAgent(t testing.TB, url, service, follower string, role fleet.Role, heartbeat time.Duration) *agent.Agent {
	t.Helper()
	a, err := agent.New(natstest.Connect(t, url), agent.Config{
		Service: service, Follower: follower, Role: role,
		Control: "127.0.0.1:8081", Streaming: "127.0.0.1:8080",
		Pod: service + "-" + follower, Namespace: "default",
		Heartbeat: heartbeat,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// publishDemand plays a router holding pending creations for service.
func publishDemand(t testing.TB, nc *nats.Conn, service, router string, pending int64) {
	t.Helper()
	data, err := json.Marshal(fleet.Demand{Router: router, Pending: pending, TTLMillis: 60_000})
	require.NoError(t, err)
	require.NoError(t, nc.Publish(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Demand(service, router), data))
	require.NoError(t, nc.Flush())
}
