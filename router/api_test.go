package router_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/natsapi"
	"github.com/headcount-dev/headcount/router"
)

// TestRouterViewOverNATS asks each router's micro service for its view of
// the service before and after a stream moved off a drained follower: the
// members and their loads, the streams it proxies, and the moved id, which
// the router that did not move it knows too.
func TestRouterViewOverNATS(t *testing.T) {
	nc, followers, r1, r2 := demoFleet(t, 2)
	for _, r := range []*testRouter{r1, r2} {
		api, err := r.ServeAPI(nc)
		require.NoError(t, err)
		t.Cleanup(func() { _ = api.Stop() })
	}
	view := func(id string) router.View {
		t.Helper()
		msg, err := nc.Request(natsapi.OwnSubject(fleet.Subjects{Prefix: fleet.DefaultPrefix}, svc, natsapi.Router, id, "view"), nil, 5*time.Second)
		require.NoError(t, err)
		var v router.View
		require.NoError(t, json.Unmarshal(msg.Data, &v), string(msg.Data))
		return v
	}

	id := r1.create(t)
	owner := ownerOf(followers, id)
	kept := followers[0].Agent().Report().Follower
	if owner == followers[0] {
		kept = followers[1].Agent().Report().Follower
	}
	c := &e2e.Client{ID: id}
	var code int
	c.Stream, code = e2e.Subscribe(t, strings.TrimPrefix(r1.streaming.URL, "http://"), id)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "init", c.Next(t).Kind)
	require.Eventually(t, func() bool { return view("r-1").Instances == 1 }, 10*time.Second, 10*time.Millisecond,
		"the instance reported: %+v", view("r-1"))
	v := view("r-1")
	require.Equal(t, "r-1", v.Router)
	require.Equal(t, 1, v.Streams)
	require.Len(t, v.Members, 3, "the leader and both followers")
	for _, m := range v.Members {
		if m.Follower == owner.Agent().Report().Follower {
			require.Equal(t, 1, m.Streams)
			require.Positive(t, m.Load)
		}
	}
	require.Empty(t, v.Moved)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- owner.Shutdown(ctx) }()
	require.Equal(t, "init", c.Next(t).Kind, "moved: a fresh init")
	require.NoError(t, <-done)
	for _, r := range []string{"r-1", "r-2"} {
		require.Eventually(t, func() bool {
			v = view(r)
			return len(v.Moved) == 1 && len(v.Members) == 2
		}, 10*time.Second, 10*time.Millisecond, "%s: the drained follower left, the id moved: %+v", r, v)
		require.Equal(t, id, v.Moved[0].From)
		require.True(t, strings.HasPrefix(v.Moved[0].To, kept+"/"), "moved onto the other follower: %+v", v.Moved)
		require.Equal(t, 1, v.MovedN)
	}

	// The micro service is found as `nats micro ls` finds it.
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.PublishRequest("$SRV.PING."+natsapi.Name(natsapi.Router), inbox, nil))
	ids := map[string]bool{}
	for len(ids) < 2 {
		msg, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err, "pings answered by %v", ids)
		var ping struct{ Metadata map[string]string }
		require.NoError(t, json.Unmarshal(msg.Data, &ping))
		require.Equal(t, svc, ping.Metadata["service"])
		ids[ping.Metadata["id"]] = true
	}
	require.Equal(t, map[string]bool{"r-1": true, "r-2": true}, ids)
}
