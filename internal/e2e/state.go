package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Client is an open stream and the state a Skip client rebuilds from its
// events: an init replaces the state, an update merges into it (an entry
// without values deletes its key).
type Client struct {
	ID     string // the instance id the creation returned
	Stream *Stream
	State  map[string]string // key → values, as JSON
	Inits  int
	Seen   []string // kind and id of every event, for failure messages
}

// Next reads one event into the state, waiting up to 20 s for it.
func (c *Client) Next(t testing.TB) Event {
	t.Helper()
	return c.NextWithin(t, 20*time.Second)
}

// NextWithin is Next waiting up to d.
func (c *Client) NextWithin(t testing.TB, d time.Duration) Event {
	t.Helper()
	e := c.Stream.NextWithin(t, d)
	if err := c.apply(e); err != nil {
		t.Fatalf("stream %s: %v", c.ID, err)
	}
	return e
}

// Until reads events until the state has key (JSON, e.g. `"k"`).
func (c *Client) Until(t testing.TB, key string) {
	t.Helper()
	c.UntilWithin(t, key, 20*time.Second)
}

// UntilWithin is Until waiting up to d for each event: a follower catching
// up on a burst of writes may be silent for longer than Next's 20 s.
func (c *Client) UntilWithin(t testing.TB, key string, d time.Duration) {
	t.Helper()
	for c.State[key] == "" {
		c.NextWithin(t, d)
	}
}

func (c *Client) apply(e Event) error {
	var entries [][2]json.RawMessage
	if err := json.Unmarshal([]byte(e.Data), &entries); err != nil {
		return fmt.Errorf("%s event: %w: %s", e.Kind, err, e.Data)
	}
	c.Seen = append(c.Seen, e.Kind+" "+e.ID)
	switch e.Kind {
	case "init":
		c.Inits++
		c.State = map[string]string{}
	case "update":
		if c.State == nil { // a client made after the stream's init was read
			c.State = map[string]string{}
		}
	default:
		return fmt.Errorf("event %q", e.Kind)
	}
	for _, kv := range entries {
		if string(kv[1]) == "[]" {
			delete(c.State, string(kv[0]))
		} else {
			c.State[string(kv[0])] = string(kv[1])
		}
	}
	return nil
}
