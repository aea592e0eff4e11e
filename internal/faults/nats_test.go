package faults_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// NATS goes away for longer than the members' ttl (3 s) under load: nothing
// expires, creations, streams and writes go on from the last view, the
// scaler keeps answering its last value, and the views are fresh again soon
// after NATS is back. HEADCOUNT_OUTAGE sets the outage (default 5 s; the
// figures in docs/reliability.md are for 15 s).
func TestNATSOutageUnderLoad(t *testing.T) {
	outage := envDuration(t, "HEADCOUNT_OUTAGE", 5*time.Second)
	s := newStack(t, 1)
	s.startLeader()
	s.follower("f-1")
	s.follower("f-2")
	r := s.router("r-1")
	s.startScaler()
	s.waitRouted(r, 2)
	keda := s.keda()

	load := &e2e.Load{Endpoints: s.endpoints, Workers: 2, Every: 100 * time.Millisecond, KeepStreams: 10_000}
	load.Start()
	require.Eventually(t, func() bool { return load.Snapshot().StreamsOpened >= 20 }, wait, 20*time.Millisecond)

	// The scaler's answer, sampled throughout.
	type sample struct {
		at    time.Time
		value float64
		err   error
	}
	var (
		mu      sync.Mutex
		samples []sample
		done    = make(chan struct{})
	)
	go func() {
		for {
			v, err := live(keda)
			mu.Lock()
			samples = append(samples, sample{time.Now(), v, err})
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	// The sampler itself has read the figure before NATS goes.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := len(samples)
		return n > 0 && samples[n-1].err == nil && samples[n-1].value >= 20
	}, wait, 20*time.Millisecond)
	before := load.Snapshot()
	killed := time.Now()
	s.stopNATS(0)
	time.Sleep(outage)
	during := load.Snapshot()
	restarted := time.Now()
	s.startNATS(0)
	// Fresh again: both views have heard from NATS since.
	var fresh time.Duration
	require.Eventually(t, func() bool {
		rs, ok1 := e2e.Metric(r.control, "headcount_view_stale_seconds")
		ss, ok2 := e2e.Metric(s.scHTTP, "headcount_view_stale_seconds")
		ready, _ := e2e.Metric(r.control, `headcount_followers{service="svc",state="ready"}`)
		fresh = time.Since(restarted)
		return ok1 && ok2 && rs == 0 && ss == 0 && ready == 2
	}, wait, 10*time.Millisecond, "views fresh after NATS returned")
	time.Sleep(2 * time.Second) // load on the reconnected fleet
	close(done)
	after := load.Stop()

	t.Logf("outage %v; before: %v", outage, before)
	t.Logf("during: %v", during)
	t.Logf("after: %v", after)
	t.Logf("views fresh %v after NATS returned", fresh.Round(time.Millisecond))
	assert.Greater(t, during.Created, before.Created, "creations went on during the outage")
	assert.Greater(t, during.Writes, before.Writes, "writes went on during the outage")
	assert.Greater(t, during.Updates, before.Updates, "open streams got the writes' updates during the outage")
	assert.Zero(t, e2e.Failures(after.CreateFailed), "failed creations: %v", after.CreateFailed)
	assert.Zero(t, e2e.Failures(after.StreamFailed), "failed subscriptions (410 owner_gone among them): %v", after.StreamFailed)
	assert.Zero(t, e2e.Failures(after.StreamsCut), "streams cut: %v", after.StreamsCut)
	assert.Zero(t, e2e.Failures(after.WriteFailed), "failed writes: %v", after.WriteFailed)

	mu.Lock()
	defer mu.Unlock()
	var last, low float64 = -1, -1
	for _, sm := range samples {
		switch {
		case sm.at.Before(killed):
			if sm.err == nil {
				last = sm.value
			}
		case sm.at.Before(restarted):
			require.NoError(t, sm.err, "the scaler answers while NATS is away")
			if low < 0 || sm.value < low {
				low = sm.value
			}
		}
	}
	t.Logf("scaler GetMetrics: %v before the outage, lowest %v during it", last, low)
	require.Positive(t, last)
	assert.GreaterOrEqual(t, low, last, "GetMetrics never drops during the outage")
}
