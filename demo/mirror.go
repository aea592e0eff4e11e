package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/headcount-dev/headcount/internal/httpx"
)

// backoff doubles a wait from min to max; reset after a success. The max is
// short: a follower is back within about a second of its leader's restart.
type backoff struct{ next, min, max time.Duration }

func newBackoff() *backoff {
	return &backoff{next: 100 * time.Millisecond, min: 100 * time.Millisecond, max: time.Second}
}

func (b *backoff) reset() { b.next = b.min }

// sleep waits the current delay, or until ctx is done (false).
func (b *backoff) sleep(ctx context.Context) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(2*b.next, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// awaitLeader makes the follower ready once the leader answers on both ports.
func (s *Server) awaitLeader() {
	b := newBackoff()
	for {
		err := s.leaderHealthy()
		if err == nil {
			s.markReady()
			s.log.Info("leader reached, ready", "leader", s.cfg.LeaderControl)
			return
		}
		s.log.Debug("leader not reached yet", "err", err)
		if !b.sleep(s.ctx) {
			return
		}
	}
}

func (s *Server) leaderHealthy() error {
	for _, addr := range []string{s.cfg.LeaderControl, s.cfg.LeaderStreaming} {
		resp, err := s.leaderRequest(s.ctx, http.MethodGet, "http://"+addr+"/v1/healthcheck", nil)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
	}
	return nil
}

// leaderRequest sends a bounded request to the leader and fails on any
// status other than 2xx.
func (s *Server) leaderRequest(ctx context.Context, method, url string, body []byte) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = httpx.CancelOnClose{ReadCloser: resp.Body, Cancel: cancel}
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s %s", method, url, resp.Status, bytes.TrimSpace(msg))
	}
	return resp, nil
}

// openMirror is a follower's computation of a collection: a feed kept equal
// to the leader's by following an instance of the leader's "collection"
// resource, reconnecting with backoff when the leader goes away.
func (s *Server) openMirror(collection string) (*feed, func(), error) {
	f := newFeed()
	ctx, cancel := context.WithCancel(s.ctx)
	go func() {
		b := newBackoff()
		for {
			err := s.follow(ctx, collection, f, b)
			if ctx.Err() != nil {
				return
			}
			s.metrics.reconnects.Inc()
			s.log.Warn("leader stream lost, reconnecting", "collection", collection, "err", err)
			if !b.sleep(ctx) {
				return
			}
		}
	}()
	return f, cancel, nil
}

// follow creates an instance on the leader and applies its stream to f until
// the stream ends; it deletes the leader's instance on the way out.
func (s *Server) follow(ctx context.Context, collection string, f *feed, b *backoff) error {
	params, _ := json.Marshal(map[string]string{"name": collection})
	resp, err := s.leaderRequest(ctx, http.MethodPost, "http://"+s.cfg.LeaderControl+"/v1/streams/"+resourceCollection, params)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	id := strings.TrimSpace(string(raw))
	defer s.deleteUpstream(id)

	// The stream lives as long as ctx, unless the leader falls silent: it
	// sends a keep-alive every period (Skip: every 30 s), so 4 periods of
	// silence mean a dead connection.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := 4 * s.cfg.KeepAlive
	watchdog := time.AfterFunc(idle, cancel)
	defer watchdog.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.cfg.LeaderStreaming+"/v1/streams/"+id, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err = s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET stream %s: %s", id, resp.Status)
	}
	events := newSSEReader(resp.Body, func() { watchdog.Reset(idle) })
	for {
		kind, wm, data, err := events.next()
		if err != nil {
			return fmt.Errorf("stream %s: %w", id, err)
		}
		if kind != "init" && kind != "update" {
			continue
		}
		entries, err := parseEntries(data)
		if err != nil {
			return fmt.Errorf("stream %s: %s event: %w", id, kind, err)
		}
		f.sync(entries, wm, kind == "init")
		if kind == "init" {
			b.reset()
		}
	}
}

// deleteUpstream frees the leader's instance at once instead of after its TTL.
func (s *Server) deleteUpstream(id string) {
	resp, err := s.leaderRequest(context.Background(), http.MethodDelete, "http://"+s.cfg.LeaderControl+"/v1/streams/"+id, nil)
	if err != nil {
		s.log.Debug("leader instance not deleted", "id", id, "err", err)
		return
	}
	_ = resp.Body.Close()
}
