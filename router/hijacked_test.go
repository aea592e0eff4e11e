package router_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/natstest"
)

// A stream's HTTP/1.1 client connection leaves net/http once its headers
// are known: the answer is chunked with Connection: close, through the
// hardened listener as through a plain one; an HTTP/1.0 client stays on
// net/http. Either way a client that leaves ends its upstream stream within
// a second.
func TestStreamClientThatLeavesEndsItsUpstream(t *testing.T) {
	url := natstest.Server(t)
	follower := startMember(t, natstest.Connect(t, url), "follower-a")
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 1)
	plain := strings.TrimPrefix(r.streaming.URL, "http://")
	for name, tc := range map[string]struct {
		addr, proto string
		chunked     []string
	}{
		"plain":    {plain, "HTTP/1.1", []string{"chunked"}},
		"hardened": {hardened(t, r.Streaming()), "HTTP/1.1", []string{"chunked"}},
		"http/1.0": {plain, "HTTP/1.0", nil},
	} {
		t.Run(name, func(t *testing.T) {
			id := r.create(t)
			c, err := net.Dial("tcp", tc.addr)
			require.NoError(t, err)
			defer c.Close()
			_, err = io.WriteString(c, "GET /v1/streams/"+id+" "+tc.proto+"\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
			require.NoError(t, err)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, tc.chunked, resp.TransferEncoding)
			assert.True(t, resp.Close, "Connection: close")
			assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
			assert.NotEmpty(t, resp.Header.Get("Date"))
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "event: init\n", line)
			require.Equal(t, int64(1), follower.open.Load())

			require.NoError(t, c.Close())
			left := time.Now()
			require.Eventually(t, func() bool { return follower.open.Load() == 0 }, 10*time.Second, 5*time.Millisecond,
				"the follower's stream outlived its client")
			t.Logf("upstream ended %v after the client left", time.Since(left))
			require.Eventually(t, func() bool {
				_, body, _ := do(t, http.MethodGet, r.control.URL+"/metrics", "")
				return strings.Contains(body, `headcount_router_open_streams{service="svc"} 0`)
			}, 10*time.Second, 10*time.Millisecond, "the router still counts the stream")
		})
	}
}

// A deleted instance ends its stream as the follower does: with the last
// chunk, which a client tells from a cut.
func TestDeletedInstanceEndsItsStreamCleanly(t *testing.T) {
	_, _, r1, _ := demoFleet(t, 1)
	id := r1.create(t)
	s := openStream(t, r1.streaming.URL+"/v1/streams/"+id)
	event, _ := s.next(t)
	require.Equal(t, "init", event)
	code, body, _ := do(t, http.MethodDelete, r1.control.URL+"/v1/streams/"+id, "")
	require.Equal(t, http.StatusOK, code, body)
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, s.r); ended <- err }()
	select {
	case err := <-ended:
		require.NoError(t, err, "a clean end, not a cut")
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a deleted instance did not end")
	}
}
