package demo

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/natsembed"
)

const wait = 10 * time.Second // generous: the machine is shared

func testNATS(t testing.TB) *nats.Conn {
	t.Helper()
	return natsembed.Connect(t, natsembed.Test(t))
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
func create(t testing.TB, s *Server, collection string) string {
	t.Helper()
	code, body := do(t, http.MethodPost, "http://"+s.ControlAddr()+"/v1/streams/collection", `{"name":"`+collection+`"}`)
	if code != http.StatusCreated {
		t.Fatalf("create %s: %d %s", collection, code, body)
	}
	return body
}

func write(t testing.TB, leader *Server, collection, body string) {
	t.Helper()
	if code, resp := do(t, http.MethodPatch, "http://"+leader.ControlAddr()+"/v1/inputs/"+collection, body); code != http.StatusOK {
		t.Fatalf("write %s: %d %s", collection, code, resp)
	}
}

type sseEvent struct{ kind, id, data string }

// stream is an open SSE subscription read by a real HTTP client.
type stream struct {
	resp   *http.Response
	events chan sseEvent
}

// subscribe opens the stream of id and fails unless it answers 200.
func subscribe(t testing.TB, s *Server, id string) *stream {
	t.Helper()
	resp := get(t, "http://"+s.StreamingAddr()+"/v1/streams/"+id)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("subscribe %s: %d %s", id, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	st := &stream{resp: resp, events: make(chan sseEvent, 100)}
	go func() {
		defer close(st.events)
		r := newSSEReader(resp.Body, nil)
		for {
			kind, id, data, err := r.next()
			if err != nil {
				return
			}
			st.events <- sseEvent{kind, id, string(data)}
		}
	}()
	t.Cleanup(st.close)
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

func (st *stream) close() { _ = st.resp.Body.Close() }

// next returns the next event, failing after wait or when the stream ends.
func (st *stream) next(t testing.TB) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-st.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(wait):
		t.Fatal("no event")
	}
	return sseEvent{}
}

// expect reads the next event and checks its kind and data.
func (st *stream) expect(t testing.TB, kind, data string) sseEvent {
	t.Helper()
	ev := st.next(t)
	if ev.kind != kind || ev.data != data {
		t.Fatalf("got %s %s, want %s %s", ev.kind, ev.data, kind, data)
	}
	return ev
}

// ended waits for the stream to close.
func (st *stream) ended(t testing.TB) {
	t.Helper()
	select {
	case ev, ok := <-st.events:
		if ok {
			t.Fatalf("unexpected event %+v", ev)
		}
	case <-time.After(wait):
		t.Fatal("stream still open")
	}
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
func metric(t testing.TB, s *Server, name string) float64 {
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
