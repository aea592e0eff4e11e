package sidecar

import (
	"sync"
	"time"

	"github.com/headcount-dev/headcount/agent"
)

// Events that change the count; they label the events metric.
const (
	eventCreated   = "created"   // 201 to POST /v1/streams/:resource
	eventDeleted   = "deleted"   // 2xx to DELETE of a known instance
	eventCollected = "collected" // subscriber left and did not come back within the TTL
	eventVanished  = "vanished"  // the follower answered 404 for a known instance
	eventMovedOut  = "moved_out" // 2xx to a router's DELETE after moving it elsewhere
	eventUnparsed  = "unparsed"  // a 201 whose body is not an instance id: not counted
)

// table holds the live instances of one follower and applies the counting
// rule (docs/sidecar.md). add reports every change of the count, the graphs
// (distinct definitions) live after it, and its event, under the table's
// lock so that the counts published always equal the table's.
type table struct {
	ttl   time.Duration
	add   func(delta, graphs int64, event string)
	event func(kind string)
	// after starts a collection's countdown: time.AfterFunc, or a test's clock.
	after func(d time.Duration, f func()) stopper

	mu    sync.Mutex
	byKey map[string]*instance
	defs  agent.Definitions
}

type instance struct {
	// resource and params (fleet.EncodeOrigin) go back on the stream's 200 so
	// that a router can rebuild the instance elsewhere; "" when not carried.
	resource, params string
	// definition is the instance's fleet.DefinitionKey, or a key of its own
	// when its params could not be read (then it shares with nothing).
	definition  string
	subscribers int
	collect     stopper // set while nobody is subscribed after someone was
}

// stopper is a pending collection (a *time.Timer).
type stopper interface{ Stop() bool }

func newTable(ttl time.Duration, add func(delta, graphs int64, event string), event func(string)) *table {
	after := func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
	return &table{ttl: ttl, add: add, event: event, after: after, byKey: map[string]*instance{}}
}

// created counts a new instance. Skip never collects an instance that was
// never subscribed, so neither does the table: no timer starts here.
func (t *table) created(key, resource, params, definition string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byKey[key]; ok {
		return // the same id twice: still one instance
	}
	if definition == "" {
		definition = "\x00" + key // never a DefinitionKey: they start with a resource
	}
	t.byKey[key] = &instance{resource: resource, params: params, definition: definition}
	t.add(1, t.defs.Add(definition), eventCreated)
	t.event(eventCreated)
}

func (t *table) has(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.byKey[key]
	return ok
}

func (t *table) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey)
}

// streams counts the instances with an open stream.
func (t *table) streams() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, inst := range t.byKey {
		if inst.subscribers > 0 {
			n++
		}
	}
	return n
}

// subscribed records an SSE subscriber and returns the instance's origin; a
// pending collection is called off, as Skip clears its garbage mark on a new
// subscription.
func (t *table) subscribed(key string) (resource, params string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	inst, ok := t.byKey[key]
	if !ok {
		return "", ""
	}
	inst.subscribers++
	if inst.collect != nil {
		inst.collect.Stop()
		inst.collect = nil
	}
	return inst.resource, inst.params
}

// unsubscribed records a subscriber leaving; the last one starts the TTL
// after which Skip collects the instance.
func (t *table) unsubscribed(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	inst, ok := t.byKey[key]
	if !ok || inst.subscribers == 0 {
		return
	}
	inst.subscribers--
	if inst.subscribers == 0 {
		inst.collect = t.after(t.ttl, func() { t.collected(key, inst) })
	}
}

func (t *table) collected(key string, inst *instance) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// The timer may fire just as it is stopped: only an instance that is
	// still this one, still idle, and still waiting on this timer goes.
	if t.byKey[key] != inst || inst.subscribers > 0 || inst.collect == nil {
		return
	}
	t.removeLocked(key, inst, eventCollected)
}

// remove forgets a known instance for the given reason; it reports whether
// the instance was known.
func (t *table) remove(key, reason string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	inst, ok := t.byKey[key]
	if ok {
		t.removeLocked(key, inst, reason)
	}
	return ok
}

func (t *table) removeLocked(key string, inst *instance, reason string) {
	if inst.collect != nil {
		inst.collect.Stop()
		inst.collect = nil
	}
	delete(t.byKey, key)
	t.add(-1, t.defs.Remove(inst.definition), reason)
	t.event(reason)
}

// stop cancels every pending collection: the sidecar is going away.
func (t *table) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, inst := range t.byKey {
		if inst.collect != nil {
			inst.collect.Stop()
			inst.collect = nil
		}
	}
}
