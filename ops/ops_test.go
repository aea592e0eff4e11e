package ops_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/ops"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	var ready ops.Checks
	var nats error = errors.New("disconnected")
	ready.Add("nats", func() error { return nats })
	mux := http.NewServeMux()
	ops.Mount(mux, ops.NewRegistry(), &ready)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ops.Serve(ctx, &http.Server{Handler: mux}, ln, time.Second) }()
	base := "http://" + ln.Addr().String()

	code, _ := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "nats: disconnected")
	nats = nil
	code, _ = get(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	code, body = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.True(t, strings.Contains(body, "go_goroutines") && strings.Contains(body, "process_"), "Go and process collectors")

	cancel()
	require.NoError(t, <-done, "a graceful shutdown is not an error")
}

func TestServeCutsStreamsThatOutliveTheGrace(t *testing.T) {
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done() // a stream that never ends by itself
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ops.Serve(ctx, &http.Server{Handler: h}, ln, 100*time.Millisecond) }()
	resp, err := http.Get("http://" + ln.Addr().String())
	require.NoError(t, err)
	defer resp.Body.Close()
	<-started
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its grace period")
	}
	_, err = io.ReadAll(resp.Body)
	require.Error(t, err, "the stream was cut, not ended cleanly")
}
