package router

import "syscall"

// readable is a syscall.RawConn.Read callback: false, to wait in the poller,
// while a peek finds nothing to read.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
