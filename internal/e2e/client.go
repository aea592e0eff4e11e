// Package e2e is what end-to-end tests share: the built headcount binary,
// `headcount up` on free ports, and a small HTTP and SSE client.
package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Do sends one request to addr (host:port + path) and returns
// its status and body; it fails t on a transport error.
func Do(t testing.TB, method, addr, body string) (int, string) {
	t.Helper()
	return DoWith(t, method, addr, body, nil)
}

// DoWith is Do with the request headers h added.
func DoWith(t testing.TB, method, addr, body string, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, addr, err)
	}
	return resp.StatusCode, string(data)
}

// Stream is an open SSE subscription to a resource instance.
type Stream struct {
	resp   *http.Response
	events chan Event
}

// Event is one server-sent event: its kind (init, update), id (Skip's
// watermark) and data.
type Event struct {
	Kind, ID, Data string
}

// Subscribe opens GET /v1/streams/<id> on a streaming API. It returns the
// stream on 200, else nil and the status; the stream is closed when t ends.
func Subscribe(t testing.TB, addr, id string) (*Stream, int) {
	t.Helper()
	return SubscribeWith(t, addr, id, nil)
}

// SubscribeWith is Subscribe with the request headers h added (a
// traceparent, say).
func SubscribeWith(t testing.TB, addr, id string, h http.Header) (*Stream, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/streams/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/streams/%s: %v", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, resp.StatusCode
	}
	s := &Stream{resp: resp, events: make(chan Event, 256)}
	go s.read()
	t.Cleanup(s.Close)
	return s, resp.StatusCode
}

// read parses events until the stream ends, then closes s.events.
func (s *Stream) read() {
	defer close(s.events)
	r := bufio.NewReader(s.resp.Body)
	var e Event
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && e.Kind != "":
			s.events <- e
			e = Event{}
		case strings.HasPrefix(line, "event: "):
			e.Kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			e.ID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			e.Data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// Next waits up to 20 s for the next event; it fails t if the stream ends
// or stays silent.
func (s *Stream) Next(t testing.TB) Event {
	t.Helper()
	return s.NextWithin(t, 20*time.Second)
}

// NextWithin is Next waiting up to d.
func (s *Stream) NextWithin(t testing.TB, d time.Duration) Event {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
		return Event{}
	}
}

// Expect reads the next event and fails t unless it has kind and data.
func (s *Stream) Expect(t testing.TB, kind, data string) Event {
	t.Helper()
	e := s.Next(t)
	if e.Kind != kind || e.Data != data {
		t.Fatalf("got %s %s, want %s %s", e.Kind, e.Data, kind, data)
	}
	return e
}

// Header is the stream's response header.
func (s *Stream) Header() http.Header { return s.resp.Header }

// Ended reports whether the stream ends within 5 s, skipping any event
// still unread.
func (s *Stream) Ended() bool {
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// Close leaves the stream, as a client going away.
func (s *Stream) Close() { _ = s.resp.Body.Close() }

// Open reports whether the stream is still open, skipping any event still
// unread.
func (s *Stream) Open() bool {
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return false
			}
		default:
			return true
		}
	}
}

// Raw sends req to addr exactly as written, bytes and all, and reads the
// answer; the connection closes when t ends. The server may answer and close
// before it read everything, so write errors are ignored.
func Raw(t testing.TB, addr, req string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return resp
}

// H2CClient speaks only HTTP/2 over cleartext with prior knowledge: a
// request through it succeeds only on a port that serves h2c (ops.ServeH2C).
func H2CClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, Proxy: nil}}
}
