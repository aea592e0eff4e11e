// Package verify confirms, before a follower gets traffic, that the control
// address its report advertises answers as that follower and incarnation:
// a report cannot send a router's creations to someone else's address, nor
// replace an incarnation that still answers. It serves a fleet.View's probes.
package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/headcount-dev/headcount/fleet"
)

// Config tunes the prober; zero values take the defaults.
type Config struct {
	Timeout time.Duration // one probe, dial included; default 2 s
	Workers int           // probes at once; default 8
}

// DefaultConfig is the prober's defaults, the flags' included.
func DefaultConfig() Config { return Config{Timeout: 2 * time.Second, Workers: 8} }

// Prober checks identities over HTTP.
type Prober struct {
	cfg    Config
	client *http.Client
}

// New returns a prober. Its client ignores proxy settings and redirects: the
// answer must come from the advertised address itself.
func New(cfg Config) *Prober {
	def := DefaultConfig()
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.Workers <= 0 {
		cfg.Workers = def.Workers
	}
	return &Prober{cfg: cfg, client: &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            (&net.Dialer{Timeout: cfg.Timeout}).DialContext,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 8 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Run serves view's probes until ctx ends; it returns at once if the view
// verifies nothing.
func (p *Prober) Run(ctx context.Context, view *fleet.View) {
	probes := view.Probes()
	if probes == nil {
		return
	}
	done := make(chan struct{})
	for range p.cfg.Workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-ctx.Done():
					return
				case pr := <-probes:
					view.Verified(pr, p.Check(ctx, pr), time.Now())
				}
			}
		}()
	}
	for range p.cfg.Workers {
		<-done
	}
}

// Check returns nil when pr.Control answers as pr's incarnation and the
// incumbent, if any, no longer answers as itself at its address.
func (p *Prober) Check(ctx context.Context, pr fleet.Probe) error {
	id, err := p.ask(ctx, pr.Control)
	if err != nil {
		return err
	}
	if id.Service != pr.Service || id.Follower != pr.Follower || id.Incarnation != pr.Incarnation {
		return fmt.Errorf("%s answers as %s/%s incarnation %s", pr.Control, id.Service, id.Follower, id.Incarnation)
	}
	if inc := pr.Incumbent; inc != nil {
		if old, err := p.ask(ctx, inc.Control); err == nil &&
			old.Service == pr.Service && old.Follower == pr.Follower && old.Incarnation == inc.Incarnation {
			return errors.New("the incarnation it would replace still answers at " + inc.Control)
		}
	}
	return nil
}

// ask fetches the identity at addr with a fresh nonce, which it must echo.
func (p *Prober) ask(ctx context.Context, addr string) (fleet.Identity, error) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	nonce := hex.EncodeToString(raw[:])
	u := url.URL{Scheme: "http", Host: addr, Path: fleet.IdentityPath, RawQuery: "nonce=" + nonce}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fleet.Identity{}, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fleet.Identity{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fleet.Identity{}, fmt.Errorf("%s answered %s to the identity probe", addr, resp.Status)
	}
	var id fleet.Identity
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err == nil {
		err = json.Unmarshal(body, &id)
	}
	if err != nil {
		return fleet.Identity{}, fmt.Errorf("%s: identity unreadable: %w", addr, err)
	}
	if id.Nonce != nonce {
		return fleet.Identity{}, fmt.Errorf("%s did not echo the probe's nonce", addr)
	}
	return id, nil
}
