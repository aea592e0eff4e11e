package sidecar_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
)

// seen counts what reached the follower, its health checks aside.
func (u *skipish) seen() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, p := range u.paths {
		if !strings.HasSuffix(p, "/v1/healthcheck") {
			n++
		}
	}
	return n
}

// Garbage on either port of the sidecar is a JSON 4xx and never reaches the
// follower behind it; the identity probe is the sidecar's own.
func TestGarbageNeverReachesTheFollowerBehindASidecar(t *testing.T) {
	f := newFixture(t, options{prefix: "f1"})
	before := f.up.seen()
	id := "/v1/streams/f1/00000000-0000-0000-0000-000000000000"
	rows := []struct {
		name, addr, req string
		code            int
	}{
		{"dot-dot path", f.stream, "GET /v1/streams/../../etc HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"double slash", f.control, "POST //v1/streams/posts HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400},
		{"absolute target", f.stream, "GET http://127.0.0.1:1" + id + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"GET with a 100 MiB body", f.stream, "GET " + id + " HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n" + strings.Repeat("x", 64<<10), 400},
		{"DELETE with a body", f.control, "DELETE " + id + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"64 KiB header", f.control, "POST /v1/streams/posts HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\nContent-Length: 2\r\n\r\n{}", 431},
		{"2 MiB header", f.stream, "GET " + id + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", 431},
		// At least 14 bytes: with h2c served beside HTTP/1.1, Go's server
		// waits for that much to tell an HTTP/2 preface ("PRI * HTTP/2.0")
		// from a request line; a shorter one is answered at ReadHeaderTimeout.
		{"malformed request", f.control, "GARBAGE GARBAGE\r\n\r\n", 400},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			resp := e2e.Raw(t, row.addr, row.req)
			defer resp.Body.Close()
			assert.Equal(t, row.code, resp.StatusCode)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var body struct{ Reason string }
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.NotEmpty(t, body.Reason)
		})
	}
	resp := e2e.Raw(t, f.control, "GET "+fleet.IdentityPath+"?nonce=00112233445566778899aabbccddeeff HTTP/1.1\r\nHost: x\r\n\r\n")
	defer resp.Body.Close()
	var ident fleet.Identity
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ident))
	assert.Equal(t, fleet.Identity{Service: "svc", Follower: "f1", Incarnation: f.sc.Agent().Incarnation(),
		Nonce: "00112233445566778899aabbccddeeff"}, ident)
	assert.Equal(t, before, f.up.seen(), "nothing reached the follower")
}
