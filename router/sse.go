package router

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Sizes of the stream path: an open stream holds a read buffer for its
// upstream's connection (under the chunked decoding); the event reader's
// buffer is pooled and taken while the upstream has data, and an event is
// gathered in a pooled buffer only while it is read and written.
const (
	streamReadBuffer = 512
	maxEventBytes    = 64 << 20 // an init carries a whole collection: large, never unbounded
	pooledEventCap   = 16 << 10 // larger event buffers go back to the GC, not the pool
)

var errEventTooLarge = errors.New("SSE event larger than 64 MiB")

var (
	eventPool  = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, streamReadBuffer) }}
)

// eventReader splits an upstream text/event-stream into whole events (each
// through its blank line, comments included), so that a move can switch
// upstreams between two events and a client never sees half of one.
type eventReader struct {
	src io.Reader
	br  *bufio.Reader // pooled; nil while idle (see idle)
	buf *[]byte       // the event being read or written; nil while idle
}

func newEventReader(r io.Reader) *eventReader { return &eventReader{src: r} }

// idle gives the read buffer back if it holds nothing, and reports whether
// it did: the caller then waits for the upstream without a buffer.
func (e *eventReader) idle() bool {
	if e.br != nil && e.br.Buffered() > 0 {
		return false
	}
	if e.br != nil {
		e.br.Reset(nil)
		readerPool.Put(e.br)
		e.br = nil
	}
	return true
}

// next returns the next event, valid until release or the next call.
func (e *eventReader) next() ([]byte, error) {
	e.release()
	if e.br == nil {
		e.br = readerPool.Get().(*bufio.Reader)
		e.br.Reset(e.src)
	}
	midLine := false // after a line longer than the read buffer
	for {
		line, err := e.br.ReadSlice('\n')
		if len(line) > 0 && e.buf == nil {
			e.buf = eventPool.Get().(*[]byte)
		}
		if e.buf != nil {
			if len(*e.buf)+len(line) > maxEventBytes {
				return nil, errEventTooLarge
			}
			*e.buf = append(*e.buf, line...)
		}
		switch {
		case err == bufio.ErrBufferFull:
			midLine = true
			continue
		case err != nil:
			if err == io.EOF && e.buf != nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		case !midLine && isBlank(line):
			return *e.buf, nil
		}
		midLine = false
	}
}

// release gives the event buffer back once the event is written.
func (e *eventReader) release() {
	if e.buf == nil {
		return
	}
	if cap(*e.buf) <= pooledEventCap {
		*e.buf = (*e.buf)[:0]
		eventPool.Put(e.buf)
	}
	e.buf = nil
}

func isBlank(line []byte) bool {
	return len(line) == 1 || len(line) == 2 && line[0] == '\r'
}

// eventKind returns the value of an event's "event:" field and whether it
// has any data: comments and empty events have none.
func eventKind(ev []byte) (kind string, hasData bool) {
	for len(ev) > 0 {
		line := ev
		if i := bytes.IndexByte(ev, '\n'); i >= 0 {
			line, ev = ev[:i], ev[i+1:]
		} else {
			ev = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			kind = string(value)
		case "data":
			hasData = true
		}
	}
	return kind, hasData
}

// firstEvent skips comments and returns the stream's first event, which
// must be an init.
func firstEvent(er *eventReader) ([]byte, error) {
	for {
		ev, err := er.next()
		if err != nil {
			return nil, err
		}
		if kind, data := eventKind(ev); data {
			if kind != "init" {
				return nil, fmt.Errorf("first event is %q, want init", kind)
			}
			return ev, nil
		}
	}
}
