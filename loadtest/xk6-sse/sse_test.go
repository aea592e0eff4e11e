package sse

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.k6.io/k6/js/modulestest"
	"go.k6.io/k6/lib"
	"go.k6.io/k6/metrics"
)

// skipLike serves Skip's stream shape: an init, then one update per write
// stamped with the write time, with keep-alive comments in between.
func skipLike(t *testing.T, updates int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.Error(w, `"no such instance"`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		_, _ = fmt.Fprint(w, "event: init\nid: 1\ndata: [[\"ts\",[{\"ts\":1}]]]\n\n")
		_ = rc.Flush()
		for i := range updates {
			time.Sleep(5 * time.Millisecond)
			_, _ = fmt.Fprintf(w, ": keep-alive\n\nevent: update\nid: %d\ndata: [[\"ts\",\n", i+2)
			_, _ = fmt.Fprintf(w, "data: [{\"ts\":%f}]]]\n\n", now())
			_ = rc.Flush()
		}
		<-r.Context().Done() // hold until the client leaves
	}))
	t.Cleanup(srv.Close)
	return srv
}

type vu struct {
	rt      *modulestest.Runtime
	samples chan metrics.SampleContainer
}

func newVU(t *testing.T) vu {
	t.Helper()
	rt := modulestest.NewRuntime(t)
	registry := metrics.NewRegistry()
	rt.VU.InitEnvField.Registry = registry
	mi := new(RootModule).NewModuleInstance(rt.VU)
	for name, v := range mi.Exports().Named {
		require.NoError(t, rt.VU.RuntimeField.Set(name, v))
	}
	samples := make(chan metrics.SampleContainer, 1000)
	rt.MoveToVUContext(&lib.State{
		Samples:   samples,
		Transport: http.DefaultTransport,
		Tags:      lib.NewVUStateTags(registry.RootTagSet()),
	})
	return vu{rt: rt, samples: samples}
}

// sums adds the pushed values per metric.
func (v vu) sums() map[string][]float64 {
	out := map[string][]float64{}
	for {
		select {
		case c := <-v.samples:
			for _, s := range c.GetSamples() {
				out[s.Metric.Name] = append(out[s.Metric.Name], s.Value)
			}
		default:
			return out
		}
	}
}

func TestOpenReportsFirstEventAndLatency(t *testing.T) {
	srv := skipLike(t, 3)
	v := newVU(t)
	res, err := v.rt.RunOnEventLoop(fmt.Sprintf(
		`open(%q, {hold: '5s', maxEvents: 4, latencyField: 'ts', tags: {name: 'stream'}})`, srv.URL+"/s"))
	require.NoError(t, err)
	r := res.Export().(*Result)
	assert.Equal(t, 200, r.Status)
	assert.Equal(t, 4, r.Events)
	assert.Empty(t, r.Error)
	assert.GreaterOrEqual(t, r.FirstEventMs, 0.0)

	got := v.sums()
	assert.Equal(t, []float64{1}, got["sse_streams"])
	assert.Len(t, got["sse_events"], 4)
	assert.Len(t, got["sse_time_to_first_event"], 1)
	// The init's stale stamp is not a latency; the three updates are.
	require.Len(t, got["sse_event_latency"], 3)
	for _, l := range got["sse_event_latency"] {
		assert.True(t, l >= 0 && l < 5000, "latency %v ms", l)
	}
	assert.Empty(t, got["sse_errors"])
}

func TestOpenHoldZeroReturnsAtFirstEvent(t *testing.T) {
	srv := skipLike(t, 100)
	v := newVU(t)
	res, err := v.rt.RunOnEventLoop(fmt.Sprintf(`open(%q, {hold: 0})`, srv.URL+"/s"))
	require.NoError(t, err)
	r := res.Export().(*Result)
	assert.Equal(t, 1, r.Events)
	assert.Empty(t, r.Error)
}

func TestOpenHoldEndsTheStream(t *testing.T) {
	srv := skipLike(t, 0)
	v := newVU(t)
	start := time.Now()
	res, err := v.rt.RunOnEventLoop(fmt.Sprintf(`open(%q, {hold: 200})`, srv.URL+"/s"))
	require.NoError(t, err)
	r := res.Export().(*Result)
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	assert.Equal(t, 1, r.Events)
	assert.Empty(t, r.Error, "a hold that ends is not an error")
}

func TestOpenCountsErrors(t *testing.T) {
	srv := skipLike(t, 0)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		<-r.Context().Done()
	}))
	t.Cleanup(silent.Close)
	v := newVU(t)
	for _, c := range []struct{ url, params, want string }{
		{srv.URL + "/missing", `{}`, "status 404"},
		{silent.URL, `{hold: '5s', timeout: '100ms'}`, errTimeout.Error()},
		{"http://127.0.0.1:1/refused", `{}`, "connection refused"},
	} {
		res, err := v.rt.RunOnEventLoop(fmt.Sprintf(`open(%q, %s)`, c.url, c.params))
		require.NoError(t, err)
		assert.Contains(t, res.Export().(*Result).Error, c.want, c.url)
	}
	assert.Len(t, v.sums()["sse_errors"], 3)
}

func TestOpenRejectsBadParams(t *testing.T) {
	v := newVU(t)
	_, err := v.rt.RunOnEventLoop(`open("http://127.0.0.1:1/", {hold: 'soon'})`)
	assert.ErrorContains(t, err, "hold")
}

func TestFindNumber(t *testing.T) {
	for _, c := range []struct {
		data string
		want float64
		ok   bool
	}{
		{`[["k",[{"ts":12.5}]]]`, 12.5, true},
		{`{"a":{"ts":3}}`, 3, true},
		{`[["k",[{"ts":"12"}]]]`, 0, false},
		{`not json`, 0, false},
		{`[]`, 0, false},
	} {
		got, ok := findNumber([]byte(c.data), "ts")
		assert.Equal(t, c.ok, ok, c.data)
		assert.Equal(t, c.want, got, c.data)
	}
}
