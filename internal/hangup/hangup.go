// Package hangup tells when the client of a hijacked connection hangs up,
// so that a server can end what it streams to it. On Linux one epoll set
// and one goroutine watch every connection for a hang-up or an error, never
// for data: an idle connection costs no goroutine and no read buffer.
// Elsewhere, and for connections without a file descriptor (or once the
// epoll set is closed), a goroutine per connection reads it until it fails,
// discarding what the client sends.
package hangup

import (
	"io"
	"log/slog"
	"net"
	"sync"
)

// Watcher watches connections for a hang-up. Close ends its goroutine.
type Watcher struct {
	log *slog.Logger
	ep  *epoll // nil: a goroutine per connection

	mu     sync.Mutex
	closed bool
	last   uint64
	gone   map[uint64]watched // by token
	done   chan struct{}      // closed when the epoll goroutine has ended
}

type watched struct {
	c    net.Conn
	gone func()
}

// New returns a watcher; without epoll it falls back to a goroutine per
// connection, and says so in log.
func New(log *slog.Logger) *Watcher {
	w := &Watcher{log: log, gone: map[uint64]watched{}, done: make(chan struct{})}
	ep, err := newEpoll()
	if err != nil {
		log.Warn("no epoll for client hang-ups: one goroutine per connection instead", "err", err)
		close(w.done)
		return w
	}
	w.ep = ep
	go w.run()
	return w
}

// Watch calls gone once the client on c hangs up or its connection fails,
// and returns the function that ends the watch, to call before c is closed.
func (w *Watcher) Watch(c net.Conn, gone func()) (stop func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The set is changed under the lock, so that it is never changed once
	// closed.
	if w.closed || w.ep == nil {
		return read(c, gone)
	}
	w.last++
	token := w.last
	if !w.ep.add(c, token) {
		return read(c, gone)
	}
	w.gone[token] = watched{c, gone}
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.gone[token]; ok {
			delete(w.gone, token)
			w.ep.remove(c)
		}
	}
}

// read is the fallback: a goroutine that reads c until it fails. It ends
// when c is closed, so stop has nothing to do.
func read(c net.Conn, gone func()) (stop func()) {
	go func() {
		// A client that only listens sends nothing more: whatever it does is discarded.
		_, _ = io.Copy(io.Discard, c)
		gone()
	}()
	return func() {}
}

// run calls the gone of every connection the epoll set reports, until Close
// or a failure of the set; connections still watched then are handed to a
// goroutine each, so that no hang-up goes unnoticed.
func (w *Watcher) run() {
	defer close(w.done)
	err := w.ep.wait(func(token uint64) {
		w.mu.Lock()
		e, ok := w.gone[token]
		delete(w.gone, token)
		w.mu.Unlock()
		if ok {
			e.gone()
		}
	})
	if err != nil {
		w.log.Error("epoll of client hang-ups failed: one goroutine per connection from now on", "err", err)
	}
	w.mu.Lock()
	w.closed = true
	left := w.gone
	w.gone = nil
	w.ep.close()
	w.mu.Unlock()
	for _, e := range left {
		read(e.c, e.gone)
	}
}

// Close ends the epoll goroutine and waits for it; connections still
// watched go on being watched by a goroutine each until they close.
func (w *Watcher) Close() {
	w.mu.Lock()
	if !w.closed && w.ep != nil {
		w.ep.wake()
	}
	w.closed = true
	w.mu.Unlock()
	<-w.done
}
