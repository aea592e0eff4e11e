package scaler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsembed"
)

func TestReflectionListsServices(t *testing.T) {
	_, addr, _ := serve(t, natstest.Server(t), ServerConfig{})
	_, cc := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	res, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	assert.Contains(t, names, externalscaler.ExternalScaler_ServiceDesc.ServiceName)
	assert.Contains(t, names, "grpc.health.v1.Health")
}

func TestMetrics(t *testing.T) {
	url := natstest.Server(t)
	s, view, w := watched(t, natstest.Connect(t, url))
	addr, _ := serveScaler(t, s, ServerConfig{})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, s.Register(reg))
	require.NoError(t, reg.Register(fleet.NewCollector(view, w))) // as the scaler command does
	c, _ := dial(t, addr)

	a := newAgent(t, url, "hackernews", "follower-1", fleet.RoleFollower, time.Second)
	a.Ready()
	a.Add(200)
	publishDemand(t, natstest.Connect(t, url), "hackernews", "r-1", 50)
	r := ref("hackernews") // target 100 → 250 live wants 3 replicas
	eventuallyLive(t, 250, r, c)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stream, err := c.StreamIsActive(ctx, r)
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err)

	const want = `
# HELP headcount_scaler_desired_replicas Replica target under each plan's bounds, for services in the view whose target KEDA has sent.
# TYPE headcount_scaler_desired_replicas gauge
headcount_scaler_desired_replicas{plan="enterprise",service="hackernews"} 3
headcount_scaler_desired_replicas{plan="free",service="hackernews"} 1
headcount_scaler_desired_replicas{plan="pro",service="hackernews"} 3
headcount_scaler_desired_replicas{plan="starter",service="hackernews"} 3
# HELP headcount_scaler_live_instances Live instances KEDA is told: instances on ready and draining followers plus routers' demand.
# TYPE headcount_scaler_live_instances gauge
headcount_scaler_live_instances{service="hackernews"} 250
# HELP headcount_scaler_stream_subscribers Open StreamIsActive streams.
# TYPE headcount_scaler_stream_subscribers gauge
headcount_scaler_stream_subscribers{service="hackernews"} 1
# HELP headcount_scaler_target_instances_per_replica Last targetInstancesPerReplica KEDA sent.
# TYPE headcount_scaler_target_instances_per_replica gauge
headcount_scaler_target_instances_per_replica{service="hackernews"} 100
# HELP headcount_demand Creations held by routers because no follower is ready.
# TYPE headcount_demand gauge
headcount_demand{service="hackernews"} 50
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"headcount_scaler_desired_replicas", "headcount_scaler_live_instances",
		"headcount_scaler_stream_subscribers", "headcount_scaler_target_instances_per_replica", "headcount_demand"))

	// Calls are counted by method and code.
	_, err = c.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref("hackernews", KeyTarget, "zero")})
	require.Error(t, err)
	assert.Equal(t, float64(1), testutil.ToFloat64(s.rpcs.WithLabelValues("GetMetrics", "InvalidArgument")))
	assert.Positive(t, testutil.ToFloat64(s.rpcs.WithLabelValues("GetMetrics", "OK")))

	// A report that fails validation is dropped and counted, not applied.
	nc := natstest.Connect(t, url)
	require.NoError(t, nc.Publish("headcount.hackernews.report.follower-9", []byte(`{"v":1,"instances":-3}`)))
	require.NoError(t, nc.Flush())
	require.Eventually(t, func() bool {
		n, err := testutil.GatherAndCount(reg, "headcount_messages_dropped_total")
		return err == nil && n > 0
	}, wait, 5*time.Millisecond)
	assert.Equal(t, float64(250), liveOf(t, c, r))
}

func TestHealthFollowsNATS(t *testing.T) {
	ns, err := natsembed.Start(natsembed.Options{})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	s, addr, _ := serve(t, ns.ClientURL(), ServerConfig{})
	_, cc := dial(t, addr)
	health := healthpb.NewHealthClient(cc)
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		res, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: externalscaler.ExternalScaler_ServiceDesc.ServiceName})
		require.NoError(t, err)
		return res.Status
	}
	require.Eventually(t, func() bool { return status() == healthpb.HealthCheckResponse_SERVING }, wait, 10*time.Millisecond)
	ns.Shutdown()
	require.Eventually(t, func() bool { return status() == healthpb.HealthCheckResponse_NOT_SERVING }, wait, 10*time.Millisecond,
		"a scaler cut off from NATS answers from a stale view: not ready")
	assert.ErrorContains(t, s.Ready(), "NATS")
}
