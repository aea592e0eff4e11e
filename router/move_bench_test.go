package router_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
)

// BenchmarkDrainMoves drains a demo follower holding n open streams while
// another is ready: how long the drain takes (until the follower stopped),
// and each stream's move as its client sees it (from the drain's start to
// the new init on its connection). One router, in one process.
//
//	go test -run '^$' -bench DrainMoves -benchtime 3x ./router/
func BenchmarkDrainMoves(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			var drains, moves []time.Duration
			for range b.N {
				d, m := drainOnce(b, n)
				drains, moves = append(drains, d), append(moves, m...)
			}
			slices.Sort(drains)
			slices.Sort(moves)
			at := func(q float64) float64 { return float64(moves[int(q*float64(len(moves)-1))]) / 1e6 }
			b.ReportMetric(float64(drains[len(drains)/2])/1e6, "drain-ms")
			b.ReportMetric(at(0.5), "move-p50-ms")
			b.ReportMetric(at(0.99), "move-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func drainOnce(b *testing.B, n int) (time.Duration, []time.Duration) {
	b.StopTimer()
	url := natstest.Server(b)
	nc := natstest.Connect(b, url)
	lead := startDemo(b, nc, "leader", nil)
	drained := startDemo(b, nc, "follower-a", lead)
	r := startRouter(b, url, "r-1", func(c *router.Config) { c.Moves.NoRebalance = true })
	r.waitReady(b, 1)
	streams := make([]*e2e.Stream, n)
	for i := range streams {
		var code int
		streams[i], code = e2e.Subscribe(b, strings.TrimPrefix(r.streaming.URL, "http://"), r.create(b))
		require.Equal(b, 200, code)
		require.Equal(b, "init", streams[i].Next(b).Kind)
	}
	startDemo(b, nc, "follower-b", lead)
	r.waitReady(b, 2)

	b.StartTimer()
	start := time.Now()
	moves := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i, st := range streams {
		wg.Go(func() {
			require.Equal(b, "init", st.Next(b).Kind)
			moves[i] = time.Since(start)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(b, drained.Shutdown(ctx))
	drain := time.Since(start)
	wg.Wait()
	b.StopTimer()
	return drain, moves
}
