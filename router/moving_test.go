package router_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/demotest"
	"github.com/headcount-dev/headcount/router"
)

// A move announces its instance leaving once, when it starts, and nothing
// while there is nowhere to go (the trigger retries every 250 ms): the counts
// stay as they are until a move happens.
func TestMoveAnnouncesLeavingOnlyWithSomewhereToGo(t *testing.T) {
	nc, followers, r1, r2 := demoFleet(t, 1, func(c *router.Config) { c.Moves.NoRebalance = true })
	var started, givenUp atomic.Int32
	sub, err := nc.Subscribe(fleet.Subjects{Prefix: fleet.DefaultPrefix}.Moving(svc, "*"), func(msg *nats.Msg) {
		var mv fleet.Moving
		require.NoError(t, json.Unmarshal(msg.Data, &mv))
		if mv.N > 0 {
			started.Add(int32(mv.N))
		} else {
			givenUp.Add(int32(-mv.N))
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	routers := []*testRouter{r1, r2}
	clients := openClients(t, followers, routers, 2)

	// The only follower drains: its streams have nowhere to go.
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		drained <- followers[0].Shutdown(ctx)
	}()
	noTarget := func() (n float64) {
		for _, r := range routers {
			n += metric(t, r, `headcount_router_move_failures_total{reason="no_target",service="svc",trigger="drain"}`)
		}
		return n
	}
	require.Eventually(t, func() bool { return noTarget() >= 4 }, 10*time.Second, 20*time.Millisecond, "moves tried and failed")
	require.Zero(t, started.Load()+givenUp.Load(), "no move announced without a target")
	require.Equal(t, int64(2), r1.View().Totals(svc).Instances)

	// A follower arrives: each stream moves once, announced once.
	lead, ok := r1.View().Leader(svc)
	require.True(t, ok)
	demotest.Start(t, demo.StartFollower, demo.Config{Service: svc, ID: "follower-b", NATS: nc, InstanceTTL: 10 * time.Minute,
		LeaderControl: lead.Control, LeaderStreaming: lead.Streaming})
	for _, c := range clients {
		require.Equal(t, "init", c.Next(t).Kind, "stream %s continues with a fresh init", c.ID)
	}
	select {
	case err := <-drained:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the drain did not end once its streams moved")
	}
	require.Eventually(t, func() bool {
		b, ok := r2.View().Member(svc, "follower-b")
		return ok && b.Instances == 2 && r2.View().Totals(svc).Instances == 2
	}, 10*time.Second, 20*time.Millisecond, "the moved instances count once, on follower-b")
	require.Equal(t, int32(2), started.Load(), "one announcement per move")
	require.Zero(t, givenUp.Load())
}
