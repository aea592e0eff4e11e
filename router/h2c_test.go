package router_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/internal/demotest"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/router"
)

// cutter is a follower's listener whose accepted connections the test can
// close at once, the follower living on: a lost connection, not a death.
type cutter struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (c *cutter) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
	}
	return conn, err
}

// cut closes every connection accepted so far and reports how many.
func (c *cutter) cut() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		_ = conn.Close()
	}
	n := len(c.conns)
	c.conns = nil
	return n
}

// The demo followers advertise h2c: every stream and creation a router
// sends one of them shares a connection or two. When those connections are
// lost under 500 open streams, every stream continues (a fresh init from
// the same instance on a new connection, or a move) and no creation made
// meanwhile fails.
func TestLostMultiplexedConnectionCutsNoStreamAndFailsNoCreation(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	lead := startDemo(t, nc, "leader", nil)
	var control, streaming cutter
	victim := demotest.Start(t, func(cfg demo.Config, c, s net.Listener) (*demo.Server, error) {
		control.Listener, streaming.Listener = c, s
		return demo.StartFollower(cfg, &control, &streaming)
	}, demo.Config{Service: svc, ID: "follower-a", NATS: nc, LeaderControl: lead.ControlAddr(), LeaderStreaming: lead.StreamingAddr()})
	followers := []*demo.Server{victim, startDemo(t, nc, "follower-b", lead), startDemo(t, nc, "follower-c", lead)}
	noRebalance := func(c *router.Config) { c.Moves.NoRebalance = true }
	r1, r2 := startRouter(t, url, "r-1", noRebalance), startRouter(t, url, "r-2", noRebalance)
	routers := []*testRouter{r1, r2}
	for _, r := range routers {
		r.waitReady(t, len(followers))
	}

	const n = 500
	clients := openClients(t, followers, routers, n)
	var onVictim []*client
	for _, c := range clients {
		if c.owner == victim {
			onVictim = append(onVictim, c)
		}
	}
	require.NotEmpty(t, onVictim)
	streams := 0.0
	for _, r := range routers {
		conns := metric(t, r, fmt.Sprintf(`headcount_router_upstream_connections{protocol="h2c",service="svc",upstream=%q}`, victim.StreamingAddr()))
		assert.True(t, conns >= 1 && conns <= 2, "%s: %v h2c connections to the victim's streaming port for its streams", r.control.URL, conns)
		assert.Zero(t, metric(t, r, fmt.Sprintf(`headcount_router_upstream_connections{protocol="http/1.1",service="svc",upstream=%q}`, victim.StreamingAddr())))
		streams += metric(t, r, `headcount_router_upstream_h2c_streams{service="svc"}`)
	}
	assert.Equal(t, float64(n), streams, "every stream is multiplexed")

	// Creations keep coming through both routers while the connections go.
	var created, failed atomic.Int64
	stop := make(chan struct{})
	var load sync.WaitGroup
	for _, r := range routers {
		load.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post(r.control.URL+"/v1/streams/collection", "application/json", strings.NewReader(createBody))
				if err != nil || resp.StatusCode != http.StatusCreated {
					failed.Add(1)
				} else {
					created.Add(1)
				}
				if err == nil {
					discardBody(resp)
				}
			}
		})
	}
	require.Positive(t, streaming.cut()+control.cut())
	for _, c := range onVictim {
		require.Equal(t, "init", c.Next(t).Kind, "stream %s continues with a fresh init", c.ID)
	}
	write(t, r1, `[["after-cut",[1]]]`)
	for _, c := range clients {
		c.Until(t, `"after-cut"`)
		assert.True(t, c.Stream.Open())
	}
	close(stop)
	load.Wait()
	assert.Zero(t, failed.Load(), "creations failed while the connections were lost (%d made)", created.Load())
	assert.Positive(t, created.Load())
	resets := 0.0
	for _, r := range routers {
		resets += metric(t, r, `headcount_router_upstream_resets_total{by="upstream",service="svc"}`)
	}
	assert.GreaterOrEqual(t, resets, float64(len(onVictim)), "the lost streams are counted")
	t.Logf("%d streams on the lost connections, %d creations during the loss, %v upstream resets", len(onVictim), created.Load(), resets)
}

func discardBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

// Per follower: one that advertises h2c gets every stream on one
// multiplexed connection, one that does not (an unmodified Skip) gets
// HTTP/1.1, a connection per stream.
func TestUpstreamProtocolFollowsTheReport(t *testing.T) {
	url := natstest.Server(t)
	nc := natstest.Connect(t, url)
	multiplexed, plain := startMember(t, nc, "follower-a", h2c), startMember(t, nc, "follower-b")
	r := startRouter(t, url, "r-1")
	r.waitReady(t, 2)
	addr := strings.TrimPrefix(r.streaming.URL, "http://")
	var streams []*e2e.Stream
	for range 40 {
		st, code := e2e.Subscribe(t, addr, r.create(t))
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "init", st.Next(t).Kind)
		streams = append(streams, st)
	}
	require.Positive(t, multiplexed.open.Load())
	require.Positive(t, plain.open.Load())
	conns := func(m *member, proto string) float64 {
		return metric(t, r, fmt.Sprintf(`headcount_router_upstream_connections{protocol=%q,service="svc",upstream=%q}`,
			proto, m.streaming.Listener.Addr().String()))
	}
	assert.Equal(t, 1.0, conns(multiplexed, "h2c"), "one connection carries the h2c follower's streams")
	assert.Zero(t, conns(multiplexed, "http/1.1"))
	assert.Equal(t, float64(plain.open.Load()), conns(plain, "http/1.1"), "a connection per stream to the HTTP/1.1 follower")
	assert.Zero(t, conns(plain, "h2c"))
	assert.Equal(t, float64(multiplexed.open.Load()), metric(t, r, `headcount_router_upstream_h2c_streams{service="svc"}`))

	// Clients that leave end their multiplexed streams: resets by the router.
	n := multiplexed.open.Load()
	for _, st := range streams {
		st.Close()
	}
	require.Eventually(t, func() bool { return multiplexed.open.Load() == 0 && plain.open.Load() == 0 }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		return metric(t, r, `headcount_router_upstream_resets_total{by="router",service="svc"}`) == float64(n)
	}, 30*time.Second, 10*time.Millisecond, "a reset by the router per stream whose client left")
	assert.Zero(t, metric(t, r, `headcount_router_upstream_resets_total{by="upstream",service="svc"}`))
}
