package router_test

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/natstest"
)

// What an open stream costs the router in Go heap and goroutine stacks:
// every iteration opens memoryStreams streams straight to a follower, then
// as many through the router, in this one process, and reads the heap and
// stacks in use after a collection (runtime/metrics) before and after each
// batch; the router's share is the difference, since the clients and the
// follower cost the same in both batches. Reported as medians.
//
//	go test -run '^$' -bench StreamMemory -benchtime 3x ./router/
func BenchmarkStreamMemory(b *testing.B) {
	const memoryStreams = 1000
	url := natstest.Server(b)
	follower := startMember(b, natstest.Connect(b, url), "follower-a")
	r := startRouter(b, url, "r-1")
	r.waitReady(b, 1)
	followerAddr := strings.TrimPrefix(follower.streaming.URL, "http://")
	routerAddr := strings.TrimPrefix(r.streaming.URL, "http://")
	var direct, heap, stacks, goroutines []float64
	for b.Loop() {
		ids := make([]string, 2*memoryStreams)
		for i := range ids {
			ids[i] = r.create(b)
		}
		var conns []net.Conn
		m0 := goMemory()
		for _, id := range ids[:memoryStreams] {
			_, key, _ := strings.Cut(id, "/")
			conns = append(conns, openRaw(b, followerAddr, "/v1/streams/"+key))
		}
		m1 := goMemory()
		for _, id := range ids[memoryStreams:] {
			conns = append(conns, openRaw(b, routerAddr, "/v1/streams/"+id))
		}
		m2 := goMemory()
		// Per stream, routed minus direct.
		router := func(i int) float64 { return ((m2[i] - m1[i]) - (m1[i] - m0[i])) / memoryStreams }
		direct = append(direct, (m1[0]+m1[1]-m0[0]-m0[1])/memoryStreams)
		heap, stacks, goroutines = append(heap, router(0)), append(stacks, router(1)), append(goroutines, router(2))
		for _, c := range conns {
			_ = c.Close()
		}
		require.Eventually(b, func() bool { return follower.open.Load() == 0 }, 30*time.Second, 10*time.Millisecond)
	}
	b.ReportMetric(median(direct), "direct-B/stream")
	b.ReportMetric(median(heap)+median(stacks), "router-B/stream")
	b.ReportMetric(median(heap), "router-heap-B/stream")
	b.ReportMetric(median(stacks), "router-stack-B/stream")
	b.ReportMetric(median(goroutines), "router-goroutines/stream")
}

// goMemory is the heap objects and goroutine stacks in use after a
// collection (two: stacks shrink during one), and the goroutines.
func goMemory() [3]float64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return [3]float64{float64(s[0].Value.Uint64()), float64(s[1].Value.Uint64()), float64(runtime.NumGoroutine())}
}

// openRaw opens a stream on a bare connection, read through its first
// event; the client keeps nothing else.
func openRaw(b *testing.B, addr, path string) net.Conn {
	c, err := net.Dial("tcp", addr)
	require.NoError(b, err)
	_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n", path)
	require.NoError(b, err)
	br := bufio.NewReaderSize(c, 512)
	status, err := br.ReadString('\n')
	require.NoError(b, err)
	require.True(b, strings.HasPrefix(status, "HTTP/1.1 200 "), status)
	// The header block's blank line, then the init's.
	for blanks := 0; blanks < 2; {
		line, err := br.ReadString('\n')
		require.NoError(b, err)
		if line == "\r\n" || line == "\n" {
			blanks++
		}
	}
	return c
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
