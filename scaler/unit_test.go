package scaler

// Unit tests of the replica decisions and the gRPC surface: the scaler on a
// fleet.View fed by hand, served over real gRPC on loopback, with no NATS.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/headcount-dev/headcount/fleet"
)

func applyFollower(view *fleet.View, service, id string, instances int64, seq uint64) {
	view.Apply(fleet.Report{V: fleet.Version, Service: service, Follower: id, Incarnation: id + "-1",
		Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
		Instances: instances, Seq: seq, TTLMillis: 60_000}, time.Now())
}

func unitScaler(t *testing.T, view *fleet.View, connected func() error) (*Scaler, externalscaler.ExternalScalerClient) {
	t.Helper()
	s := New(view, Config{Connected: connected})
	t.Cleanup(s.Close)
	addr, _ := serveScaler(t, s, ServerConfig{})
	c, _ := dial(t, addr)
	return s, c
}

func TestUnitMetricsAndActivityFollowTheView(t *testing.T) {
	view := fleet.NewView()
	_, c := unitScaler(t, view, nil)
	ctx := context.Background()
	r := ref("hn", KeyActivation, "10")

	spec, err := c.GetMetricSpec(ctx, r)
	require.NoError(t, err)
	require.Len(t, spec.MetricSpecs, 1)
	assert.Equal(t, 100.0, spec.MetricSpecs[0].TargetSizeFloat)

	assert.Equal(t, 0.0, liveOf(t, c, r))
	act, err := c.IsActive(ctx, r)
	require.NoError(t, err)
	assert.False(t, act.Result)

	applyFollower(view, "hn", "f-1", 7, 1)
	applyFollower(view, "hn", "f-2", 5, 1)
	assert.Equal(t, 12.0, liveOf(t, c, r))
	act, err = c.IsActive(ctx, r)
	require.NoError(t, err)
	assert.True(t, act.Result, "12 live > activation 10")

	applyFollower(view, "hn", "f-2", 0, 2)
	act, err = c.IsActive(ctx, r)
	require.NoError(t, err)
	assert.False(t, act.Result, "7 live ≤ activation 10")

	view.ApplyDemand("hn", fleet.Demand{Router: "r-1", Pending: 1, TTLMillis: 60_000}, time.Now())
	act, err = c.IsActive(ctx, r)
	require.NoError(t, err)
	assert.True(t, act.Result, "held creations activate whatever the threshold")
}

func TestUnitStreamIsActivePushesOnChanged(t *testing.T) {
	view := fleet.NewView()
	s, c := unitScaler(t, view, nil)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stream, err := c.StreamIsActive(ctx, ref("hn"))
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	assert.False(t, first.Result)

	applyFollower(view, "hn", "f-1", 3, 1)
	s.Changed("hn") // what the process's watcher does after applying the report
	next, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, next.Result)
}

func TestUnitBadMetadataIsInvalidArgument(t *testing.T) {
	_, c := unitScaler(t, fleet.NewView(), nil)
	_, err := c.GetMetrics(context.Background(), &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("hn", KeyTarget, "-1")})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}

func TestUnitReadinessFollowsTheConnection(t *testing.T) {
	down := errors.New("NATS reconnecting")
	var conn error
	s := New(fleet.NewView(), Config{Connected: func() error { return conn }})
	t.Cleanup(s.Close)
	<-s.Settled()
	assert.NoError(t, s.Ready())
	conn = down
	assert.ErrorIs(t, s.Ready(), down)
}
