package holdproxy

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A connection made while the target is down waits in the proxy and goes
// through once the target listens; the target's end is the client's.
func TestHoldsAConnectionUntilTheTargetListens(t *testing.T) {
	// A port that refuses: taken, then freed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	target := ln.Addr().String()
	require.NoError(t, ln.Close())

	front, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := Start(front, target, time.Minute, slog.New(slog.DiscardHandler))
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err, "accepted while the target is down")
	defer func() { _ = c.Close() }()
	_, err = c.Write([]byte("hello\n"))
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond) // several refused dials

	back, err := net.Listen("tcp", target)
	require.NoError(t, err)
	defer func() { _ = back.Close() }()
	s, err := back.Accept()
	require.NoError(t, err)
	line, err := bufio.NewReader(s).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hello\n", line, "what the client sent while held")
	_, err = s.Write([]byte("world\n"))
	require.NoError(t, err)
	r := bufio.NewReader(c)
	line, err = r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "world\n", line)

	require.NoError(t, s.Close()) // the leader dies: its follower sees it
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = r.ReadByte()
	require.ErrorIs(t, err, io.EOF)
}

// Past the hold, a connection to a target still down is closed.
func TestClosesAConnectionHeldPastItsBound(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	target := ln.Addr().String()
	require.NoError(t, ln.Close())
	front, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := Start(front, target, 200*time.Millisecond, slog.New(slog.DiscardHandler))
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
}
