package demo

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/headcount-dev/headcount/agent"
)

var (
	errNoInstance = errors.New("no such resource instance")
	errInUse      = errors.New("resource instance already has a subscriber")
)

// computation is the shared work behind every instance of one (resource,
// params): here the feed of one collection.
type computation struct {
	collection string
	feed       *feed
	refs       int
	stop       func() // releases what open started (a follower's mirror)
}

// instance is a resource instance: a handle a client subscribes to once.
type instance struct {
	id         string
	comp       *computation
	origin     origin // what the instance was created from, for routers that move it
	subscribed bool
	gen        uint64 // invalidates expiry timers armed before the last subscribe
	timer      *time.Timer
	done       chan struct{} // closed when the instance is destroyed
}

// registry holds the instances and their shared computations. An instance
// without a subscriber is destroyed after ttl, like Skip's.
type registry struct {
	ttl       time.Duration
	open      func(collection string) (f *feed, stop func(), err error)
	onCreate  func()
	onDestroy func(movedOut bool)
	// onGraphs gets the definitions live after every change, under mu so
	// that the last count set is the current one.
	onGraphs func(n int64)

	mu    sync.Mutex
	byID  map[string]*instance
	comps map[string]*computation
	// defs counts the instances of each computation: its collection is the
	// whole definition, since the only resource's params are {"name": <c>}.
	// (comps also holds the computations snapshots borrow: not graphs.)
	defs agent.Definitions
}

func newRegistry(ttl time.Duration, open func(string) (*feed, func(), error), onCreate func(), onDestroy func(movedOut bool), onGraphs func(int64)) *registry {
	return &registry{ttl: ttl, open: open, onCreate: onCreate, onDestroy: onDestroy, onGraphs: onGraphs,
		byID: map[string]*instance{}, comps: map[string]*computation{}}
}

// acquire returns the computation of collection, starting it if needed, once
// its content is known. Each acquire needs one release.
func (r *registry) acquire(ctx context.Context, collection string) (*computation, error) {
	r.mu.Lock()
	c := r.comps[collection]
	if c == nil {
		f, stop, err := r.open(collection)
		if err != nil {
			r.mu.Unlock()
			return nil, err
		}
		c = &computation{collection: collection, feed: f, stop: stop}
		r.comps[collection] = c
	}
	c.refs++
	r.mu.Unlock()
	if err := c.feed.wait(ctx); err != nil {
		r.release(c)
		return nil, err
	}
	return c, nil
}

func (r *registry) release(c *computation) {
	r.mu.Lock()
	stop := r.releaseLocked(c)
	r.mu.Unlock()
	stop()
}

func (r *registry) releaseLocked(c *computation) (stop func()) {
	c.refs--
	if c.refs > 0 || c.stop == nil {
		return func() {}
	}
	delete(r.comps, c.collection)
	return c.stop
}

// origin is the creation's resource and params as the headers carry them
// (fleet.EncodeOrigin); empty when they cannot be carried.
type origin struct{ resource, params string }

// create makes a new instance of collection's computation.
func (r *registry) create(ctx context.Context, collection string, from origin) (string, error) {
	c, err := r.acquire(ctx, collection)
	if err != nil {
		return "", err
	}
	inst := &instance{id: uuid.NewString(), comp: c, origin: from, done: make(chan struct{})}
	r.mu.Lock()
	r.byID[inst.id] = inst
	r.onGraphs(r.defs.Add(collection))
	r.armLocked(inst)
	r.mu.Unlock()
	r.onCreate()
	return inst.id, nil
}

// subscribe claims the instance's only subscription.
func (r *registry) subscribe(id string) (*instance, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	inst := r.byID[id]
	switch {
	case inst == nil:
		return nil, errNoInstance
	case inst.subscribed:
		return nil, errInUse
	}
	inst.subscribed = true
	inst.gen++
	inst.timer.Stop()
	return inst, nil
}

// unsubscribe frees the subscription and starts the destroy delay.
func (r *registry) unsubscribe(inst *instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	inst.subscribed = false
	if r.byID[inst.id] == inst {
		r.armLocked(inst)
	}
}

func (r *registry) armLocked(inst *instance) {
	inst.gen++
	gen := inst.gen
	inst.timer = time.AfterFunc(r.ttl, func() {
		r.mu.Lock()
		if r.byID[inst.id] != inst || inst.subscribed || inst.gen != gen {
			r.mu.Unlock()
			return
		}
		r.destroyLocked(inst, false)
	})
}

// destroy ends an instance at once, and its open stream; movedOut says a
// router moved it elsewhere.
func (r *registry) destroy(id string, movedOut bool) bool {
	r.mu.Lock()
	inst := r.byID[id]
	if inst == nil {
		r.mu.Unlock()
		return false
	}
	r.destroyLocked(inst, movedOut)
	return true
}

// destroyLocked removes inst and unlocks r.
func (r *registry) destroyLocked(inst *instance, movedOut bool) {
	delete(r.byID, inst.id)
	r.onGraphs(r.defs.Remove(inst.comp.collection))
	inst.timer.Stop()
	close(inst.done)
	stop := r.releaseLocked(inst.comp)
	r.mu.Unlock()
	stop()
	r.onDestroy(movedOut)
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// streams counts the instances with an open stream.
func (r *registry) streams() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, inst := range r.byID {
		if inst.subscribed {
			n++
		}
	}
	return n
}
