package main

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/freeport"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// `headcount router --live-page` serves the page and its stream on the
// control listener; without the flag, /live is the router's 404.
func TestRouterServesTheLivePageWhenAsked(t *testing.T) {
	url := natstest.Server(t)
	for _, asked := range []bool{true, false} {
		ports, err := freeport.Ports("127.0.0.1", 2)
		require.NoError(t, err)
		control := "http://127.0.0.1:" + ports[1]
		args := []string{"router", "--service", "demo", "--nats-url", url, "--shutdown-delay", "0",
			"--streaming-addr", "127.0.0.1:" + ports[0], "--control-addr", "127.0.0.1:" + ports[1]}
		if asked {
			args = append(args, "--live-page")
		}
		ctx, cancel := context.WithCancel(context.Background())
		root := newRoot()
		root.SetArgs(args)
		done := make(chan error, 1)
		go func() { done <- root.ExecuteContext(ctx) }()
		var code int
		require.Eventually(t, func() bool {
			resp, err := http.Get(control + "/live")
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			code = resp.StatusCode
			return true
		}, 10*time.Second, 20*time.Millisecond)
		if !asked {
			require.Equal(t, http.StatusNotFound, code, "no page unless asked")
		} else {
			require.Equal(t, http.StatusOK, code)
			resp, err := http.Get(control + "/live/events")
			require.NoError(t, err)
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "event: status", strings.TrimSpace(line))
			_ = resp.Body.Close()
		}
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(40 * time.Second):
			t.Fatal("the router did not stop")
		}
	}
}
