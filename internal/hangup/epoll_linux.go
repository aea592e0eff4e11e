package hangup

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// epoll is the set of watched connections, each watched once for a hang-up
// or an error (EPOLLONESHOT). Events carry a token rather than the file
// descriptor, which a closed connection's successor may reuse; token 0 is
// the eventfd that wakes the wait for Close.
type epoll struct {
	fd, wakeFD int
}

func newEpoll() (*epoll, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakeFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err == nil {
		err = unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wakeFD, &unix.EpollEvent{Events: unix.EPOLLIN})
		if err != nil {
			_ = unix.Close(wakeFD)
		}
	}
	if err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return &epoll{fd: fd, wakeFD: wakeFD}, nil
}

// add watches c under token; false when c has no file descriptor.
func (e *epoll) add(c net.Conn, token uint64) bool {
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLONESHOT,
		Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	return e.ctl(c, unix.EPOLL_CTL_ADD, &ev) == nil
}

func (e *epoll) remove(c net.Conn) { _ = e.ctl(c, unix.EPOLL_CTL_DEL, nil) }

func (e *epoll) ctl(c net.Conn, op int, ev *unix.EpollEvent) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.ErrUnsupported
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := raw.Control(func(fd uintptr) { cerr = unix.EpollCtl(e.fd, op, int(fd), ev) }); err != nil {
		return err
	}
	return cerr
}

// wait reports each hang-up's token until wake is called (nil) or the set
// fails.
func (e *epoll) wait(hungUp func(token uint64)) error {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(e.fd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if token == 0 {
				return nil
			}
			hungUp(token)
		}
	}
}

// wake ends wait.
func (e *epoll) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(e.wakeFD, one[:])
}

func (e *epoll) close() {
	_ = unix.Close(e.wakeFD)
	_ = unix.Close(e.fd)
}
