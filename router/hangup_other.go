//go:build !linux

package router

import "net"

func watchHangupFD(net.Conn, func()) (func(), bool) { return nil, false }
