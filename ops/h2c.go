package ops

import "net/http"

// MaxStreamsPerConn is how many concurrent streams a ServeH2C server allows
// one HTTP/2 connection: a router carries every stream it holds on a
// follower over one connection (issue #23), so thousands, not HTTP/2's
// usual 100–250; a client beyond it opens another connection.
const MaxStreamsPerConn = 1 << 14

// ServeH2C makes srv serve HTTP/2 over cleartext with prior knowledge beside
// HTTP/1.1 on the same port. Its receive windows suit many small creations
// in flight at once on one connection; SSE responses flow the other way.
func ServeH2C(srv *http.Server) {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams:          MaxStreamsPerConn,
		MaxReceiveBufferPerConnection: 16 << 20,
		MaxReceiveBufferPerStream:     1 << 20,
	}
}
