package scaler

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/headcount-dev/headcount/internal/natstest"
)

// KEDA's call becomes a span in the caller's trace (W3C traceparent in the
// gRPC metadata); a health check makes none.
func TestKEDACallsAreSpansInTheCallersTrace(t *testing.T) {
	recorder := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })

	_, addr, _ := serve(t, natstest.Server(t), DefaultServerConfig())
	client, cc := dial(t, addr)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	_, err := client.GetMetricSpec(ctx, ref("hn"))
	require.NoError(t, err)
	_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	// gRPC ends a server span after the response is on the wire, so the
	// client can see its answer first; a span is started before the handler
	// runs, so Started is already complete here.
	require.Len(t, recorder.Started(), 1, "one span: GetMetricSpec, not the health check")
	require.Eventually(t, func() bool { return len(recorder.Ended()) == 1 }, 5*time.Second, 5*time.Millisecond)

	spans := recorder.Ended()
	require.Equal(t, "externalscaler.ExternalScaler/GetMetricSpec", spans[0].Name())
	require.Equal(t, traceID, spans[0].SpanContext().TraceID().String())
}
