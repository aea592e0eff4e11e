// Package sse is a k6 extension (import "k6/x/sse") that subscribes to a
// Server-Sent Events stream, as Skip's streaming API serves them, and reports
// time to first event, event counts and write → event latency as k6 metrics.
//
// It is its own module so that the main module's go test/vet never build k6.
package sse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/grafana/sobek"
	"go.k6.io/k6/js/modules"
	"go.k6.io/k6/metrics"
)

func init() { modules.Register("k6/x/sse", new(RootModule)) }

// RootModule creates one ModuleInstance per VU.
type RootModule struct{}

// ModuleInstance is the module as one VU sees it.
type ModuleInstance struct {
	vu modules.VU
	m  *sseMetrics
}

type sseMetrics struct {
	streams, errors, events *metrics.Metric
	firstEvent, latency     *metrics.Metric
}

// NewModuleInstance registers the metrics (idempotent across VUs).
func (*RootModule) NewModuleInstance(vu modules.VU) modules.Instance {
	reg := vu.InitEnv().Registry
	return &ModuleInstance{vu: vu, m: &sseMetrics{
		streams:    reg.MustNewMetric("sse_streams", metrics.Counter),
		errors:     reg.MustNewMetric("sse_errors", metrics.Counter),
		events:     reg.MustNewMetric("sse_events", metrics.Counter),
		firstEvent: reg.MustNewMetric("sse_time_to_first_event", metrics.Trend, metrics.Time),
		latency:    reg.MustNewMetric("sse_event_latency", metrics.Trend, metrics.Time),
	}}
}

// Exports are open(url, params) and now().
func (mi *ModuleInstance) Exports() modules.Exports {
	return modules.Exports{Named: map[string]any{"open": mi.open, "now": now}}
}

// now is the wall clock in milliseconds with microsecond precision
// (Date.now() has only milliseconds): writers stamp events with it.
func now() float64 { return float64(time.Now().UnixMicro()) / 1000 }

// Params are open's options; durations are k6 strings ("2s") or milliseconds.
type Params struct {
	Headers map[string]string `js:"headers"`
	Tags    map[string]string `js:"tags"`
	// Hold is how long to stay subscribed, from the request; 0 returns at
	// the first event (time-to-first-event runs).
	Hold any `js:"hold"`
	// Timeout bounds the wait for the first event (default 10s).
	Timeout any `js:"timeout"`
	// MaxEvents returns after this many events (0: no limit).
	MaxEvents int `js:"maxEvents"`
	// LatencyField names a numeric JSON field, anywhere in the data of
	// LatencyEvent events (default "update"), holding the write time from
	// now(); each such event records sse_event_latency.
	LatencyField string `js:"latencyField"`
	LatencyEvent string `js:"latencyEvent"`
}

// Result is what open returns to the script.
type Result struct {
	Status       int     `js:"status"`
	Events       int     `js:"events"`
	FirstEventMs float64 `js:"firstEventMs"` // -1 when no event came
	Error        string  `js:"error"`        // "" when the stream ended as asked
}

var errTimeout = errors.New("no event before the timeout")

// open subscribes to url and blocks until the hold ends, MaxEvents arrive,
// the server ends the stream, or the test stops.
func (mi *ModuleInstance) open(url string, params sobek.Value) (*Result, error) {
	state := mi.vu.State()
	if state == nil {
		return nil, errors.New("sse.open is not allowed in the init context")
	}
	var p Params
	if params != nil && !sobek.IsUndefined(params) && !sobek.IsNull(params) {
		if err := mi.vu.Runtime().ExportTo(params, &p); err != nil {
			return nil, fmt.Errorf("sse.open params: %w", err)
		}
	}
	hold, err := duration(p.Hold, 0)
	if err != nil {
		return nil, fmt.Errorf("sse.open hold: %w", err)
	}
	timeout, err := duration(p.Timeout, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("sse.open timeout: %w", err)
	}
	if p.LatencyEvent == "" {
		p.LatencyEvent = "update"
	}

	tags := state.Tags.GetCurrentValues()
	for k, v := range p.Tags {
		tags.SetTag(k, v)
	}
	push := func(m *metrics.Metric, v float64) {
		metrics.PushIfNotDone(mi.vu.Context(), state.Samples, metrics.Sample{
			TimeSeries: metrics.TimeSeries{Metric: m, Tags: tags.Tags},
			Time:       time.Now(), Value: v, Metadata: tags.Metadata,
		})
	}
	res, err := mi.subscribe(state.Transport, url, p, hold, timeout, push)
	if err != nil {
		res.Error = err.Error()
		push(mi.m.errors, 1)
	}
	return res, nil
}

func (mi *ModuleInstance) subscribe(rt http.RoundTripper, url string, p Params, hold, timeout time.Duration,
	push func(*metrics.Metric, float64)) (*Result, error) {
	res := &Result{FirstEventMs: -1}
	ctx, cancel := context.WithCancelCause(mi.vu.Context())
	defer cancel(nil)
	start := time.Now()
	if hold > 0 {
		t := time.AfterFunc(hold, func() { cancel(nil) })
		defer t.Stop()
	}
	first := make(chan struct{})
	firstTimer := time.AfterFunc(timeout, func() {
		select {
		case <-first:
		default:
			cancel(errTimeout)
		}
	})
	defer firstTimer.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	for k, v := range p.Headers {
		req.Header.Set(k, v)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return res, stopped(ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	res.Status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("status %d", resp.StatusCode)
	}
	push(mi.m.streams, 1)

	r := newReader(resp.Body)
	for {
		kind, data, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() == nil {
				return res, nil // the server ended the stream
			}
			return res, stopped(ctx, err)
		}
		at := time.Now()
		res.Events++
		push(mi.m.events, 1)
		if res.Events == 1 {
			close(first)
			res.FirstEventMs = float64(at.Sub(start).Microseconds()) / 1000
			push(mi.m.firstEvent, res.FirstEventMs)
			if hold == 0 {
				return res, nil
			}
		}
		if p.LatencyField != "" && kind == p.LatencyEvent {
			if ts, ok := findNumber(data, p.LatencyField); ok {
				push(mi.m.latency, float64(at.UnixMicro())/1000-ts)
			}
		}
		if p.MaxEvents > 0 && res.Events >= p.MaxEvents {
			return res, nil
		}
	}
}

// stopped turns the error of a cancelled read into the reason it stopped:
// nil when the hold ended or the test is stopping, errTimeout, or err.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	if cause := context.Cause(ctx); errors.Is(cause, errTimeout) {
		return cause
	}
	return nil
}

// duration reads a k6 duration: a string such as "1.5s" or milliseconds.
func duration(v any, def time.Duration) (time.Duration, error) {
	switch d := v.(type) {
	case nil:
		return def, nil
	case string:
		return time.ParseDuration(d)
	case int64:
		return time.Duration(d) * time.Millisecond, nil
	case float64:
		return time.Duration(d * float64(time.Millisecond)), nil
	}
	return 0, fmt.Errorf("want a duration string or milliseconds, got %T", v)
}

// findNumber returns the first number under key anywhere in the JSON data.
func findNumber(data []byte, key string) (float64, bool) {
	var v any
	if json.Unmarshal(data, &v) != nil {
		return 0, false
	}
	return walk(v, key)
}

func walk(v any, key string) (float64, bool) {
	switch t := v.(type) {
	case map[string]any:
		if n, ok := t[key].(float64); ok {
			return n, true
		}
		for _, c := range t {
			if n, ok := walk(c, key); ok {
				return n, true
			}
		}
	case []any:
		for _, c := range t {
			if n, ok := walk(c, key); ok {
				return n, true
			}
		}
	}
	return 0, false
}

// reader parses text/event-stream: event and data fields, comments skipped.
type reader struct{ s *bufio.Scanner }

func newReader(r io.Reader) *reader {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), 16<<20) // an init carries a whole collection
	return &reader{s: s}
}

// next returns the next dispatched event; io.EOF at the end of the stream.
func (r *reader) next() (kind string, data []byte, err error) {
	var hasData bool
	for r.s.Scan() {
		line := r.s.Text()
		switch {
		case line == "":
			if hasData {
				if kind == "" {
					kind = "message"
				}
				return kind, data, nil
			}
			kind = ""
		case strings.HasPrefix(line, ":"):
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				kind = value
			case "data":
				if hasData {
					data = append(data, '\n')
				}
				data = append(data, value...)
				hasData = true
			}
		}
	}
	if err := r.s.Err(); err != nil {
		return "", nil, err
	}
	return "", nil, io.EOF
}
