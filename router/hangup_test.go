package router

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A client's hang-up is noticed both ways: by the epoll set for TCP
// connections (Linux), and by a goroutine reading connections that have no
// file descriptor (and every connection elsewhere).
func TestHangupIsNoticed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server, err := ln.Accept()
	require.NoError(t, err)
	defer server.Close()
	pipeServer, pipeClient := net.Pipe()
	defer pipeServer.Close()

	for name, c := range map[string]struct{ server, client net.Conn }{
		"tcp": {server, client}, "no file descriptor": {pipeServer, pipeClient},
	} {
		t.Run(name, func(t *testing.T) {
			gone := make(chan struct{})
			stop := watchHangup(c.server, func() { close(gone) })
			defer stop()
			select {
			case <-gone:
				t.Fatal("hang-up before the client left")
			case <-time.After(50 * time.Millisecond):
			}
			require.NoError(t, c.client.Close())
			select {
			case <-gone:
			case <-time.After(2 * time.Second):
				t.Fatal("the client's hang-up went unnoticed")
			}
		})
	}
}
