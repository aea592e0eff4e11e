package router_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/router"
)

// A follower that stops being ready without leaving (hung: its sidecar's
// health check fails) has its streams moved once the grace has passed, one
// fresh init each; the streams of the ready follower stay.
func TestMoveGrayFollowerNotReadyPastTheGraceLosesItsStreams(t *testing.T) {
	const grace = 500 * time.Millisecond
	_, followers, r1, r2 := demoFleet(t, 2, func(c *router.Config) { c.Moves.NoRebalance = true; c.Moves.Grace = grace })
	routers := []*testRouter{r1, r2}
	clients := openClients(t, followers, routers, 20)
	hung := followers[0]
	onHung := 0
	for _, c := range clients {
		if c.owner == hung {
			onHung++
		}
	}
	require.NotZero(t, onHung)

	hung.Agent().Unready()
	unready := time.Now()
	gray := func() float64 { return moved(t, r1, "gray") + moved(t, r2, "gray") }
	require.Eventually(t, func() bool { return gray() == float64(onHung) }, 20*time.Second, 10*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(unready), grace, "not before the grace")
	t.Logf("%d streams moved %v after their follower became not ready (grace %v)", onHung, time.Since(unready).Round(time.Millisecond), grace)

	write(t, r1, `[["after",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after"`)
		want := 1
		if c.owner == hung {
			want = 2
		}
		assert.Equal(t, want, c.Inits, "stream %s: %v", c.ID, c.Seen)
		assert.True(t, c.Stream.Open())
	}
	assert.Equal(t, float64(onHung), gray(), "moved once each")
}
