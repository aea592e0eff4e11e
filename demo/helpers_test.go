package demo_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/demotest"
	"github.com/headcount-dev/headcount/internal/natstest"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/internal/e2e"
)

const wait = 10 * time.Second // generous: the machine is shared

// readyFollower starts a leader and follower-1 of service hn and waits for
// the follower's ready report.
func readyFollower(t testing.TB) (*demo.Server, *e2e.Reports) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	reps := e2e.WatchReports(t, nc, "hn", "follower-1")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	reps.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })
	return f, reps
}

func testNATS(t testing.TB) *nats.Conn {
	t.Helper()
	return natstest.Connect(t, natstest.Server(t))
}

// do sends one request and returns the status and body.
func do(t testing.TB, method, url, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// create makes an instance of collection on s and returns its id as s answered it.
func create(t testing.TB, s *demo.Server, collection string) string {
	t.Helper()
	code, body := do(t, http.MethodPost, "http://"+s.ControlAddr()+"/v1/streams/collection", `{"name":"`+collection+`"}`)
	if code != http.StatusCreated {
		t.Fatalf("create %s: %d %s", collection, code, body)
	}
	return body
}

func write(t testing.TB, leader *demo.Server, collection, body string) {
	t.Helper()
	if code, resp := do(t, http.MethodPatch, "http://"+leader.ControlAddr()+"/v1/inputs/"+collection, body); code != http.StatusOK {
		t.Fatalf("write %s: %d %s", collection, code, resp)
	}
}

// subscribe opens the stream of id and fails unless it answers 200 as SSE.
func subscribe(t testing.TB, s *demo.Server, id string) *e2e.Stream {
	t.Helper()
	st, code := e2e.Subscribe(t, s.StreamingAddr(), id)
	if code != http.StatusOK {
		t.Fatalf("subscribe %s: %d", id, code)
	}
	if ct := st.Header().Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return st
}

func get(t testing.TB, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric reads one unlabelled metric from s's /metrics (-1 when absent).
func metric(t testing.TB, s *demo.Server, name string) float64 {
	t.Helper()
	_, body := do(t, http.MethodGet, "http://"+s.ControlAddr()+"/metrics", "")
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}
