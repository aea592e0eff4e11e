package httpx

import "sync"

const size = 32 << 10 // what ReverseProxy allocates by default

// Pool recycles httputil.ReverseProxy's copy buffers: without a pool every
// proxied response allocates 32 KiB, which shows in the tail latency of the
// router and the sidecar. The zero value is ready to use.
type Pool struct{ pool sync.Pool }

func (p *Pool) Get() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, size)
}

func (p *Pool) Put(b []byte) { p.pool.Put(&b) }
