package scaler

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
)

func TestValuesFollowAgentsOnEveryReplica(t *testing.T) {
	url := natstest.Server(t)
	_, addr1, _ := serve(t, url, ServerConfig{})
	_, addr2, _ := serve(t, url, ServerConfig{})
	c1, _ := dial(t, addr1)
	c2, _ := dial(t, addr2)
	r := ref("hackernews")

	a := newAgent(t, url, "hackernews", "follower-1", fleet.RoleFollower, time.Second)
	b := newAgent(t, url, "hackernews", "follower-2", fleet.RoleFollower, time.Second)
	leader := newAgent(t, url, "hackernews", "leader", fleet.RoleLeader, time.Second)
	other := newAgent(t, url, "other", "follower-1", fleet.RoleFollower, time.Second)

	a.Add(5) // starting followers do not count yet
	eventuallyLive(t, 0, r, c1, c2)
	a.Ready()
	b.Ready()
	b.Add(7)
	leader.Ready()
	leader.Add(100) // the leader is never counted
	other.Ready()
	other.Add(1000) // nor another service
	eventuallyLive(t, 12, r, c1, c2)

	b.Drain() // draining followers still serve their instances
	b.Done(2)
	eventuallyLive(t, 10, r, c1, c2)
	require.NoError(t, a.Close()) // gone: dropped at once
	eventuallyLive(t, 5, r, c1, c2)

	ctx := context.Background()
	for _, c := range []externalscaler.ExternalScalerClient{c1, c2} {
		active, err := c.IsActive(ctx, r)
		require.NoError(t, err)
		assert.True(t, active.Result, "5 live > activation 0")
		active, err = c.IsActive(ctx, ref("hackernews", KeyActivation, "5"))
		require.NoError(t, err)
		assert.False(t, active.Result, "5 live is not above activation 5")
		active, err = c.IsActive(ctx, ref("unknown"))
		require.NoError(t, err)
		assert.False(t, active.Result, "a service nobody reports is idle")
	}
}

// A trigger may scale on graphs or cost instead of instances: 40 streams of
// one definition weigh far less than 10 of ten.
func TestMetricGraphsAndCost(t *testing.T) {
	url := natstest.Server(t)
	_, addr, _ := serve(t, url, ServerConfig{})
	c, _ := dial(t, addr)
	hot := newAgent(t, url, "hackernews", "follower-1", fleet.RoleFollower, time.Second)
	hot.SetGraphs(1)
	hot.Add(40)
	hot.Ready()
	spread := newAgent(t, url, "hackernews", "follower-2", fleet.RoleFollower, time.Second)
	spread.SetGraphs(10)
	spread.Add(10)
	spread.Ready()
	eventuallyLive(t, 50, ref("hackernews"), c)
	eventuallyLive(t, 50, ref("hackernews", KeyMetric, "instances"), c)
	eventuallyLive(t, 11, ref("hackernews", KeyMetric, "graphs"), c)
	eventuallyLive(t, 16, ref("hackernews", KeyMetric, "cost"), c) // 11 graphs + 50 × 0.1

	// Creations held by a router may each be a new definition.
	publishDemand(t, natstest.Connect(t, url), "hackernews", "r-1", 3)
	eventuallyLive(t, 14, ref("hackernews", KeyMetric, "graphs"), c)
	eventuallyLive(t, 14+5.3, ref("hackernews", KeyMetric, "cost"), c)
	res, err := c.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{
		ScaledObjectRef: ref("hackernews", KeyMetric, "cost"), MetricName: "headcount-hackernews"})
	require.NoError(t, err)
	assert.Equal(t, int64(20), res.MetricValues[0].MetricValue, "the integer value rounds up")
}

func TestGetMetricSpec(t *testing.T) {
	_, addr, _ := serve(t, natstest.Server(t), ServerConfig{})
	c, _ := dial(t, addr)
	spec, err := c.GetMetricSpec(context.Background(), ref("hackernews", KeyTarget, "12.5"))
	require.NoError(t, err)
	require.Len(t, spec.MetricSpecs, 1)
	assert.Equal(t, "headcount-hackernews", spec.MetricSpecs[0].MetricName)
	assert.Equal(t, 12.5, spec.MetricSpecs[0].TargetSizeFloat)
	assert.Equal(t, int64(13), spec.MetricSpecs[0].TargetSize)
}

func TestRestartedScalerAnswersAfterRollCall(t *testing.T) {
	url := natstest.Server(t)
	// Heartbeats far apart: only the roll call can fill a new scaler's view in time.
	a := newAgent(t, url, "hackernews", "follower-1", fleet.RoleFollower, time.Minute)
	b := newAgent(t, url, "hackernews", "follower-2", fleet.RoleFollower, time.Minute)
	a.Ready()
	a.Add(4)
	b.Ready()
	b.Add(5)
	r := ref("hackernews")

	_, addr, stop := serve(t, url, ServerConfig{})
	c, _ := dial(t, addr)
	eventuallyLive(t, 9, r, c)
	stop()

	restarted, addr, _ := serve(t, url, ServerConfig{})
	c, cc := dial(t, addr)
	require.Eventually(t, func() bool {
		res, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && res.Status == healthpb.HealthCheckResponse_SERVING
	}, wait, 10*time.Millisecond, "health turns SERVING once the roll call settled")
	require.NoError(t, restarted.Ready())
	eventuallyLive(t, 9, r, c)
}

func TestStreamIsActive(t *testing.T) {
	url := natstest.Server(t)
	s, addr, _ := serve(t, url, ServerConfig{})
	c, _ := dial(t, addr)
	router := natstest.Connect(t, url)

	open := func(r *externalscaler.ScaledObjectRef) (recv func() bool, cancel func()) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		stream, err := c.StreamIsActive(ctx, r)
		require.NoError(t, err)
		return func() bool {
			t.Helper()
			res, err := stream.Recv()
			require.NoError(t, err)
			return res.Result
		}, cancel
	}
	subscribers := func() int { return s.streams.counts()["hackernews"] }

	recv, cancel := open(ref("hackernews"))
	assert.False(t, recv(), "the current state comes first: no followers, no demand")
	publishDemand(t, router, "hackernews", "r-1", 1)
	assert.True(t, recv(), "a router holding a creation at zero followers activates")
	publishDemand(t, router, "hackernews", "r-1", 0)
	assert.False(t, recv())

	// KEDA reconnecting: the old stream goes away, a new one is served.
	cancel()
	require.Eventually(t, func() bool { return subscribers() == 0 }, wait, 5*time.Millisecond)
	recv, cancel = open(ref("hackernews", KeyActivation, "2"))
	defer cancel()
	assert.False(t, recv())
	assert.Equal(t, 1, subscribers())

	a := newAgent(t, url, "hackernews", "follower-1", fleet.RoleFollower, time.Second)
	a.Ready()
	a.Add(2) // not above the activation threshold: nothing is sent…
	eventuallyLive(t, 2, ref("hackernews"), c)
	a.Add(1) // …until live crosses it
	assert.True(t, recv())
}

func TestShutdownEndsStreamsCleanly(t *testing.T) {
	_, addr, stop := serve(t, natstest.Server(t), ServerConfig{})
	c, _ := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stream, err := c.StreamIsActive(ctx, ref("hackernews"))
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	_, err = stream.Recv()
	assert.ErrorIs(t, err, io.EOF, "KEDA sees a clean end and reopens the stream elsewhere")
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("graceful stop did not return")
	}
}

// Connections are recycled after their max age (to spread KEDA over scaler
// replicas): unary calls carry on, a cut stream is reopened and answers at once.
func TestMaxConnectionAge(t *testing.T) {
	url := natstest.Server(t)
	_, addr, _ := serve(t, url, ServerConfig{MaxConnectionAge: 100 * time.Millisecond, MaxConnectionAgeGrace: 100 * time.Millisecond})
	c, _ := dial(t, addr)
	a := newAgent(t, url, "hackernews", "follower-1", fleet.RoleFollower, time.Second)
	a.Ready()
	a.Add(3)
	r := ref("hackernews")
	eventuallyLive(t, 3, r, c)
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		require.Equal(t, float64(3), liveOf(t, c, r))
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stream, err := c.StreamIsActive(ctx, r)
	require.NoError(t, err)
	res, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, res.Result)
	_, err = stream.Recv()
	require.Error(t, err, "the stream ends with its connection")
	require.NoError(t, ctx.Err(), "well before the test's deadline")
	stream, err = c.StreamIsActive(ctx, r)
	require.NoError(t, err)
	res, err = stream.Recv()
	require.NoError(t, err)
	assert.True(t, res.Result)
}
