package faults_test

import (
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// A router is stopped (SIGTERM) under load while a client balances over two
// routers by their readiness, as a Kubernetes Service does: it fails
// /readyz at once, keeps serving through --shutdown-delay while the client
// moves away, then closes its listeners and lets its streams finish. No
// connection is refused, no request fails, no stream is cut; a new router
// then takes its place.
func TestRouterSIGTERMUnderLoadRefusesNothing(t *testing.T) {
	s := newStack(t, 1)
	s.startLeader()
	s.follower("f-1")
	s.follower("f-2")
	// The client's endpoint list follows /readyz every 100 ms: well within
	// the shutdown delay, as Kubernetes' propagation is within 5 s.
	const delay = "1s"
	r1, r2 := s.router("r-1", "--shutdown-delay", delay), s.router("r-2", "--shutdown-delay", delay)
	s.waitRouted(r1, 2)
	s.waitRouted(r2, 2)
	var (
		mu    sync.Mutex
		ready = map[*routerProc]bool{r1: true, r2: true}
		pool  = []*routerProc{r1, r2}
		stop  = make(chan struct{})
		polls sync.WaitGroup
	)
	polls.Go(func() {
		for {
			mu.Lock()
			rs := append([]*routerProc(nil), pool...)
			mu.Unlock()
			for _, r := range rs {
				code, _ := e2e.Get(r.control + "/readyz")
				mu.Lock()
				ready[r] = code == http.StatusOK
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	endpoints := func() []e2e.Endpoint {
		mu.Lock()
		defer mu.Unlock()
		var out []e2e.Endpoint
		for _, r := range pool {
			if ready[r] {
				out = append(out, r.endpoint())
			}
		}
		return out
	}
	load := &e2e.Load{Endpoints: endpoints, Workers: 4, Every: 50 * time.Millisecond, KeepStreams: 10_000}
	load.Start()
	require.Eventually(t, func() bool { return load.Snapshot().StreamsOpened >= 40 }, wait, 20*time.Millisecond)

	r1.Signal(t, syscall.SIGTERM)
	stopped := time.Now()
	time.Sleep(2 * time.Second) // past the delay: r-1's listeners are closed
	code, _ := e2e.Get(r1.control + "/readyz")
	assert.Zero(t, code, "r-1's listener is closed after the delay")
	assert.False(t, r1.Exited(), "r-1 still drains the streams opened through it")

	// The rolled router's replacement joins the pool.
	r3 := s.router("r-3", "--shutdown-delay", delay)
	s.waitRouted(r3, 2)
	mu.Lock()
	pool = append(pool, r3)
	mu.Unlock()
	before := load.Snapshot().Created
	require.Eventually(t, func() bool { return load.Snapshot().Created >= before+40 }, wait, 20*time.Millisecond)
	counts := load.Stop()
	close(stop)
	polls.Wait()

	t.Logf("%v", counts)
	t.Logf("r-1 stopped %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations: %v", counts.CreateFailed)
	assert.Zero(t, e2e.Failures(counts.StreamFailed), "failed subscriptions: %v", counts.StreamFailed)
	assert.Zero(t, e2e.Failures(counts.WriteFailed), "failed writes: %v", counts.WriteFailed)
	assert.Zero(t, e2e.Failures(counts.StreamsCut), "streams cut: %v", counts.StreamsCut)
	// Its streams closed by the client, r-1 exits cleanly.
	require.NoError(t, r1.Wait(t, 10*time.Second))
}
