package demo

import (
	"errors"
	"sync"
)

// maxCollections bounds the leader's collections, which writers create by
// naming them, so a bad client cannot grow the map without end.
const maxCollections = 10_000

var errTooManyCollections = errors.New("too many collections")

// store holds the leader's input collections. A collection exists once it
// is named (written or read); it starts empty.
type store struct {
	mu    sync.Mutex
	feeds map[string]*feed
}

func newStore() *store { return &store{feeds: map[string]*feed{}} }

func (s *store) feed(name string) (*feed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.feeds[name]
	if f == nil {
		if len(s.feeds) >= maxCollections {
			return nil, errTooManyCollections
		}
		f = newInputFeed()
		s.feeds[name] = f
	}
	return f, nil
}

// open is the leader's computation of a collection: the input itself, which
// outlives its instances (nothing to stop).
func (s *store) open(name string) (*feed, func(), error) {
	f, err := s.feed(name)
	return f, nil, err
}
