package wiring_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/leaktest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/internal/wiring"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// heard records what the watcher tells a router.
type heard struct {
	mu        sync.Mutex
	moved     []fleet.Moved
	rollCalls int
}

func (h *heard) Changed(string) {} // the view's changes: not this test's subject
func (h *heard) Moved(_ string, m fleet.Moved) {
	h.mu.Lock()
	h.moved = append(h.moved, m)
	h.mu.Unlock()
}
func (h *heard) RollCalled() { h.mu.Lock(); h.rollCalls++; h.mu.Unlock() }
func (h *heard) snapshot() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rollCalls, len(h.moved)
}

// An attached router hears its service's roll calls (the one AttachRouter
// sends included) and other routers' moves; Close ends the prober and the
// watcher (goleak checks).
func TestAttachedRouterHearsRollCallsAndMoves(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	f, err := wiring.WatchFleet(nc, wiring.FleetConfig{Watch: fleet.WatchConfig{Subjects: subjects, Services: []string{"svc"}, Self: "r-1"}})
	require.NoError(t, err)
	defer f.Close()

	h := &heard{}
	require.NoError(t, f.AttachRouter("svc", h))
	require.Eventually(t, func() bool { n, _ := h.snapshot(); return n >= 1 }, 5*time.Second, 5*time.Millisecond, "the roll call AttachRouter sends")

	other := natstest.Connect(t, url)
	require.NoError(t, other.Publish(subjects.RollCall("svc"), nil))
	require.Eventually(t, func() bool { n, _ := h.snapshot(); return n >= 2 }, 5*time.Second, 5*time.Millisecond, "another's roll call")

	data, err := json.Marshal(fleet.Moved{Router: "r-2", From: "f-1/a", To: "f-2/b", TTLMillis: 60_000})
	require.NoError(t, err)
	require.NoError(t, other.Publish(subjects.Moved("svc", "r-2"), data))
	require.Eventually(t, func() bool { _, m := h.snapshot(); return m == 1 }, 5*time.Second, 5*time.Millisecond, "another router's move")
}
