package router

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
)

// A held creation counts as demand without a gap while a release lets it try
// again: between the wake-up and its claim (or its return to the queue), a
// demand of 0 would tell the scalers that nothing waits, and a scale-from-zero
// trigger would flap to inactive.
func TestHoldReleaseKeepsDemand(t *testing.T) {
	h := newHoldQueue(10, time.Minute)
	tried := make(chan struct{})
	gate := make(chan bool)
	calls := 0
	try := func() (fleet.Member, bool) {
		calls++
		if calls == 1 {
			close(tried)
			return fleet.Member{}, false
		}
		// Later tries wait for the test, so that it reads the demand while
		// the released waiter has neither claimed nor gone back to waiting.
		return fleet.Member{Report: fleet.Report{Follower: "f-1"}}, <-gate
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.wait(context.Background(), try)
		done <- err
	}()
	<-tried
	require.Equal(t, 1, h.demand())

	h.release() // a follower seems ready, but is not placeable yet
	assert.Equal(t, 1, h.demand(), "released, trying again")
	gate <- false
	assert.Equal(t, 1, h.demand(), "back to waiting")

	h.release() // now it is
	assert.Equal(t, 1, h.demand(), "released, trying again")
	gate <- true
	require.NoError(t, <-done)
	assert.Equal(t, 1, h.demand(), "placed, not announced yet")
	h.placed()
	assert.Equal(t, 0, h.demand())
}
