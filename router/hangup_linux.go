package router

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// hangups is the process's one epoll set of hijacked client connections,
// watched for a hang-up or an error only (never for data), each once
// (EPOLLONESHOT). Events carry a token rather than the file descriptor,
// which a closed connection's successor may reuse.
var hangups struct {
	once sync.Once
	epfd int
	err  error
	dead atomic.Bool // its goroutine failed

	mu   sync.Mutex
	last uint64
	gone map[uint64]func()
}

func watchHangupFD(c net.Conn, gone func()) (func(), bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	hangups.once.Do(startHangups)
	if hangups.err != nil || hangups.dead.Load() {
		return nil, false
	}
	hangups.mu.Lock()
	hangups.last++
	token := hangups.last
	hangups.gone[token] = gone
	hangups.mu.Unlock()
	forget := func() {
		hangups.mu.Lock()
		delete(hangups.gone, token)
		hangups.mu.Unlock()
	}
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLONESHOT,
		Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	ctl := func(op int, ev *unix.EpollEvent) error {
		var cerr error
		if err := raw.Control(func(fd uintptr) { cerr = unix.EpollCtl(hangups.epfd, op, int(fd), ev) }); err != nil {
			return err
		}
		return cerr
	}
	if err := ctl(unix.EPOLL_CTL_ADD, &ev); err != nil {
		forget()
		return nil, false
	}
	return func() {
		forget()
		_ = ctl(unix.EPOLL_CTL_DEL, nil)
	}, true
}

func startHangups() {
	hangups.gone = map[uint64]func(){}
	hangups.epfd, hangups.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if hangups.err != nil {
		slog.Warn("no epoll for client hang-ups: one goroutine per stream instead", "err", hangups.err)
		return
	}
	go func() {
		events := make([]unix.EpollEvent, 256)
		for {
			n, err := unix.EpollWait(hangups.epfd, events, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				// Streams watched so far end when a write to their client fails.
				slog.Error("epoll of client hang-ups failed: one goroutine per stream from now on", "err", err)
				hangups.dead.Store(true)
				return
			}
			for _, ev := range events[:n] {
				token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				hangups.mu.Lock()
				gone := hangups.gone[token]
				delete(hangups.gone, token)
				hangups.mu.Unlock()
				if gone != nil {
					gone()
				}
			}
		}
	}()
}
