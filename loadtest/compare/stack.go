package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/ops"
	"github.com/headcount-dev/headcount/router"
)

const service = "demo"

// stack is everything under test, in this process, on loopback: an embedded
// NATS, the demo leader and followers, and headcount routers. Each member has
// its own NATS connection, as separate processes would.
type stack struct {
	nats      *natsserver.Server
	conns     []*nats.Conn
	leader    *demo.Server
	followers []*demo.Server
	routers   []*routerServer
}

// routerServer is one router replica with its two HTTP listeners.
type routerServer struct {
	rt                    *router.Router
	view                  *fleet.View
	watcher               *fleet.Watcher
	control, streaming    *http.Server
	controlURL, streamURL string
}

func startStack(followers, routers int, instanceTTL time.Duration, log *slog.Logger) (_ *stack, err error) {
	s := &stack{}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if s.nats, err = natsembed.Start(natsembed.Options{}); err != nil {
		return nil, err
	}
	cfg := func(id string) (demo.Config, error) {
		nc, err := s.connect("headcount-" + id)
		return demo.Config{Service: service, ID: id, NATS: nc, InstanceTTL: instanceTTL, Logger: log}, err
	}
	c, err := cfg("leader")
	if err != nil {
		return nil, err
	}
	if s.leader, err = demo.StartLoopback(demo.StartLeader, c); err != nil {
		return nil, err
	}
	for i := range followers {
		if c, err = cfg(fmt.Sprintf("follower-%d", i+1)); err != nil {
			return nil, err
		}
		c.LeaderControl, c.LeaderStreaming = s.leader.ControlAddr(), s.leader.StreamingAddr()
		f, err := demo.StartLoopback(demo.StartFollower, c)
		if err != nil {
			return nil, err
		}
		s.followers = append(s.followers, f)
	}
	for i := range routers {
		r, err := s.startRouter(fmt.Sprintf("r-%d", i+1), log)
		if err != nil {
			return nil, err
		}
		s.routers = append(s.routers, r)
	}
	return s, s.awaitReady(10 * time.Second)
}

func (s *stack) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(s.nats.ClientURL(), nats.Name(name))
	if err == nil {
		s.conns = append(s.conns, nc)
	}
	return nc, err
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func (s *stack) startRouter(id string, log *slog.Logger) (*routerServer, error) {
	nc, err := s.connect("headcount-router-" + id)
	if err != nil {
		return nil, err
	}
	// One watcher per router process, as `headcount router` composes it.
	view := fleet.NewView()
	w, err := fleet.Watch(nc, view, fleet.WatchConfig{Services: []string{service}, Self: id, Logger: log})
	if err != nil {
		return nil, err
	}
	cfg := router.DefaultConfig()
	cfg.Service, cfg.ID, cfg.Logger = service, id, log
	rt, err := router.New(nc, view, cfg)
	if err != nil {
		w.Close()
		return nil, err
	}
	w.OnChange(rt.Changed)
	r := &routerServer{rt: rt, view: view, watcher: w}
	serve := func(h http.Handler) (*http.Server, string, error) {
		ln, err := listen()
		if err != nil {
			return nil, "", err
		}
		// Hardened as in production, so that the comparison measures it.
		srv := ops.NewServer(h, ops.HTTPLimits{}, log)
		go func() { _ = srv.Serve(ops.GuardListener(ln)) }()
		return srv, "http://" + ln.Addr().String(), nil
	}
	if r.control, r.controlURL, err = serve(rt.Control()); err == nil {
		r.streaming, r.streamURL, err = serve(rt.Streaming())
	}
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *routerServer) close() {
	r.rt.Close()
	r.watcher.Close()
	for _, srv := range []*http.Server{r.control, r.streaming} {
		if srv != nil {
			_ = srv.Close()
		}
	}
}

// awaitReady waits until every follower is ready and every router sees them.
func (s *stack) awaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ready := true
		for _, f := range s.followers {
			ready = ready && f.Agent().Report().State == fleet.StateReady
		}
		for _, r := range s.routers {
			ready = ready && r.view.Totals(service).Ready == len(s.followers)
		}
		if ready {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("followers or routers not ready in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instances is the live instance count of each follower, from its agent.
func (s *stack) instances() []int64 {
	n := make([]int64, len(s.followers))
	for i, f := range s.followers {
		n[i] = f.Agent().Report().Instances
	}
	return n
}

// awaitIdle waits until no follower holds an instance, so that one
// scenario's leftovers do not weigh on the next.
func (s *stack) awaitIdle(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var total int64
		for _, n := range s.instances() {
			total += n
		}
		if total == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d instances still live: %w", total, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *stack) stop() {
	for _, r := range s.routers {
		r.close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no waiting for instances: the run is over
	for _, f := range s.followers {
		_ = f.Shutdown(ctx)
	}
	if s.leader != nil {
		_ = s.leader.Shutdown(ctx)
	}
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
}
