package scaler

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/benchtest"
	"github.com/headcount-dev/headcount/internal/natstest"
)

var subjects = fleet.Subjects{Prefix: fleet.DefaultPrefix}

// publishReport sends the report an agent of follower would send.
func publishReport(tb testing.TB, nc *nats.Conn, service, follower string, seq uint64, instances int64) {
	data, err := json.Marshal(fleet.Report{
		V: fleet.Version, Service: service, Follower: follower, Incarnation: "bench-" + follower,
		Role: fleet.RoleFollower, State: fleet.StateReady, Control: "10.0.0.1:8081", Streaming: "10.0.0.1:8080",
		Instances: instances, Created: instances, Seq: seq, TTLMillis: 600_000,
	})
	require.NoError(tb, err)
	require.NoError(tb, nc.Publish(subjects.Report(service, follower), data))
}

// BenchmarkReportToGetMetrics: a follower's report published on NATS until
// GetMetrics (over gRPC) returns its count.
func BenchmarkReportToGetMetrics(b *testing.B) {
	url := natstest.Server(b)
	_, addr, _ := serve(b, url, ServerConfig{})
	c, _ := dial(b, addr)
	nc := natstest.Connect(b, url)
	r := ref("bench")
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: r}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		want := float64(i + 1)
		start := time.Now()
		publishReport(b, nc, "bench", "follower-1", uint64(i+1), int64(i+1))
		require.NoError(b, nc.Flush())
		for {
			res, err := c.GetMetrics(ctx, req)
			require.NoError(b, err)
			if res.MetricValues[0].MetricValueFloat == want {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	benchtest.ReportLatencies(b, lat)
}

// BenchmarkDemandToStreamIsActive: a router's first demand published on NATS
// until an open StreamIsActive receives true.
func BenchmarkDemandToStreamIsActive(b *testing.B) {
	url := natstest.Server(b)
	_, addr, _ := serve(b, url, ServerConfig{})
	c, _ := dial(b, addr)
	nc := natstest.Connect(b, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.StreamIsActive(ctx, ref("bench"))
	require.NoError(b, err)
	recv := func(want bool) {
		res, err := stream.Recv()
		require.NoError(b, err)
		require.Equal(b, want, res.Result)
	}
	recv(false)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		publishDemand(b, nc, "bench", "r-1", 1)
		recv(true)
		lat = append(lat, time.Since(start))
		b.StopTimer()
		publishDemand(b, nc, "bench", "r-1", 0)
		recv(false)
		b.StartTimer()
	}
	b.StopTimer()
	benchtest.ReportLatencies(b, lat)
}

// BenchmarkGetMetrics10kFollowers: GetMetrics with 10,000 followers in the
// view, called in-process (the scaler's own cost) and over loopback gRPC.
func BenchmarkGetMetrics10kFollowers(b *testing.B) {
	const followers = 10_000
	url := natstest.Server(b)
	s, addr, _ := serve(b, url, ServerConfig{})
	c, _ := dial(b, addr)
	nc := natstest.Connect(b, url)
	for i := range followers {
		publishReport(b, nc, "bench", fmt.Sprintf("follower-%d", i), 1, 3)
	}
	require.NoError(b, nc.Flush())
	require.Eventually(b, func() bool { return s.view.Totals("bench").Ready == followers }, time.Minute, 10*time.Millisecond)
	req := &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("bench")}
	ctx := context.Background()

	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			res, err := s.GetMetrics(ctx, req)
			if err != nil || res.MetricValues[0].MetricValue != 3*followers {
				b.Fatal(res, err)
			}
		}
	})
	b.Run("grpc", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for range b.N {
			start := time.Now()
			res, err := c.GetMetrics(ctx, req)
			lat = append(lat, time.Since(start))
			if err != nil || res.MetricValues[0].MetricValue != 3*followers {
				b.Fatal(res, err)
			}
		}
		b.StopTimer()
		benchtest.ReportLatencies(b, lat)
	})
}
