package sidecar

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countdowns are the collections a table started, fired when the test says.
type countdowns struct{ pending []*countdown }

type countdown struct {
	f       func()
	stopped bool
}

func (c *countdown) Stop() bool { was := !c.stopped; c.stopped = true; return was }

func (cs *countdowns) after(_ time.Duration, f func()) stopper {
	c := &countdown{f: f}
	cs.pending = append(cs.pending, c)
	return c
}

// expire fires every countdown, stopped ones too: a timer may fire just as
// it is stopped, and the table must ignore it then.
func (cs *countdowns) expire() {
	for _, c := range cs.pending {
		c.f()
	}
	cs.pending = nil
}

func newTestTable() (*table, *countdowns, *int64) {
	var n int64
	tb := newTable(time.Second, func(d, _ int64, _ string) { n += d }, func(string) {})
	cs := &countdowns{}
	tb.after = cs.after
	return tb, cs, &n
}

// A subscriber who comes back before the TTL keeps the instance, however
// long the machine took: the TTL here passes only when the test says.
func TestResubscribingWithinTheTTLCallsOffTheCollection(t *testing.T) {
	tb, cs, n := newTestTable()
	tb.created("k", "", "", "")
	tb.subscribed("k")
	tb.unsubscribed("k")
	tb.subscribed("k") // back before the TTL
	cs.expire()
	require.Equal(t, int64(1), *n, "the instance stays")
	require.True(t, tb.has("k"))

	tb.unsubscribed("k")
	cs.expire() // gone for good this time
	require.Equal(t, int64(0), *n)
	require.False(t, tb.has("k"))
}

// Never subscribed: never collected (Skip's rule), however long it waits.
func TestAnUnsubscribedInstanceIsNeverCollected(t *testing.T) {
	tb, cs, n := newTestTable()
	tb.created("k", "", "", "")
	require.Empty(t, cs.pending, "no countdown starts at creation")
	require.Equal(t, int64(1), *n)
}
