package main

import (
	"bufio"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHAProxyRoutesLikeSkip runs the generated config on a real stack:
// creations alternate between followers, streams reach the owner named by
// the id's prefix, writes reach the leader (a follower would answer 404).
func TestHAProxyRoutesLikeSkip(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed (apt-get install haproxy)")
	}
	s, err := startStack(2, 1, time.Second, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(s.stop)
	h, err := startHAProxy(bin, t.TempDir(), s, false)
	require.NoError(t, err)
	t.Cleanup(h.stop)

	client := &http.Client{Timeout: 10 * time.Second}
	owners := map[string]int{}
	var ids []string
	for range 4 {
		resp, err := client.Post(h.controlURL+"/v1/streams/collection", "application/json", strings.NewReader(`{"name":"c"}`))
		require.NoError(t, err)
		id, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode, string(id))
		owner, _, ok := strings.Cut(string(id), "/")
		require.True(t, ok, "prefixed id %q", id)
		owners[owner]++
		ids = append(ids, string(id))
	}
	assert.Equal(t, map[string]int{"follower-1": 2, "follower-2": 2}, owners, "round robin")

	// Sorted by owner, so that a round robin of the streams could not
	// reach the owners by chance.
	slices.Sort(ids)
	for _, id := range ids {
		req, _ := http.NewRequest(http.MethodGet, h.streamURL+"/v1/streams/"+id, nil)
		req.Header.Set("Accept", "text/event-stream")
		stream, err := client.Do(req)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, stream.StatusCode, "stream %s", id)
		line, err := bufio.NewReader(stream.Body).ReadString('\n')
		_ = stream.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, "event: init\n", line)
	}

	req, _ := http.NewRequest(http.MethodPatch, h.controlURL+"/v1/inputs/c", strings.NewReader(`[["k",[1]]]`))
	resp, err := client.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "writes go to the leader")
}

func TestBalanceIsMaxOverMean(t *testing.T) {
	var b balance
	assert.True(t, math.IsNaN(b.mean()), "no samples")
	b.sample([]int64{0, 0, 0}) // nothing live: not a sample
	b.sample([]int64{3, 1, 2})
	b.sample([]int64{2, 2, 2})
	assert.InDelta(t, (1.5+1)/2, b.mean(), 1e-9)
}

func TestMedianPerFigure(t *testing.T) {
	m := median([]figures{
		{"a/router": 3, "b/router": math.NaN()},
		{"a/router": 1, "b/router": 4},
		{"a/router": 2, "b/router": 6},
	})
	assert.Equal(t, 2.0, m["a/router"])
	assert.Equal(t, 5.0, m["b/router"], "NaN runs are left out")
	assert.True(t, math.IsNaN(m.get("c/router")))
}
