package faults_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// Scaling from zero, read with KEDA's generated client: the push stream and
// IsActive say true from the first held creation on, and never false until
// the instance is gone — not when the held creation is placed and the
// router's demand drops before the follower's report counts the instance.
// Three rounds, each from zero followers.
func TestActivationFromZeroNeverFlaps(t *testing.T) {
	s := newStack(t, 1)
	s.startLeader()
	r := s.router("r-1")
	s.startScaler()
	s.waitRouted(r, 0)
	keda := s.keda()

	type event struct {
		// at is when a push arrived, or when a poll was sent: an answer to
		// a poll sent before the first true may arrive after it, and is no flap.
		at     time.Time
		active bool
		push   bool // from StreamIsActive, else from polling IsActive
	}
	var (
		mu     sync.Mutex
		events []event
	)
	record := func(at time.Time, active, push bool) {
		mu.Lock()
		events = append(events, event{at, active, push})
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() { cancel(); bg.Wait() }()
	stream, err := keda.StreamIsActive(ctx, scaledObject)
	require.NoError(t, err)
	bg.Go(func() {
		for {
			res, err := stream.Recv()
			if err != nil {
				return
			}
			record(time.Now(), res.Result, true)
		}
	})
	bg.Go(func() {
		for ctx.Err() == nil {
			sent := time.Now()
			if res, err := keda.IsActive(ctx, scaledObject); err == nil {
				record(sent, res.Result, false)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	isActive := func(push bool) bool {
		mu.Lock()
		defer mu.Unlock()
		for i := len(events) - 1; i >= 0; i-- {
			if events[i].push == push {
				return events[i].active
			}
		}
		return false
	}

	// The stream's first answer (false) must be in before round 0 resets the
	// readings: arriving after the first true, it would look like a flap.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.push {
				return true
			}
		}
		return false
	}, wait, 5*time.Millisecond, "the push stream's first answer")

	for round := range 3 {
		mu.Lock()
		events = nil
		mu.Unlock()
		require.Eventually(t, func() bool { return !isActive(true) && !isActive(false) }, wait, 10*time.Millisecond, "round %d starts inactive", round)

		// A creation held: no follower yet.
		created := make(chan string, 1)
		go func() {
			code, id := e2e.Do(t, http.MethodPost, r.control+"/v1/streams/collection", `{"name":"posts"}`)
			if code != http.StatusCreated {
				id = ""
			}
			created <- id
		}()
		require.Eventually(t, func() bool { return isActive(true) && isActive(false) }, wait, 5*time.Millisecond, "active while held")
		f := s.follower("f-1", "--instance-ttl", "1s")
		id := <-created
		require.NotEmpty(t, id, "the held creation was placed")
		st, code := e2e.Subscribe(t, r.streaming, strings.TrimSpace(id))
		require.Equal(t, http.StatusOK, code)
		require.Eventually(t, func() bool { v, err := live(keda); return err == nil && v == 1 }, wait, 10*time.Millisecond, "the instance is counted")
		time.Sleep(500 * time.Millisecond) // reports settle; still active
		leaving := time.Now()
		st.Close() // the instance goes 1 s later
		require.Eventually(t, func() bool { return !isActive(true) && !isActive(false) }, wait, 10*time.Millisecond, "inactive once the instance is gone")

		mu.Lock()
		var first time.Time
		for _, e := range events {
			if e.active && (first.IsZero() || e.at.Before(first)) {
				first = e.at
			}
		}
		flaps := 0
		for _, e := range events {
			if !first.IsZero() && !e.active && e.at.After(first) && e.at.Before(leaving) {
				flaps++
				t.Logf("false at +%v (push %v), %v before the client left", e.at.Sub(first).Round(time.Millisecond), e.push, leaving.Sub(e.at).Round(time.Millisecond))
			}
		}
		n := len(events)
		mu.Unlock()
		assert.Zero(t, flaps, "round %d: false between the first held creation and the instance's end (%d readings)", round, n)
		t.Logf("round %d: %d readings, %d false from the first true to the client's leaving", round, n, flaps)

		f.Signal(t, syscall.SIGTERM) // back to zero followers
		require.NoError(t, f.Wait(t, wait))
		s.waitRouted(r, 0)
	}
}
