package livepage

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/status"
)

func TestThePageNeedsNothingFromOutside(t *testing.T) {
	srv := httptest.NewServer(New(Config{Observe: func() status.Status { return status.Status{} }}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.NotRegexp(t, regexp.MustCompile(`(src|href)="(https?:)?//`), string(page), "no external asset")
}

// A page opened late first gets the status, the chart's history and the
// recent notes, then every change as it happens.
func TestEventsStartWithTheStateThenFollowChanges(t *testing.T) {
	var mu sync.Mutex
	st := status.Status{Service: "demo", Target: 1, Members: []status.Row{{ID: "follower-1", Role: "follower", State: "ready"}}}
	p := New(Config{Observe: func() status.Status { mu.Lock(); defer mu.Unlock(); return st }})
	now := time.Now()
	p.sample(now)
	mu.Lock()
	st.Target, st.Demand = 2, 3
	st.Members = append(st.Members, status.Row{ID: "follower-2", Role: "follower", State: "starting"})
	mu.Unlock()
	p.sample(now.Add(time.Second))

	srv := httptest.NewServer(p)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	r := bufio.NewReader(resp.Body)
	next := func() (string, string) {
		var event, data string
		for {
			line, err := r.ReadString('\n')
			require.NoError(t, err)
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				return event, data
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	}
	ev, data := next()
	require.Equal(t, "status", ev)
	require.Contains(t, data, `"target":2`)
	ev, data = next()
	require.Equal(t, "history", ev)
	require.Equal(t, 2, strings.Count(data, `"at"`), "two samples")
	ev, data = next()
	require.Equal(t, "notes", ev)
	for _, want := range []string{"replica target 1 → 2", "holding 3 creations", "follower follower-2 joined (starting)"} {
		require.Contains(t, data, want)
	}

	p.Note("move", "router-1 moved stream a to b")
	ev, data = next()
	require.Equal(t, "note", ev)
	require.Contains(t, data, "router-1 moved stream a to b")

	// Once Run ends, the stream ends: a graceful shutdown is not held up.
	stop := make(chan struct{})
	close(stop)
	p.Run(stop)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			break
		}
	}
}
