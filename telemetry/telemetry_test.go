package telemetry_test

import (
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/headcount-dev/headcount/telemetry"
)

// receiver is an OTLP/gRPC trace collector that keeps what it receives.
type receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.ResourceSpans
}

func (r *receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, req.GetResourceSpans()...)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *receiver) received() []*tracepb.ResourceSpans {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.ResourceSpans(nil), r.spans...)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, a span reaches a real OTLP receiver
// under the process's service name, in the trace of the incoming
// traceparent; the same trace context goes out on the next request.
func TestSpansReachAnOTLPReceiverInTheCallersTrace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	rec := &receiver{}
	collectortrace.RegisterTraceServiceServer(srv, rec)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
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

	got := rec.received()
	require.Len(t, got, 1)
	var service string
	for _, kv := range got[0].GetResource().GetAttributes() {
		if kv.GetKey() == "service.name" {
			service = kv.GetValue().GetStringValue()
		}
	}
	require.Equal(t, "headcount-test", service)
	spans := got[0].GetScopeSpans()[0].GetSpans()
	require.Len(t, spans, 1)
	require.Equal(t, "create", spans[0].GetName())
	require.Equal(t, traceID, hex.EncodeToString(spans[0].GetTraceId()))
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
