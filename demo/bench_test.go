package demo

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// BenchmarkWriteFanOut: one PATCH on the leader until every subscriber of
// two followers (10 each) has its SSE update.
func BenchmarkWriteFanOut(b *testing.B) {
	nc := testNATS(b)
	leader := TestLeader(b, nc, "bench")
	var streams []*e2e.Stream
	for i := range 2 {
		f := TestFollower(b, nc, "bench", fmt.Sprintf("follower-%d", i), leader)
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
	leader := TestLeader(b, nc, "bench")
	f := TestFollower(b, nc, "bench", "follower-1", leader)
	keep := create(b, f, "c") // holds the mirror open
	_ = keep
	for b.Loop() {
		id := create(b, f, "c")
		if code, _ := do(b, http.MethodDelete, "http://"+f.ControlAddr()+"/v1/streams/"+id, ""); code != http.StatusOK {
			b.Fatalf("DELETE: %d", code)
		}
	}
}

// BenchmarkParseEntries: a 100-key PATCH body.
func BenchmarkParseEntries(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[")
	for i := range 100 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `["post-%d",[{"title":"t%d","votes":%d,"by":"u"}]]`, i, i, i)
	}
	sb.WriteString("]")
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := parseEntries(body); err != nil {
			b.Fatal(err)
		}
	}
}
