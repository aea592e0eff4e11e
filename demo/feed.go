package demo

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"sync"
)

// event is one SSE event of a resource instance: an "init" with the whole
// content or an "update" with the keys that changed (deleted keys have no values).
type event struct {
	kind      string // "init" or "update"
	watermark string
	data      []byte
}

// feed is the live content of one collection and the cursors following it.
// The leader's input collections are feeds written by PATCH; a follower's
// mirrors are feeds written from the leader's stream.
type feed struct {
	mu        sync.Mutex
	entries   map[string]entry // by canonical key
	watermark string
	seq       uint64        // the leader's watermark counter
	ready     chan struct{} // closed once the content is known
	isReady   bool
	cursors   map[*cursor]struct{}
}

// cursor follows a feed for one subscriber. Writers only mark keys dirty, so a
// slow subscriber never blocks a write and costs at most one mark per key; it
// then reads the latest values of those keys.
type cursor struct {
	f     *feed
	dirty map[string]struct{}
	wake  chan struct{}
}

func newFeed() *feed {
	return &feed{entries: map[string]entry{}, ready: make(chan struct{}), cursors: map[*cursor]struct{}{}}
}

// newInputFeed returns a leader's collection: known (empty) from the start.
func newInputFeed() *feed {
	f := newFeed()
	f.mu.Lock()
	f.applyLocked(nil, "0", false)
	f.mu.Unlock()
	return f
}

// write applies a client's update and gives it the next watermark.
func (f *feed) write(entries []entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.applyLocked(entries, strconv.FormatUint(f.seq, 10), false)
}

// sync applies an event of the leader's stream; an init replaces the content.
func (f *feed) sync(entries []entry, watermark string, init bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if watermark == "" { // Skip's heartbeat carries no id
		watermark = f.watermark
	}
	f.applyLocked(entries, watermark, init)
}

func (f *feed) applyLocked(entries []entry, watermark string, replace bool) {
	var changed []string
	var seen map[string]struct{} // keys of a replacing init
	if replace {
		seen = make(map[string]struct{}, len(entries))
	}
	for _, e := range entries {
		k := string(e.key)
		if replace {
			seen[k] = struct{}{}
		}
		old, ok := f.entries[k]
		switch {
		case len(e.values) == 0:
			if ok {
				delete(f.entries, k)
				changed = append(changed, k)
			}
		case !ok || !slices.EqualFunc(old.values, e.values, bytes.Equal):
			f.entries[k] = e
			changed = append(changed, k)
		}
	}
	if replace {
		for k := range f.entries {
			if _, ok := seen[k]; !ok {
				delete(f.entries, k)
				changed = append(changed, k)
			}
		}
	}
	f.watermark = watermark
	if !f.isReady {
		f.isReady = true
		close(f.ready)
	}
	if len(changed) == 0 {
		return
	}
	for c := range f.cursors {
		for _, k := range changed {
			c.dirty[k] = struct{}{}
		}
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// wait blocks until the content is known (a follower's first init).
func (f *feed) wait(ctx context.Context) error {
	select {
	case <-f.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// watch returns a cursor and the init event it starts from. The feed must be ready.
func (f *feed) watch() (*cursor, event) {
	c := &cursor{f: f, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cursors[c] = struct{}{}
	return c, event{kind: "init", watermark: f.watermark, data: f.snapshotLocked()}
}

func (f *feed) unwatch(c *cursor) {
	f.mu.Lock()
	delete(f.cursors, c)
	f.mu.Unlock()
}

// snapshot returns the whole content in Skip's wire form, sorted by key.
func (f *feed) snapshot() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snapshotLocked()
}

func (f *feed) snapshotLocked() []byte {
	keys := make([]string, 0, len(f.entries))
	for k := range f.entries {
		keys = append(keys, k)
	}
	return f.encodeLocked(keys)
}

// encodeLocked encodes the current values of keys (none for a deleted key).
func (f *feed) encodeLocked(keys []string) []byte {
	slices.Sort(keys)
	entries := make([]entry, len(keys))
	for i, k := range keys {
		entries[i] = entry{key: []byte(k), values: f.entries[k].values}
	}
	return appendEntries(nil, entries)
}

// lookup returns the values of key as a JSON array (empty when absent).
func (f *feed) lookup(key []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return appendValues(nil, f.entries[string(key)].values)
}

// next takes the keys changed since the last call as an update event; ok is
// false when nothing changed.
func (c *cursor) next() (ev event, ok bool) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if len(c.dirty) == 0 {
		return event{}, false
	}
	keys := make([]string, 0, len(c.dirty))
	for k := range c.dirty {
		keys = append(keys, k)
	}
	clear(c.dirty)
	return event{kind: "update", watermark: c.f.watermark, data: c.f.encodeLocked(keys)}, true
}
