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

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
)

// BenchmarkDrainMoves drains a demo follower holding n open streams while
// another is ready: how long the drain takes (until the follower stopped),
// and each stream's move as its client sees it (from the drain's start to
// the new init on its connection). One router, in one process.
//
//	go test -run '^$' -bench 'DrainMoves|DeathMoves' -benchtime 3x ./router/
func BenchmarkDrainMoves(b *testing.B) {
	benchMoves(b, "drain", func(f *demo.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		require.NoError(b, f.Shutdown(ctx))
	})
}

// BenchmarkDeathMoves is the same with the follower killed (its listeners
// and connections closed at once, no drain): each stream's move is from the
// kill to the new init on its connection.
func BenchmarkDeathMoves(b *testing.B) {
	benchMoves(b, "kill", (*demo.Server).Kill)
}

func benchMoves(b *testing.B, name string, end func(*demo.Server)) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			var ends, moves []time.Duration
			for range b.N {
				d, m := moveOnce(b, n, end)
				ends, moves = append(ends, d), append(moves, m...)
			}
			slices.Sort(ends)
			slices.Sort(moves)
			at := func(q float64) float64 { return float64(moves[int(q*float64(len(moves)-1))]) / 1e6 }
			b.ReportMetric(float64(ends[len(ends)/2])/1e6, name+"-ms")
			b.ReportMetric(at(0.5), "move-p50-ms")
			b.ReportMetric(at(0.99), "move-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func moveOnce(b *testing.B, n int, end func(*demo.Server)) (time.Duration, []time.Duration) {
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
	end(drained)
	ended := time.Since(start)
	wg.Wait()
	b.StopTimer()
	return ended, moves
}
