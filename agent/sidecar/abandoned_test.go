package sidecar_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
)

// leave sends a request to the sidecar and gives up on it before the stalled
// follower answers, as a router gives up on a hung follower, once the
// follower has it (as upstream: method and path).
func (f *fixture) leave(req *http.Request, upstream string) {
	client := e2e.H2CClient()
	f.t.Helper()
	seen := f.up.times(upstream)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		resp, err := client.Do(req.WithContext(ctx))
		if err == nil {
			_ = resp.Body.Close()
		}
		done <- err
	}()
	require.Eventually(f.t, func() bool { return f.up.times(upstream) > seen }, 10*time.Second, 5*time.Millisecond, "the follower has %s", upstream)
	cancel()
	require.Error(f.t, <-done, "the caller left before any answer")
	time.Sleep(100 * time.Millisecond) // the sidecar hears of it before the follower answers
}

func (f *fixture) abandoned(outcome string) float64 {
	f.t.Helper()
	return counter(f.t, f.registry, "headcount_sidecar_abandoned_creations_total", map[string]string{"outcome": outcome})
}

func (f *fixture) creation() *http.Request {
	req, err := http.NewRequest(http.MethodPost, "http://"+f.control+"/v1/streams/posts", strings.NewReader("{}"))
	require.NoError(f.t, err)
	return req
}

// A creation the follower answers after its caller left (a router that gave
// up on it while it hung) is not lost on the way: the sidecar waits for the
// answer and deletes the instance, which nobody else could name and Skip
// would keep for ever (never subscribed). It never counts.
func TestCreationWhoseCallerLeftIsDeletedWhenTheFollowerAnswers(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	f.create()
	f.reports.WaitInstances(t, 1)
	resume := f.up.stall(t)
	f.leave(f.creation(), "POST /v1/streams/posts")
	waiting := func() float64 {
		return counter(t, f.registry, "headcount_sidecar_abandoned_creations_waiting", nil)
	}
	require.Eventually(t, func() bool { return waiting() == 1 }, 10*time.Second, 5*time.Millisecond, "the sidecar waits for the answer")
	resume()

	require.Eventually(t, func() bool { return waiting() == 0 && f.abandoned("deleted") == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, f.up.live(), "the follower keeps only the instance whose caller stayed")
	assert.Equal(t, 1, f.sc.Instances())
	assert.Equal(t, 1.0, eventCounter(t, f, "created"), "the orphan never counted")
	assert.Equal(t, 1.0, requestCounter(t, f, "control", "create", "499"))
	assert.Zero(t, f.abandoned("kept"))
}

// If the follower will not delete it either, it stays counted: the report
// says what the follower holds.
func TestOrphanTheFollowerWillNotDeleteIsCounted(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	f.up.failDeletes.Store(true)
	resume := f.up.stall(t)
	f.leave(f.creation(), "POST /v1/streams/posts")
	resume()

	require.Eventually(t, func() bool { return f.abandoned("kept") == 1 }, 10*time.Second, 5*time.Millisecond)
	f.reports.WaitInstances(t, 1)
	assert.Equal(t, 1, f.up.live())
	assert.Zero(t, f.abandoned("deleted"))
}

// A router's DELETE of a moved instance that the follower answers after the
// router gave up still deletes it, and counts as a plain deletion: the
// router took its move back when it gave up, so the views count the
// instance here again until the report drops it.
func TestDeletionWhoseCallerLeftStillDeletes(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	id := f.create()
	f.reports.WaitInstances(t, 1)
	resume := f.up.stall(t)
	req, err := http.NewRequest(http.MethodDelete, "http://"+f.control+"/v1/streams/"+id, nil)
	require.NoError(t, err)
	req.Header.Set(fleet.HeaderMovedOut, "1")
	f.leave(req, "DELETE /v1/streams/"+strings.TrimPrefix(id, "f1/"))
	resume()

	rep := f.reports.WaitFor(t, "0 instances", func(r fleet.Report) bool { return r.Instances == 0 })
	assert.Zero(t, rep.MovedOut)
	assert.Equal(t, 0, f.up.live())
	assert.Equal(t, 1.0, eventCounter(t, f, "deleted"))
	assert.Zero(t, eventCounter(t, f, "moved_out"))
}
