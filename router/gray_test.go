package router_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
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

// Followers that stop being ready together (a write burst keeps every Skip
// follower busy with its mirror) are busy, not hung: none has its streams
// moved, even the one that comes back last, since no peer stayed ready
// while it was not.
func TestMoveFollowersNotReadyTogetherKeepTheirStreams(t *testing.T) {
	const grace = 300 * time.Millisecond
	_, followers, r1, r2 := demoFleet(t, 2, func(c *router.Config) { c.Moves.NoRebalance = true; c.Moves.Grace = grace })
	routers := []*testRouter{r1, r2}
	clients := openClients(t, followers, routers, 20)
	waitMembers := func(state fleet.State) {
		require.Eventually(t, func() bool {
			for _, r := range routers {
				for _, f := range followers {
					if m, ok := r.view.Member("svc", f.Agent().Report().Follower); !ok || m.State != state {
						return false
					}
				}
			}
			return true
		}, 10*time.Second, 10*time.Millisecond, "every router sees both followers %s", state)
	}
	gray := func() float64 { return moved(t, r1, "gray") + moved(t, r2, "gray") }

	for _, f := range followers {
		f.Agent().Unready()
	}
	waitMembers(fleet.StateStarting)
	time.Sleep(4 * grace) // both not ready well past the grace
	followers[0].Agent().Ready()
	// The last one back stays not ready past the grace while its peer is
	// ready again: still the burst's, not a hang.
	time.Sleep(4 * grace)
	assert.Zero(t, gray(), "no stream moved while the followers were busy together")
	followers[1].Agent().Ready()
	waitMembers(fleet.StateReady)

	write(t, r1, `[["after",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after"`)
		assert.Equal(t, 1, c.Inits, "stream %s stayed: %v", c.ID, c.Seen)
	}
	assert.Zero(t, gray())
}
