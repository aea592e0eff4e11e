package demo

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// maxEventBytes bounds one SSE event read from the leader: an init carries a
// whole collection, so it is large, but never unbounded.
const maxEventBytes = 64 << 20

var errEventTooLarge = errors.New("SSE event too large")

// appendEvent encodes ev as Skip does: event, id, data, blank line.
func appendEvent(buf []byte, ev event) []byte {
	buf = append(buf, "event: "...)
	buf = append(buf, ev.kind...)
	buf = append(buf, "\nid: "...)
	buf = append(buf, ev.watermark...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, ev.data...)
	return append(buf, "\n\n"...)
}

// keepAlive is an SSE comment: clients ignore it, proxies see traffic.
const keepAlive = ": keep-alive\n\n"

// sseReader reads events from a text/event-stream (the parts of the HTML
// spec Skip uses: event, id, data and comments).
type sseReader struct {
	r      *bufio.Reader
	onLine func() // called on every line, comments included (liveness)
}

func newSSEReader(r io.Reader, onLine func()) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), onLine: onLine}
}

// next returns the next event; io.EOF when the stream ends between events.
func (s *sseReader) next() (kind, id string, data []byte, err error) {
	var buf bytes.Buffer
	hasData := false
	size := 0
	for {
		line, err := s.readLine(maxEventBytes - size)
		if err != nil {
			if err == io.EOF && (size > 0 || hasData) {
				err = io.ErrUnexpectedEOF
			}
			return "", "", nil, err
		}
		size += len(line)
		if s.onLine != nil {
			s.onLine()
		}
		if len(line) == 0 {
			if !hasData { // nothing to dispatch (spec: empty data buffer)
				kind, size = "", 0
				continue
			}
			return kind, id, buf.Bytes(), nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			kind = value
		case "id":
			if !strings.ContainsRune(value, 0) {
				id = value
			}
		case "data":
			if hasData {
				buf.WriteByte('\n')
			}
			buf.WriteString(value)
			hasData = true
		}
	}
}

// readLine reads one line without its terminator (\n, \r\n or \r) and
// refuses lines longer than limit.
func (s *sseReader) readLine(limit int) ([]byte, error) {
	var line []byte
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch b {
		case '\n':
			return line, nil
		case '\r':
			if next, err := s.r.Peek(1); err == nil && next[0] == '\n' {
				_, _ = s.r.ReadByte()
			}
			return line, nil
		}
		if len(line) >= limit {
			return nil, errEventTooLarge
		}
		line = append(line, b)
	}
}
