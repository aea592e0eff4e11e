package router

import (
	"io"
	"net"
)

// watchHangup calls gone once the client on c hangs up or its connection
// fails, and returns the function that ends the watch, to call before c is
// closed. On Linux one epoll goroutine watches every stream's client
// (hangup_linux.go); elsewhere, and for connections without a file
// descriptor, a goroutine per stream reads c until it fails.
func watchHangup(c net.Conn, gone func()) (stop func()) {
	if stop, ok := watchHangupFD(c, gone); ok {
		return stop
	}
	go func() {
		// A stream's client sends nothing more: whatever it does is discarded.
		_, _ = io.Copy(io.Discard, c)
		gone()
	}()
	return func() {}
}
