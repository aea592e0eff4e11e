package ops_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/ops"
)

// A request with a body gets its body read deadline; once the body is read,
// the deadline is lifted, so the response may stream far longer.
func TestBodyDeadlineDoesNotCutAStreamingResponse(t *testing.T) {
	const bodyTimeout = 300 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 10 { // 10 × 150 ms: five times the body timeout
			if _, err := fmt.Fprintf(w, "event: update\nid: %d\ndata: []\n\n", i); err != nil {
				return
			}
			_ = http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(150 * time.Millisecond):
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ops.Serve(ctx, ops.NewServer(h, ops.HTTPLimits{BodyTimeout: bodyTimeout}, nil), ln, time.Second)
	}()
	t.Cleanup(func() { cancel(); <-done })

	resp, err := http.Post("http://"+ln.Addr().String()+"/stream", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	defer resp.Body.Close()
	events := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: ") {
			events++
		}
	}
	assert.Equal(t, 10, events, "the stream ran to its end: %v", sc.Err())
}

// A redirect that ServeMux would answer is a JSON 404 instead.
func TestNoRedirects(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/streams/{id...}", func(http.ResponseWriter, *http.Request) {})
	rec := &recorder{header: http.Header{}}
	req, err := http.NewRequest(http.MethodGet, "/v1/streams", nil)
	require.NoError(t, err)
	req.RequestURI = "/v1/streams"
	ops.Guard(mux, ops.HTTPLimits{}).ServeHTTP(rec, req)
	assert.Equal(t, http.StatusNotFound, rec.code)
	assert.Empty(t, rec.header.Get("Location"))
	assert.Contains(t, rec.body.String(), `"reason":"not_found"`)
}

type recorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
