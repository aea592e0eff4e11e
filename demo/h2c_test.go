package demo_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// A router multiplexes its traffic to a demo follower over HTTP/2 cleartext
// (advertised in the report); HTTP/1.1 clients are served as before.
func TestFollowerServesH2C(t *testing.T) {
	f, reps := readyFollower(t)
	if last, _ := reps.Last(); !last.H2C {
		t.Fatalf("the report does not advertise h2c: %+v", last)
	}
	h2 := e2e.H2CClient()
	defer h2.CloseIdleConnections()
	resp, err := h2.Post("http://"+f.ControlAddr()+"/v1/streams/collection", "application/json", strings.NewReader(`{"name":"posts"}`))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.ProtoMajor != 2 {
		t.Fatalf("create over h2c: %s %s %s", resp.Proto, resp.Status, id)
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+f.StreamingAddr()+"/v1/streams/"+string(id), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err = h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 || err != nil || line != "event: init\n" {
		t.Fatalf("subscribe over h2c: %s %s %q %v", resp.Proto, resp.Status, line, err)
	}
	if ev := subscribe(t, f, create(t, f, "posts")).Next(t); ev.Kind != "init" {
		t.Fatalf("HTTP/1.1 subscription: first event %q", ev.Kind)
	}
}
