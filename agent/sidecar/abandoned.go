package sidecar

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A creation or deletion the follower has not answered when its caller
// leaves (a router that gave up on a hung follower) is not cancelled: the
// follower has the request already and, once it answers again, acts on it
// anyway. Cut, its answer is lost, and with it the only record of the
// instance it created, which Skip never collects (never subscribed). So the
// sidecar waits for the answer (up to abandonedWait, or its own shutdown)
// and deletes what such a creation created: only it can know the id.
const abandonedWait = 5 * time.Minute

// What came of a creation whose caller left before the follower answered:
// the label of headcount_sidecar_abandoned_creations_total.
const (
	abandonedDeleted    = "deleted"     // created, then deleted by the sidecar
	abandonedKept       = "kept"        // created and not deleted: counted, as the follower keeps it
	abandonedNotCreated = "not_created" // answered without creating anything, or reset unread
	abandonedUnanswered = "unanswered"  // no answer within abandonedWait, the sidecar stopped, or another error
)

// errCallerLeft ends the proxying of an answer whose caller has left.
var errCallerLeft = errors.New("the caller left before the follower answered")

// outlivesCaller: the exchanges whose effect on the follower does not
// depend on the caller staying (a stream's GET does: its subscriber).
func (ex *exchange) outlivesCaller() bool {
	return ex.api == apiControl && (ex.route == routeCreate || ex.route == routeDelete)
}

// creations holds the creations in flight, so that the metrics can tell
// those whose caller left.
type creations struct {
	mu  sync.Mutex
	set map[*exchange]struct{}
}

func (c *creations) add(ex *exchange) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set == nil {
		c.set = map[*exchange]struct{}{}
	}
	c.set[ex] = struct{}{}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.set, ex)
	}
}

// abandoned counts the creations in flight whose caller left: the
// follower has not answered them yet.
func (c *creations) abandoned() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for ex := range c.set {
		if ex.caller.Err() != nil {
			n++
		}
	}
	return n
}

// outlive is ctx without its cancellation, bounded by abandonedWait and
// by the sidecar's life.
func (s *Sidecar) outlive(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abandonedWait)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// abandoned settles the follower's answer to a creation whose caller left:
// an instance it created is deleted, or counted if it cannot be.
func (s *Sidecar) abandoned(resp *http.Response, ex *exchange) error {
	outcome := abandonedNotCreated
	if resp.StatusCode == http.StatusCreated {
		outcome = s.deleteOrphan(resp, ex)
	}
	s.met.abandoned.WithLabelValues(outcome).Inc()
	return errCallerLeft
}

// unanswered counts a creation whose caller left and that failed without
// an answer. A reset connection is one the follower closed with the request
// unread (Linux resets a socket closed with unread data): Node closes an
// idle keep-alive connection when it goes on after a hang, before it reads
// what arrived meanwhile. Nothing was created.
func (s *Sidecar) unanswered(ex *exchange, err error) {
	outcome := abandonedUnanswered
	if errors.Is(err, syscall.ECONNRESET) {
		outcome = abandonedNotCreated
	}
	s.met.abandoned.WithLabelValues(outcome).Inc()
	s.log.Warn("no answer from the follower to a creation whose caller left", "addr", ex.addr, "outcome", outcome, "err", err)
}

func (s *Sidecar) deleteOrphan(resp *http.Response, ex *exchange) string {
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxID+3))
	id, ok := ParseID(strings.TrimSpace(string(head)))
	if err != nil || !ok {
		s.log.Warn("the follower created an instance after its caller left, with an id the sidecar cannot read: not deleted",
			"path", resp.Request.URL.Path, "err", err)
		return abandonedKept
	}
	req, err := http.NewRequestWithContext(resp.Request.Context(), http.MethodDelete, "http://"+ex.addr+streamsPath+id.Key, nil)
	if err == nil {
		var answer *http.Response
		if answer, err = s.transport.RoundTrip(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(answer.Body, 1<<10))
			_ = answer.Body.Close()
			if answer.StatusCode/100 != 2 {
				err = errors.New(answer.Status)
			}
		}
	}
	if err != nil {
		// The follower keeps it: count it, so that the report says so.
		s.table.created(id.Key, ex.resource, ex.params, ex.definition)
		s.log.Warn("the follower created an instance after its caller left; not deleted, counted", "id", id.String(), "err", err)
		return abandonedKept
	}
	s.log.Info("the follower created an instance after its caller left: deleted", "id", id.String())
	return abandonedDeleted
}
