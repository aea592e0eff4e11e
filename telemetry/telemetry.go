// Package telemetry wires OpenTelemetry tracing for a headcount process: one
// tracer provider exporting OTLP over gRPC, configured by the standard OTEL_*
// environment variables, and W3C trace context as the propagator. Tracing is
// off (the global no-op provider stays) unless an OTLP endpoint is set, so a
// process without OTEL_* configuration pays nothing.
package telemetry

import (
	"context"
	"errors"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Enabled tells whether the environment asks for traces: an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and
// neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none.
func Enabled() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the process's tracer provider and the W3C trace-context
// propagator when Enabled, naming the process service (OTEL_SERVICE_NAME
// and OTEL_RESOURCE_ATTRIBUTES win). The propagator is installed either way,
// so an incoming traceparent is passed on even with tracing off. Shutdown
// flushes the spans still buffered; call it before the process exits.
func Setup(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	tp, err := NewTracerProvider(ctx, service)
	if err != nil {
		return nil, err
	}
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// NewTracerProvider is the tracer provider Setup installs: spans batched to
// the OTLP/gRPC exporter the OTEL_EXPORTER_OTLP_* environment configures,
// under the resource of service. Setup is the way for a process; this is for
// a caller that must wrap it (a benchmark switching tracing on and off).
func NewTracerProvider(ctx context.Context, service string) (*sdktrace.TracerProvider, error) {
	exporter, err := otlptracegrpc.New(ctx) // endpoint, TLS, headers, timeout: OTEL_EXPORTER_OTLP_*
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err == nil {
		// The environment's attributes win over the process's own name.
		res, err = resource.Merge(res, envResource(ctx))
	}
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)), nil
}

func envResource(ctx context.Context) *resource.Resource {
	r, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return resource.Empty()
	}
	return r
}
