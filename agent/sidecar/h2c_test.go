package sidecar_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
)

// The router's side of the sidecar speaks HTTP/2 over cleartext (and says
// so in its report) beside HTTP/1.1; the follower behind it, an HTTP/1.1
// server that refuses HTTP/2, still gets every request.
func TestServesH2CToRoutersAndHTTP1ToTheFollower(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	rep := f.reports.WaitFor(t, "ready", func(r fleet.Report) bool { return r.State == fleet.StateReady })
	require.True(t, rep.H2C, "the report advertises h2c")

	h2 := e2e.H2CClient()
	defer h2.CloseIdleConnections()
	resp, err := h2.Post("http://"+f.control+"/v1/streams/posts", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	id, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(id))
	require.Equal(t, 2, resp.ProtoMajor)
	require.True(t, f.up.saw("POST /v1/streams/posts"))

	req, err := http.NewRequest(http.MethodGet, "http://"+f.stream+"/v1/streams/"+string(id), nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	resp, err = h2.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 2, resp.ProtoMajor)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "event: init\n", line)
	f.reports.WaitInstances(t, 1)

	// Closing the body resets the stream: the follower sees its subscriber leave.
	_ = resp.Body.Close()
	require.Eventually(t, func() bool { return f.up.subscribers() == 0 }, 5*time.Second, 10*time.Millisecond)

	// HTTP/1.1 clients are served as before.
	code, _ := e2e.Do(t, http.MethodPost, f.control+"/v1/streams/posts", "{}")
	require.Equal(t, http.StatusCreated, code)
}
