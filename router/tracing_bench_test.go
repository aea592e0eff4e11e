package router_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/headcount-dev/headcount/internal/otlptest"
	"github.com/headcount-dev/headcount/telemetry"
)

// BenchmarkTracingOverhead measures creations per second through the router
// (the closed loop of BenchmarkCreationRate: create, read the init, leave)
// with tracing exporting and with tracing off, side by side: every
// iteration runs both, in alternating order, on the same router and
// follower (h2c). Exporting is telemetry's provider as OTEL_* configures it
// in production (batched OTLP/gRPC), to a real collector in the test; every
// creation is a sampled trace of its own (OTEL_TRACES_SAMPLER and its ARG,
// if set, apply). Reported: both rates and on ÷ off, medians of the pairs.
//
//	go test -run '^$' -bench TracingOverhead -benchtime 5x -count 3 ./router/
func BenchmarkTracingOverhead(b *testing.B) {
	rec := otlptest.StartCounting(b)
	for _, kv := range rec.Env() {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	ctx := context.Background()
	sdk, err := telemetry.NewTracerProvider(ctx, "headcount-router")
	if err != nil {
		b.Fatal(err)
	}
	tracing := benchTracing
	tracing.on.Store(sdk)
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tracing)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	b.Cleanup(func() {
		tracing.enabled.Store(false)
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = sdk.Shutdown(ctx)
	})

	_, r := benchFleet(b, h2c)
	// Short phases, so that the machine's swings hit both sides of a pair alike.
	rate := newCreationRate(b, 512)
	var off, on, ratio []float64
	run := func(enabled bool) float64 {
		tracing.enabled.Store(enabled)
		return rate(r.control.URL, r.streaming.URL, true)
	}
	i := 0
	for b.Loop() {
		var withOff, withOn float64
		if i%2 == 0 {
			withOff, withOn = run(false), run(true)
		} else {
			withOn, withOff = run(true), run(false)
		}
		i++
		off, on, ratio = append(off, withOff), append(on, withOn), append(ratio, withOn/withOff)
	}
	b.StopTimer()
	flush, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sdk.ForceFlush(flush); err != nil {
		b.Fatal(err)
	}
	if rec.Count() == 0 {
		b.Fatal("no span reached the collector: tracing was not on")
	}
	b.ReportMetric(median(off), "off-creations/s")
	b.ReportMetric(median(on), "on-creations/s")
	reportRatio(b, ratio)
	b.ReportMetric(median(on)/median(off), "ratio-of-medians")
	b.ReportMetric(float64(rec.Count()), "spans-exported")
}

// switchable is a tracer provider that traces with on while enabled, and
// with a no-op provider (tracing off: the process's default) otherwise, so
// that one process can measure both. It is one for the test binary: the
// router's package tracer is bound to the first provider installed.
type switchable struct {
	embedded.TracerProvider
	on      atomic.Pointer[sdktrace.TracerProvider]
	enabled atomic.Bool
}

var benchTracing = &switchable{}

func (s *switchable) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return switchTracer{s: s, name: name, opts: opts, off: noop.NewTracerProvider().Tracer(name, opts...)}
}

type switchTracer struct {
	embedded.Tracer
	s    *switchable
	name string
	opts []trace.TracerOption
	off  trace.Tracer
}

func (t switchTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.s.enabled.Load() {
		return t.s.on.Load().Tracer(t.name, t.opts...).Start(ctx, name, opts...)
	}
	return t.off.Start(ctx, name, opts...)
}
