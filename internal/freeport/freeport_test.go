package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPortIsFreeAndBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		p, err := Port("127.0.0.1")
		require.NoError(t, err)
		if low-floor >= 1000 {
			assert.GreaterOrEqual(t, p, floor)
			assert.Less(t, p, low)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		require.NoError(t, err, "port %d", p)
		_ = ln.Close()
	}
}

func TestPortSkipsOneInUse(t *testing.T) {
	taken := map[int]net.Listener{}
	t.Cleanup(func() {
		for _, ln := range taken {
			_ = ln.Close()
		}
	})
	for range 50 {
		p, err := Port("127.0.0.1")
		require.NoError(t, err)
		require.NotContains(t, taken, p, "a port handed out is still in use")
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		require.NoError(t, err)
		taken[p] = ln
	}
}

// Two pickers in one process (up's children start concurrently) never get
// the same port, even when the first has not bound it yet.
func TestPortIsNotHandedOutTwice(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		ports, err := Ports("127.0.0.1", 2)
		require.NoError(t, err)
		for _, p := range ports {
			require.False(t, seen[p], "port %s handed out twice", p)
			seen[p] = true
		}
	}
}
