package router_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/ops"
)

// Short limits, so that the stream below outlives each of them three times.
var testLimits = ops.HTTPLimits{
	ReadHeaderTimeout: 2 * time.Second, BodyTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second,
	MaxHeaderBytes: 16 << 10,
}

// hardened serves h as production does (ops.NewServer through ops.Serve) on
// a loopback port and returns its address.
func hardened(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ops.Serve(ctx, ops.NewServer(h, testLimits, nil), ln, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

const someUUID = "0d1c3f4e-1111-4222-8333-944455556666"

// Every row is garbage: a 4xx with a JSON body, and nothing reaches the
// follower nor the leader behind the router.
func TestGarbageNeverReachesAFollower(t *testing.T) {
	url, lead, follower := fleetOf(t)
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	public, private := hardened(t, r.Streaming()), hardened(t, r.Control())
	stream := "/v1/streams/" + follower.id + "/" + someUUID
	hugeHeader := strings.Repeat("a", 64<<10)
	giantHeader := strings.Repeat("a", 2<<20)
	rows := []struct {
		name, addr, req string
		code            int
	}{
		{"dot-dot path", public, "GET /v1/streams/../../etc HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"dot-dot to a follower", public, "GET /v1/streams/x/../" + follower.id + "/" + someUUID + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"double slash", public, "GET /v1/streams//" + follower.id + "/" + someUUID + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"trailing slash", public, "GET " + stream + "/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"encoded slash", public, "GET /v1/streams/" + follower.id + "%2F" + someUUID + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"absolute target", public, "GET http://" + follower.streaming.Listener.Addr().String() + stream + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"leader from the public listener", public, "GET /v1/streams/leader/" + someUUID + " HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"creation on the public listener", public, "POST /v1/streams/collection HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405},
		{"GET with a 100 MiB body", public, "GET " + stream + " HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n" + strings.Repeat("x", 64<<10), 400},
		{"GET with a chunked body", public, "GET " + stream + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400},
		{"64 KiB header", public, "GET " + stream + " HTTP/1.1\r\nHost: x\r\nX-Big: " + hugeHeader + "\r\n\r\n", 431},
		{"2 MiB header", public, "GET " + stream + " HTTP/1.1\r\nHost: x\r\nX-Big: " + giantHeader + "\r\n\r\n", 431},
		{"malformed request", public, "GARBAGE\r\n\r\n", 400},
		{"CONNECT", private, "CONNECT " + follower.control.Listener.Addr().String() + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"deep snapshot", private, "POST /v1/snapshot/a/b/c/d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 404},
		{"write escaping its route", private, "PATCH /v1/inputs/../streams/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]", 400},
		{"DELETE on the leader", private, "DELETE /v1/streams/leader/" + someUUID + " HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"DELETE with a body", private, "DELETE " + stream + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"subtree root", private, "GET /v1/snapshot HTTP/1.1\r\nHost: x\r\n\r\n", 404},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			resp := e2e.Raw(t, row.addr, row.req)
			defer resp.Body.Close()
			assert.Equal(t, row.code, resp.StatusCode)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var body struct{ Error, Reason string }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.NotEmpty(t, body.Reason)
			assert.Empty(t, resp.Header.Get("Location"))
		})
	}
	assert.Zero(t, follower.requests.Load(), "nothing reached the follower")
	assert.Zero(t, lead.requests.Load(), "nothing reached the leader")
}

// closedWithin waits for the server to close c and returns how long after
// start it did, failing if c is still open limit after start.
func closedWithin(t *testing.T, c net.Conn, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(start.Add(limit)))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "still open after %v", limit)
	return time.Since(start)
}

// Slow headers, a slow body and an idle keep-alive are closed on time, while
// an SSE stream through the same listeners outlives every timeout three times.
func TestSlowAndIdleClientsClosedWhileAStreamSurvives(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	follower := startMember(t, nc, "follower-a", ticking)
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	public, private := hardened(t, r.Streaming()), hardened(t, r.Control())

	id := r.create(t)
	resp := e2e.Raw(t, public, "GET /v1/streams/"+id+" HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := make(chan string, 1024)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if e, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- e
			}
		}
	}()
	streamStart := time.Now()
	streamFor := 3 * testLimits.IdleTimeout

	dial := func(addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// Closed by the timeouts, not by the end of the test: the slow body
	// would go on for 30 s, the others forever. The slack is a loaded
	// machine's.
	slack := 5 * time.Second
	// Headers that never end.
	slowHeaders, since := dial(public), map[string]time.Time{"slow headers": time.Now()}
	_, err := io.WriteString(slowHeaders, "GET /v1/healthcheck HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	// A body at a few bytes a second.
	slowBody := dial(private)
	since["slow body"] = time.Now()
	_, err = io.WriteString(slowBody, "POST /v1/streams/collection HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	require.NoError(t, err)
	go func() {
		for range 100 {
			time.Sleep(300 * time.Millisecond)
			if _, err := io.WriteString(slowBody, " "); err != nil {
				return
			}
		}
	}()
	// A keep-alive connection left idle after one answer.
	idle := dial(public)
	_, err = io.WriteString(idle, "GET /v1/healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(idle)
	ok, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, ok.Body)
	require.Equal(t, http.StatusOK, ok.StatusCode)
	since["idle"] = time.Now()

	for name, c := range map[string]net.Conn{"slow headers": slowHeaders, "slow body": slowBody, "idle": idle} {
		took := closedWithin(t, c, since[name], testLimits.IdleTimeout+slack)
		assert.GreaterOrEqual(t, took, testLimits.IdleTimeout/2, "%s closed too early", name)
		t.Logf("%s closed after %v", name, took)
	}
	// The stream keeps its events coming past three times every timeout: an
	// update read after that proves it (events come every 250 ms; a loaded
	// machine may stall them a while).
	for survived := false; !survived; {
		select {
		case e, open := <-events:
			require.True(t, open, "the stream was cut after %v", time.Since(streamStart))
			survived = e == "update" && time.Since(streamStart) > streamFor
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for 10 s, %v into the stream", time.Since(streamStart))
		}
	}
	follower.mu.Lock()
	defer follower.mu.Unlock()
	assert.Len(t, follower.instances, 1, "only the stream's creation reached the follower, not the slow one")
}
