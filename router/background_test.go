package router

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A queue runs its jobs on at most max goroutines, all of them.
func TestQueueIsBounded(t *testing.T) {
	var g group
	q := &queue{g: &g, max: 2}
	release := make(chan struct{})
	var running, most, done atomic.Int32
	for range 10 {
		q.add(func() {
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			running.Add(-1)
			done.Add(1)
		})
	}
	require.Eventually(t, func() bool { return running.Load() == 2 }, 5*time.Second, time.Millisecond)
	close(release)
	require.Eventually(t, func() bool { return done.Load() == 10 }, 5*time.Second, time.Millisecond)
	g.close()
	assert.Equal(t, int32(2), most.Load(), "at most max jobs at once")
}

// close waits for the jobs running and drops the queued ones; nothing runs
// after it.
func TestQueueCloseJoinsAndDrops(t *testing.T) {
	var g group
	q := &queue{g: &g, max: 1}
	started, release := make(chan struct{}), make(chan struct{})
	var ran atomic.Int32
	q.add(func() { close(started); <-release; ran.Add(1) })
	for range 5 {
		q.add(func() { ran.Add(1) })
	}
	<-started
	var closed sync.WaitGroup
	closed.Go(g.close)
	require.Eventually(t, g.isClosed, 5*time.Second, time.Millisecond)
	close(release)
	closed.Wait()
	assert.Equal(t, int32(1), ran.Load(), "the running job finished, the queued ones were dropped")
	q.add(func() { ran.Add(1) })
	assert.False(t, g.start(func() { ran.Add(1) }))
	assert.Equal(t, int32(1), ran.Load(), "nothing starts once closed")
}
