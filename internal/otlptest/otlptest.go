// Package otlptest is a real OTLP/gRPC trace collector for tests: the
// collector service of go.opentelemetry.io/proto/otlp on a loopback gRPC
// server, keeping every span it receives, to which processes export as in
// production (OTEL_EXPORTER_OTLP_ENDPOINT, Env).
package otlptest

import (
	"context"
	"encoding/hex"
	"net"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Receiver is a running collector.
type Receiver struct {
	collectortrace.UnimplementedTraceServiceServer
	addr    string
	discard bool // count only (a benchmark's: kept spans would weigh on its heap)

	mu    sync.Mutex
	spans []Span
	n     int
}

// Span is one span received, with the service.name of the process that
// sent it.
type Span struct {
	Service string
	*tracepb.Span
}

// TraceID is the span's trace id in hex, as in a traceparent.
func (s Span) TraceID() string { return hex.EncodeToString(s.GetTraceId()) }

// SpanID is the span's id in hex.
func (s Span) SpanID() string { return hex.EncodeToString(s.GetSpanId()) }

// ParentID is the span's parent's id in hex ("" for a root).
func (s Span) ParentID() string { return hex.EncodeToString(s.GetParentSpanId()) }

// Start runs a collector on 127.0.0.1 until t ends.
func Start(t testing.TB) *Receiver { t.Helper(); return start(t, false) }

// StartCounting runs a collector that only counts the spans it receives.
func StartCounting(t testing.TB) *Receiver { t.Helper(); return start(t, true) }

func start(t testing.TB, discard bool) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{addr: ln.Addr().String(), discard: discard}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return r
}

// Env is the environment that points an OpenTelemetry SDK at r, exporting
// each batch within 100 ms (KEY=value).
func (r *Receiver) Env() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + r.addr, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100"}
}

// Export is the collector service: it keeps what it receives.
func (r *Receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			r.n += len(ss.GetSpans())
			if r.discard {
				continue
			}
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, Span{Service: service, Span: s})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Count is how many spans were received so far.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Spans are the spans received so far (none when counting only).
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Trace are the spans received so far of trace id (hex).
func (r *Receiver) Trace(id string) []Span {
	var out []Span
	for _, s := range r.Spans() {
		if s.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}
