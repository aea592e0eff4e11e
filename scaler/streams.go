package scaler

import (
	"sync"

	"github.com/headcount-dev/headcount/internal/sets"
)

// hub wakes the StreamIsActive handlers of a service when its view changes.
// Waking is a non-blocking send on a 1-slot channel, so a burst of reports
// costs the NATS goroutine nothing and the handler reads the latest totals once.
type hub struct {
	mu   sync.RWMutex
	subs map[string]map[*subscriber]struct{}
}

type subscriber struct{ wake chan struct{} }

func newHub() *hub { return &hub{subs: map[string]map[*subscriber]struct{}{}} }

func (h *hub) add(service string) *subscriber {
	s := &subscriber{wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[service] == nil {
		h.subs[service] = map[*subscriber]struct{}{}
	}
	h.subs[service][s] = struct{}{}
	return s
}

func (h *hub) remove(service string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[service], s)
	if len(h.subs[service]) == 0 {
		delete(h.subs, service)
	}
}

func (h *hub) notify(service string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs[service] {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// count returns the open streams of service.
func (h *hub) count(service string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs[service])
}

// counts returns the open streams by service.
func (h *hub) counts() map[string]int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return sets.Sizes(h.subs)
}
