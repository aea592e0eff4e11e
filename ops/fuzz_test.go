package ops_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/ops"
)

// Whatever bytes a client sends, a handler behind the hardening sees only
// clean paths and no body on GET, and every error answer is JSON.
func FuzzHardenedServer(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/streams/a/b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/streams/../../etc HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET //x HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /v1/streams/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
		"GET /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"GET http://evil/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"GARBAGE\r\n\r\n",
		"GET /x HTTP/9.9\r\n\r\n",
	} {
		f.Add(seed)
	}
	bad := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p != "/" && (path.Clean(p) != p || strings.HasSuffix(p, "/")) || (r.Method == http.MethodGet && r.ContentLength != 0) {
			select {
			case bad <- r.Method + " " + r.RequestURI:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, r.Body)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	limits := ops.HTTPLimits{ReadHeaderTimeout: 200 * time.Millisecond, BodyTimeout: 200 * time.Millisecond}
	go func() { done <- ops.Serve(ctx, ops.NewServer(h, limits, nil), ln, time.Second) }()
	f.Cleanup(func() { cancel(); <-done })

	f.Fuzz(func(t *testing.T, req string) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.WriteString(c, req)
		// Nothing more is coming: the server sees the end at once instead of
		// waiting out its header or body timeout on a truncated request.
		_ = c.(*net.TCPConn).CloseWrite()
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			_ = resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode >= 400 && ct != "application/json" {
				t.Errorf("%d answered as %q", resp.StatusCode, ct)
			}
		}
		select {
		case got := <-bad:
			t.Errorf("the handler saw %q", got)
		default:
		}
	})
}
