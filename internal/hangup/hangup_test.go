package hangup

import (
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/leaktest"
)

// Close ends the epoll goroutine: no test leaves one behind.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// tcpPair is a loopback TCP connection: the server's end has a file descriptor.
func tcpPair(t *testing.T) (server, client net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

func pipePair(t *testing.T) (server, client net.Conn) {
	server, client = net.Pipe()
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

func newWatcher(t *testing.T) *Watcher {
	w := New(slog.New(slog.DiscardHandler))
	t.Cleanup(w.Close)
	return w
}

// watching reports whether w's epoll set holds a connection.
func (w *Watcher) watching() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.gone)
}

// notices waits for a hang-up to be reported, after checking none is
// reported before the client leaves.
func notices(t *testing.T, gone <-chan struct{}, leave func()) {
	t.Helper()
	select {
	case <-gone:
		t.Fatal("hang-up before the client left")
	case <-time.After(50 * time.Millisecond):
	}
	leave()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the client's hang-up went unnoticed")
	}
}

// A hang-up is noticed both ways: by the epoll set for TCP connections
// (Linux), and by a goroutine reading a connection that has no file
// descriptor (the path of every connection elsewhere).
func TestHangupIsNoticed(t *testing.T) {
	for name, tc := range map[string]struct {
		pair  func(*testing.T) (net.Conn, net.Conn)
		epoll bool
	}{
		"tcp": {tcpPair, runtime.GOOS == "linux"}, "no file descriptor": {pipePair, false},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWatcher(t)
			server, client := tc.pair(t)
			gone := make(chan struct{})
			stop := w.Watch(server, func() { close(gone) })
			defer stop()
			assert.Equal(t, tc.epoll, w.watching() == 1, "watched by the epoll set")
			notices(t, gone, func() { require.NoError(t, client.Close()) })
			assert.Zero(t, w.watching(), "a hang-up is reported once and forgotten")
		})
	}
}

// Close ends the epoll goroutine (TestMain checks), and a connection still
// watched then is handed to a goroutine of its own: its hang-up is still
// noticed.
func TestCloseHandsOverWatchedConnections(t *testing.T) {
	w := New(slog.New(slog.DiscardHandler))
	server, client := tcpPair(t)
	gone := make(chan struct{})
	stop := w.Watch(server, func() { close(gone) })
	defer stop()
	w.Close()
	assert.Zero(t, w.watching())
	notices(t, gone, func() { require.NoError(t, client.Close()) })

	// Watched after Close: a goroutine too.
	server2, client2 := tcpPair(t)
	gone2 := make(chan struct{})
	defer w.Watch(server2, func() { close(gone2) })()
	notices(t, gone2, func() { require.NoError(t, client2.Close()) })
}

// A stopped watch reports nothing when the connection closes.
func TestStopEndsTheWatch(t *testing.T) {
	w := newWatcher(t)
	server, client := tcpPair(t)
	called := make(chan struct{}, 1)
	w.Watch(server, func() { called <- struct{}{} })()
	require.NoError(t, client.Close())
	select {
	case <-called:
		t.Fatal("a stopped watch reported a hang-up")
	case <-time.After(100 * time.Millisecond):
	}
}
