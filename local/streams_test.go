package local_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// openDemoStreams creates n instances of the demo's collection through the
// router's control address and opens each on its streaming address.
func openDemoStreams(t *testing.T, control, streaming string, n int) []*e2e.Stream {
	t.Helper()
	var streams []*e2e.Stream
	for range n {
		code, id := e2e.Do(t, http.MethodPost, control+"/v1/streams/collection", `{"name":"posts"}`)
		require.Equal(t, http.StatusCreated, code, id)
		s, code := e2e.Subscribe(t, streaming, id)
		require.Equal(t, http.StatusOK, code)
		streams = append(streams, s)
	}
	return streams
}
