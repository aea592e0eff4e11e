package router_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/otlptest"
	"github.com/headcount-dev/headcount/telemetry"
)

// BenchmarkTracingOverhead measures creations per second through the router
// (the closed loop of BenchmarkCreationRate: create, read the init, leave)
// with tracing exporting and with tracing off, side by side: every
// iteration runs both, in alternating order, on the same router and
// follower (h2c). Exporting is telemetry's provider as OTEL_* configures it
// in production (batched OTLP/gRPC with the SDK's batch defaults), to a
// real collector in a process of its own, as in production: its gRPC and
// protobuf decoding are not the router's. Every creation is a sampled trace
// of its own (OTEL_TRACES_SAMPLER and its ARG, if set, apply). Reported:
// both rates and on ÷ off, medians of the pairs; this process's CPU per
// creation cycle (clients, follower and router) both ways, which hardly
// moves with what else the machine runs; the collector's.
//
//	go test -run '^$' -bench TracingOverhead -benchtime 25x -count 3 ./router/
func BenchmarkTracingOverhead(b *testing.B) {
	const cycles = 512 // short phases, so that the machine's swings hit both sides of a pair alike
	col := startCollectorProcess(b)
	for _, kv := range col.env {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	ctx := context.Background()
	sdk, err := telemetry.NewTracerProvider(ctx, "headcount-router")
	if err != nil {
		b.Fatal(err)
	}
	tracing := benchTracing
	tracing.on.Store(sdk.Tracer(routerTracer))
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
	rate := newCreationRate(b, cycles)
	var off, on, ratio, offCPU, onCPU, colCPU []float64
	run := func(enabled bool) (perSecond, cpu float64) {
		tracing.enabled.Store(enabled)
		cpu0, col0 := processCPU(b), col.cpu(b)
		perSecond = rate(r.control.URL, r.streaming.URL, true)
		if enabled {
			colCPU = append(colCPU, (col.cpu(b)-col0)*1e6/cycles)
		}
		return perSecond, float64((processCPU(b) - cpu0).Microseconds()) / cycles
	}
	i := 0
	for b.Loop() {
		var withOff, withOn, cpuOff, cpuOn float64
		if i%2 == 0 {
			withOff, cpuOff = run(false)
			withOn, cpuOn = run(true)
		} else {
			withOn, cpuOn = run(true)
			withOff, cpuOff = run(false)
		}
		i++
		off, on, ratio = append(off, withOff), append(on, withOn), append(ratio, withOn/withOff)
		offCPU, onCPU = append(offCPU, cpuOff), append(onCPU, cpuOn)
	}
	b.StopTimer()
	flush, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sdk.ForceFlush(flush); err != nil {
		b.Fatal(err)
	}
	spans := col.count(b)
	if spans == 0 {
		b.Fatal("no span reached the collector: tracing was not on")
	}
	b.ReportMetric(median(off), "off-creations/s")
	b.ReportMetric(median(on), "on-creations/s")
	reportRatio(b, ratio)
	b.ReportMetric(median(offCPU), "off-cpu-µs/cycle")
	b.ReportMetric(median(onCPU), "on-cpu-µs/cycle")
	// On a machine whose cores the loop saturates, the best ratio of the rates.
	b.ReportMetric(median(offCPU)/median(onCPU), "cpu-ratio")
	b.ReportMetric(median(colCPU), "collector-cpu-µs/cycle")
	b.ReportMetric(float64(spans)/float64(len(on)*cycles), "spans/cycle")
}

// routerTracer is the router's instrumentation scope (tracing.go's tracer).
const routerTracer = "github.com/headcount-dev/headcount/router"

// switchable is a tracer provider that traces with on while enabled, and
// with a no-op provider (tracing off: the process's default) otherwise, so
// that one process can measure both. It is one for the test binary: the
// router's package tracer is bound to the first provider installed, and on
// is the tracer of the benchmark's SDK provider (the router's; the router
// asks for no other).
type switchable struct {
	embedded.TracerProvider
	on      atomic.Value // trace.Tracer
	enabled atomic.Bool
}

var benchTracing = &switchable{}

func (s *switchable) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return switchTracer{s: s, off: noop.NewTracerProvider().Tracer(name, opts...)}
}

type switchTracer struct {
	embedded.Tracer
	s   *switchable
	off trace.Tracer
}

func (t switchTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.s.enabled.Load() {
		return t.s.on.Load().(trace.Tracer).Start(ctx, name, opts...)
	}
	return t.off.Start(ctx, name, opts...)
}

// collectorProcess is a counting OTLP collector in a process of its own
// (this test binary again, running TestOTLPCollectorProcess).
type collectorProcess struct {
	env []string // OTEL_* pointing at it, the SDK's batching left to its defaults
	pid int
	in  io.Writer
	out *bufio.Scanner
}

func startCollectorProcess(b *testing.B) *collectorProcess {
	child := exec.Command(os.Args[0], "-test.run=^TestOTLPCollectorProcess$")
	child.Env = append(os.Environ(), "HEADCOUNT_OTLP_COLLECTOR_PROCESS=1")
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the child stops when its stdin closes
		_ = child.Wait()
	})
	c := &collectorProcess{pid: child.Process.Pid, in: stdin, out: bufio.NewScanner(stdout)}
	for c.out.Scan() {
		line := c.out.Text()
		if kv, ok := strings.CutPrefix(line, "ENV "); ok && !strings.HasPrefix(kv, "OTEL_BSP_") {
			c.env = append(c.env, kv)
		}
		if line == "READY" {
			return c
		}
	}
	b.Fatal("the collector process did not start")
	return nil
}

// count is how many spans the collector received so far.
func (c *collectorProcess) count(b *testing.B) int {
	if _, err := io.WriteString(c.in, "count\n"); err != nil {
		b.Fatal(err)
	}
	for c.out.Scan() {
		if n, ok := strings.CutPrefix(c.out.Text(), "COUNT "); ok {
			v, err := strconv.Atoi(n)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
	}
	b.Fatal("the collector process ended")
	return 0
}

// cpu is the collector process's CPU time so far, in seconds.
func (c *collectorProcess) cpu(b *testing.B) float64 { return e2e.CPUSeconds(b, c.pid) }

// TestOTLPCollectorProcess is BenchmarkTracingOverhead's collector: it
// prints the environment that points at it, answers "count" with the spans
// received, and stops when its stdin closes.
func TestOTLPCollectorProcess(t *testing.T) {
	if os.Getenv("HEADCOUNT_OTLP_COLLECTOR_PROCESS") == "" {
		t.Skip("helper process of BenchmarkTracingOverhead")
	}
	rec := otlptest.StartCounting(t)
	for _, kv := range rec.Env() {
		fmt.Println("ENV " + kv)
	}
	fmt.Println("READY")
	for in := bufio.NewScanner(os.Stdin); in.Scan(); {
		if in.Text() == "count" {
			fmt.Printf("COUNT %d\n", rec.Count())
		}
	}
}
