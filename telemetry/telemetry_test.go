package telemetry_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	"github.com/headcount-dev/headcount/internal/otlptest"
	"github.com/headcount-dev/headcount/telemetry"
)

// With OTEL_EXPORTER_OTLP_ENDPOINT set, a span reaches a real OTLP receiver
// under the process's service name, in the trace of the incoming
// traceparent; the same trace context goes out on the next request.
func TestSpansReachAnOTLPReceiverInTheCallersTrace(t *testing.T) {
	rec := otlptest.Start(t)
	for _, kv := range rec.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	require.True(t, telemetry.Enabled())

	ctx := context.Background()
	shutdown, err := telemetry.Setup(ctx, "headcount-test")
	require.NoError(t, err)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	in := http.Header{"Traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"}}
	ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(in))
	ctx, span := otel.Tracer("telemetry_test").Start(ctx, "create")
	out := http.Header{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(out))
	span.End()
	require.Contains(t, out.Get("Traceparent"), traceID, "the trace goes on to the next request")
	require.NoError(t, shutdown(ctx)) // flushes

	got := rec.Spans()
	require.Len(t, got, 1)
	require.Equal(t, "headcount-test", got[0].Service)
	require.Equal(t, "create", got[0].GetName())
	require.Equal(t, traceID, got[0].TraceID())
}

// Without an endpoint nothing is exported and Setup installs no provider.
func TestTracingIsOffWithoutAnEndpoint(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	require.False(t, telemetry.Enabled())
	before := otel.GetTracerProvider()
	shutdown, err := telemetry.Setup(context.Background(), "x")
	require.NoError(t, err)
	require.Equal(t, before, otel.GetTracerProvider())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, shutdown(ctx))
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	require.False(t, telemetry.Enabled(), "OTEL_SDK_DISABLED wins")
}
