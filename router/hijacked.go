package router

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"time"
)

// hijack takes an HTTP/1.1 client's connection from net/http once a
// stream's response headers (w.Header()) are known, and returns it with the
// head to write: chunked, so that a client tells the stream's end from a
// cut, and Connection: close, since the connection never goes back to
// net/http. Its serve goroutine, buffers and background read then end with
// the handler. HTTP/2, TLS and HTTP/1.0 clients, and writers that cannot be
// hijacked, stay on the ResponseWriter (nil).
func hijack(w http.ResponseWriter, r *http.Request) (net.Conn, []byte) {
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.TLS != nil {
		return nil, nil
	}
	// net/http clears the connection's deadlines (ops.Guard's body timeout
	// included). A request pipelined behind the stream's, in the returned
	// reader, is left unanswered, as Connection: close allows.
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil
	}
	h := w.Header()
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Connection", "close")
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("\r\n")
	return netConn(c), head.Bytes()
}

// netConn is the connection under wrappers such as ops.GuardListener's,
// whose checks concern net/http's own writes only.
func netConn(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
}

// serveClient writes a hijacked stream's head, then its events as chunks,
// on a goroutine of its own whose stack stays shallow; a hang-up of the
// client (internal/hangup) cancels the stream, which closes its upstream and
// so wakes the pump.
func (rt *Router) serveClient(s *stream, c net.Conn, head []byte, cancel context.CancelFunc) {
	defer cancel()
	defer c.Close()
	defer rt.hangups.Watch(c, cancel)()
	if _, err := c.Write(head); err != nil {
		s.cur.close()
		return
	}
	rt.keep(s, func(ev []byte) error { return writeChunk(c, ev) })
	_, _ = c.Write(lastChunk)
}

var (
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")
)

// writeChunk writes ev as one chunk, in one write (writev on TCP).
func writeChunk(c net.Conn, ev []byte) error {
	size := strconv.AppendInt(make([]byte, 0, 18), int64(len(ev)), 16)
	bufs := net.Buffers{append(size, crlf...), ev, crlf}
	_, err := bufs.WriteTo(c)
	return err
}
