package router_test

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/router"
)

// Creations held while no follower is ready go out as the followers come
// up, with at most --slow-start placements a follower has not reported yet:
// the first one ready takes them at the pace it reports them, not all at
// once, and the one ready after it gets its share.
func TestUnitHeldBurstGoesOutAtTheSlowStartPace(t *testing.T) {
	const bound, burst = 10, 100
	_, followers, r1, r2 := demoFleet(t, 2, func(c *router.Config) { c.SlowStart = bound; c.Moves.NoRebalance = true })
	first, second := followers[0], followers[1]
	for _, f := range followers {
		f.Agent().Unready()
	}
	require.Eventually(t, func() bool { return r1.View().Totals(svc).Ready == 0 }, 10*time.Second, 5*time.Millisecond)

	var created sync.Map // id → true
	var answered sync.WaitGroup
	var failed atomic.Int64
	for range burst {
		answered.Go(func() {
			resp, err := http.Post(r1.control.URL+"/v1/streams/collection", "application/json", strings.NewReader(createBody))
			if err != nil || resp.StatusCode != http.StatusCreated {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			var id strings.Builder
			buf := make([]byte, 256)
			n, _ := resp.Body.Read(buf)
			id.Write(buf[:n])
			created.Store(id.String(), true)
		})
	}
	require.Eventually(t, func() bool { return r2.View().Totals(svc).Demand == burst }, 10*time.Second, 5*time.Millisecond, "the burst is held")

	// The most placements the first follower had unreported, as the router
	// placing them saw it.
	var most atomic.Int64
	stop := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Go(func() {
		for {
			if m, ok := r1.View().Member(svc, first.Agent().Report().Follower); ok && m.Pending > most.Load() {
				most.Store(m.Pending)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	first.Agent().Ready()
	require.Eventually(t, func() bool { return first.Agent().Report().Instances >= 2*bound }, 10*time.Second, 5*time.Millisecond)
	second.Agent().Ready()
	answered.Wait()
	close(stop)
	sampled.Wait()

	assert.Zero(t, failed.Load(), "failed creations")
	counts := map[string]int{}
	created.Range(func(id, _ any) bool {
		counts[ownerOf(followers, id.(string)).Agent().Report().Follower]++
		return true
	})
	t.Logf("%d held creations: %v; the first follower's most unreported placements %d (bound %d); slowed %v times",
		burst, counts, most.Load(), bound, metric(t, r1, `headcount_router_creations_slowed_total{service="svc"}`))
	assert.LessOrEqual(t, most.Load(), int64(bound+1), "unreported placements on the first follower ready")
	assert.Positive(t, metric(t, r1, `headcount_router_creations_slowed_total{service="svc"}`))
	assert.Positive(t, counts[second.Agent().Report().Follower], "the second follower ready got some of the burst")
}
