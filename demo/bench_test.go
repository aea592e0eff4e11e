package demo_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/headcount-dev/headcount/internal/demotest"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// BenchmarkWriteFanOut: one PATCH on the leader until every subscriber of
// two followers (10 each) has its SSE update.
func BenchmarkWriteFanOut(b *testing.B) {
	nc := testNATS(b)
	leader := demotest.Leader(b, nc, "bench")
	var streams []*e2e.Stream
	for i := range 2 {
		f := demotest.Follower(b, nc, "bench", fmt.Sprintf("follower-%d", i), leader)
		for range 10 {
			st := subscribe(b, f, create(b, f, "c"))
			st.Next(b)
			streams = append(streams, st)
		}
	}
	n := 0
	for b.Loop() {
		n++
		v := strconv.Itoa(n)
		write(b, leader, "c", `[["k",[`+v+`]]]`)
		for _, st := range streams {
			if ev := st.Next(b); !strings.Contains(ev.Data, "["+v+"]") {
				b.Fatalf("got %s, want value %s", ev.Data, v)
			}
		}
	}
	b.ReportMetric(float64(len(streams)), "subscribers")
}

// BenchmarkCreateDelete: create an instance on a follower (its mirror
// already running) and delete it, over HTTP.
func BenchmarkCreateDelete(b *testing.B) {
	nc := testNATS(b)
	leader := demotest.Leader(b, nc, "bench")
	f := demotest.Follower(b, nc, "bench", "follower-1", leader)
	keep := create(b, f, "c") // holds the mirror open
	_ = keep
	for b.Loop() {
		id := create(b, f, "c")
		if code, _ := do(b, http.MethodDelete, "http://"+f.ControlAddr()+"/v1/streams/"+id, ""); code != http.StatusOK {
			b.Fatalf("DELETE: %d", code)
		}
	}
}
