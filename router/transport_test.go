package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/ops"
)

// A multiplexed connection lost under a request: a GET goes out once more
// on a new connection and is answered; a POST is not sent again, since the
// follower may have acted on it.
func TestLostMultiplexedConnectionResendsOnlyAReplayableRequest(t *testing.T) {
	type connKey struct{}
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%2 == 1 {
			// Every other request loses its connection before any answer.
			_ = r.Context().Value(connKey{}).(net.Conn).Close()
			return
		}
		_, _ = io.WriteString(w, "answered")
	}))
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	ops.ServeH2C(srv.Config)
	srv.Start()
	t.Cleanup(srv.Close)
	met, err := newTransportMetrics(prometheus.NewRegistry(), "svc")
	require.NoError(t, err)
	u := newUpstreams(5*time.Second, 30*time.Second, met)
	t.Cleanup(u.closeIdle)
	mux := u.transport(true)

	get, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/streams/x", nil)
	require.NoError(t, err)
	resp, err := mux.RoundTrip(get)
	require.NoError(t, err, "the GET is sent again on a new connection")
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, "HTTP/2.0 answered", resp.Proto+" "+string(body))
	assert.EqualValues(t, 2, calls.Load())

	post, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/streams/collection", strings.NewReader("{}"))
	require.NoError(t, err)
	_, err = mux.RoundTrip(post)
	require.Error(t, err, "the POST's lost connection is its caller's to judge")
	assert.EqualValues(t, 3, calls.Load(), "the POST was sent once")
}
