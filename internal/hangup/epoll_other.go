//go:build !linux

package hangup

import (
	"errors"
	"net"
)

// epoll does not exist here: every connection gets a goroutine.
type epoll struct{}

func newEpoll() (*epoll, error) { return nil, errors.ErrUnsupported }

func (*epoll) add(net.Conn, uint64) bool { return false }
func (*epoll) remove(net.Conn)           {}
func (*epoll) wait(func(uint64)) error   { return nil }
func (*epoll) wake()                     {}
func (*epoll) close()                    {}
