package agent_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsembed"
)

// Abandon goes silent like a crash: no "gone", no heartbeat, no roll-call
// answer; a later Close publishes nothing either.
func TestAbandonGoesSilent(t *testing.T) {
	nc := natsembed.Connect(t, natsembed.Test(t))
	ch := reports(t, nc, "f-1")
	cfg := config("f-1")
	cfg.Heartbeat = 40 * time.Millisecond
	a := newAgent(t, nc, cfg)
	require.Equal(t, fleet.StateStarting, next(t, ch).State)

	a.Abandon()
	a.Abandon() // idempotent
	require.NoError(t, nc.Publish(subjects.RollCall("svc"), nil))
	require.NoError(t, a.Close())
	require.NoError(t, nc.Flush())
	time.Sleep(10 * cfg.Heartbeat)
	for len(ch) > 0 { // a heartbeat may have been on its way before Abandon
		require.NotEqual(t, fleet.StateGone, (<-ch).State)
	}
	time.Sleep(10 * cfg.Heartbeat)
	require.Empty(t, ch, "reports after Abandon")
}
