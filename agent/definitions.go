package agent

// Definitions counts the live instances of each definition (a
// fleet.DefinitionKey) that a follower holds, so that it can report its
// graphs: Skip keeps one graph per definition while any of its instances
// lives. The zero value is empty and ready; it is not safe for concurrent
// use (callers count under the lock that guards their instances).
type Definitions struct {
	live map[string]int64
}

// Add counts a new instance of key and returns the graphs now live.
func (d *Definitions) Add(key string) int64 {
	if d.live == nil {
		d.live = map[string]int64{}
	}
	d.live[key]++
	return int64(len(d.live))
}

// Remove counts an instance of key gone and returns the graphs now live. A
// key not counted is ignored.
func (d *Definitions) Remove(key string) int64 {
	switch n := d.live[key]; {
	case n > 1:
		d.live[key] = n - 1
	case n == 1:
		delete(d.live, key)
	}
	return int64(len(d.live))
}

// Len is the graphs live.
func (d *Definitions) Len() int64 { return int64(len(d.live)) }
