package metricsadapter

import (
	"sync/atomic"
	"time"
)

// ConnState is a Link fed by the owner of the NATS connection from its
// disconnect and reconnect handlers. The zero value is connected.
type ConnState struct {
	since atomic.Int64 // unix nanoseconds; 0 while connected
}

// Disconnected records that NATS went away at t (the first call of an outage wins).
func (c *ConnState) Disconnected(t time.Time) { c.since.CompareAndSwap(0, t.UnixNano()) }

// Reconnected records that NATS is back.
func (c *ConnState) Reconnected() { c.since.Store(0) }

// StaleSince is when NATS went away; the zero time while connected.
func (c *ConnState) StaleSince() time.Time {
	if n := c.since.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}
