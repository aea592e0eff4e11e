package callout_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/callout"
	"github.com/headcount-dev/headcount/natsembed"
)

var subjects = fleet.Subjects{Prefix: fleet.DefaultPrefix}

// calloutServer is the NATS configuration of docs/security.md: one nkey
// user for the callout service, every other client delegated to it.
type calloutServer struct{ issuer, authUser string }

func (c calloutServer) ConfigureServer(o *server.Options) error {
	o.Nkeys = []*server.NkeyUser{{Nkey: c.authUser}}
	o.AuthCallout = &server.AuthCallout{Issuer: c.issuer, AuthUsers: []string{c.authUser}}
	return nil
}

// tokens is the test's TokenReview: what the API server would say of each
// token.
type tokens map[string]callout.Review

func (t tokens) Review(_ context.Context, token string) (callout.Review, error) {
	r, ok := t[token]
	if !ok {
		return callout.Review{}, errors.New("token not authenticated")
	}
	return r, nil
}

type fixture struct {
	url string
	svc *callout.Service
}

func start(t *testing.T, reviews callout.TokenReviewer, mutate ...func(*callout.Config)) fixture {
	t.Helper()
	keys := natstest.NewCalloutKeys(t)
	s, err := natsembed.Start(natsembed.Options{Auth: calloutServer{issuer: keys.IssuerPub, authUser: keys.UserPub}})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })

	// The service authenticates as it would in a pod: --nats-nkey <file>.
	opts, err := natsauth.Client{NKey: keys.UserSeedFile}.Options()
	require.NoError(t, err)
	nc := natstest.Connect(t, s.ClientURL(), opts...)
	var bindings []callout.Binding
	for _, b := range []string{"shop/hn-follower=member:hn", "headcount/router=router:hn", "headcount/scaler=reader"} {
		bd, err := callout.ParseBinding(b)
		require.NoError(t, err)
		bindings = append(bindings, bd)
	}
	cfg := callout.Config{Subjects: subjects, Reviewer: reviews, Bindings: bindings, Issuer: keys.Issuer, Logger: slog.New(slog.DiscardHandler)}
	for _, f := range mutate {
		f(&cfg)
	}
	svc, err := callout.Start(nc, cfg)
	require.NoError(t, err)
	t.Cleanup(svc.Close)
	return fixture{url: s.ClientURL(), svc: svc}
}

// pod connects with a projected token, through the flag path: a file.
type pod struct {
	nc *nats.Conn
	natstest.Violations
}

func connectPod(t *testing.T, url, token string) (*pod, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte(token+"\n"), 0o600))
	opts, err := natsauth.Client{TokenFile: file}.Options()
	require.NoError(t, err)
	p := &pod{}
	nc, err := nats.Connect(url, append(opts, p.Option())...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	return p, nil
}

func (p *pod) refused(t *testing.T, subject string) {
	t.Helper()
	p.Refused(t, p.nc, subject)
}

var reviews = tokens{
	"pod-a":    {Namespace: "shop", ServiceAccount: "hn-follower", Pod: "hn-7d9f-aaaaa"},
	"pod-b":    {Namespace: "shop", ServiceAccount: "hn-follower", Pod: "hn-7d9f-bbbbb"},
	"router":   {Namespace: "headcount", ServiceAccount: "router", Pod: "router-1"},
	"scaler":   {Namespace: "headcount", ServiceAccount: "scaler", Pod: "scaler-1"},
	"unbound":  {Namespace: "shop", ServiceAccount: "default", Pod: "web-1"},
	"unpodded": {Namespace: "shop", ServiceAccount: "hn-follower"},
	"dotted":   {Namespace: "shop", ServiceAccount: "hn-follower", Pod: "hn.evil"},
}

func TestOnlyReviewedBoundPodsConnect(t *testing.T) {
	f := start(t, reviews)
	_, err := nats.Connect(f.url)
	require.Error(t, err, "anonymous")
	for _, token := range []string{"forged", "unbound", "unpodded", "dotted"} {
		_, err := connectPod(t, f.url, token)
		require.Error(t, err, token)
	}
	_, err = connectPod(t, f.url, "pod-a")
	require.NoError(t, err)
}

func TestAPodSpeaksOnlyForItself(t *testing.T) {
	f := start(t, reviews)
	scaler, err := connectPod(t, f.url, "scaler")
	require.NoError(t, err)
	heard := natstest.Hear(t, scaler.nc, subjects.Watch(""))
	arrives := func(p *pod, subject string) {
		t.Helper()
		heard.Arrives(t, p.nc, subject)
	}

	a, err := connectPod(t, f.url, "pod-a")
	require.NoError(t, err)
	arrives(a, subjects.Report("hn", "hn-7d9f-aaaaa"))
	for _, subj := range []string{
		subjects.Report("hn", "hn-7d9f-bbbbb"), // the other pod of the same service
		subjects.Report("other", "hn-7d9f-aaaaa"),
		subjects.Placed("hn", "hn-7d9f-aaaaa"),
		subjects.Demand("hn", "hn-7d9f-aaaaa"),
	} {
		a.refused(t, subj)
	}

	router, err := connectPod(t, f.url, "router")
	require.NoError(t, err)
	arrives(router, subjects.Placed("hn", "hn-7d9f-aaaaa"))
	arrives(router, subjects.Demand("hn", "router-1"))
	router.refused(t, subjects.Demand("hn", "router-2"))
	router.refused(t, subjects.Report("hn", "router-1"))
	scaler.refused(t, subjects.Report("hn", "hn-7d9f-aaaaa"))

	select {
	case s := <-heard:
		t.Fatalf("%s reached the scaler", s)
	default:
	}

	// No pod may listen to the callout's requests (they carry tokens).
	_, err = scaler.nc.Subscribe(callout.Subject, func(*nats.Msg) { t.Error("a pod read an authorization request") })
	require.NoError(t, err)
	scaler.Wait(t, callout.Subject)
	_, err = connectPod(t, f.url, "pod-b") // a request goes by
	require.NoError(t, err)
	require.NoError(t, scaler.nc.Flush())
}

func TestBindingsAreParsedStrictly(t *testing.T) {
	b, err := callout.ParseBinding("shop/hn-follower=member:hn")
	require.NoError(t, err)
	require.Equal(t, callout.Binding{Namespace: "shop", ServiceAccount: "hn-follower", Role: natsauth.RoleMember, Service: "hn"}, b)
	for _, bad := range []string{"", "shop=member:hn", "shop/sa", "shop/sa=member", "shop/sa=router", "shop/sa=admin", "shop/sa=member:h.n", "/sa=reader"} {
		_, err := callout.ParseBinding(bad)
		require.Error(t, err, bad)
	}
}

// revocable is a TokenReview whose answers change: a deleted pod's token
// stops passing.
type revocable struct {
	mu      sync.Mutex
	valid   bool
	reviews int
}

func (r *revocable) Review(ctx context.Context, token string) (callout.Review, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reviews++
	if !r.valid {
		return callout.Review{}, errors.New("pod deleted")
	}
	return reviews.Review(ctx, token)
}

func (r *revocable) count() int { r.mu.Lock(); defer r.mu.Unlock(); return r.reviews }

func TestGrantsExpireAndTheTokenIsReviewedAgain(t *testing.T) {
	rev := &revocable{valid: true}
	f := start(t, rev, func(c *callout.Config) { c.TTL = time.Second })
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("pod-a"), 0o600))
	opts, err := natsauth.Client{TokenFile: file}.Options()
	require.NoError(t, err)
	closed := make(chan struct{})
	nc, err := nats.Connect(f.url, append(opts, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(20),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.Eventually(t, func() bool { return rev.count() >= 3 && nc.IsConnected() }, 15*time.Second, 20*time.Millisecond,
		"the grant expired and the reconnect was reviewed again (%d reviews)", rev.count())

	// The pod is deleted: its token fails review, and the next expiry ends it.
	rev.mu.Lock()
	rev.valid = false
	rev.mu.Unlock()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("a revoked token kept its connection")
	}
}

func TestStartNamesTheMissingField(t *testing.T) {
	_, err := callout.Start(nil, callout.Config{})
	require.ErrorContains(t, err, "Config.Reviewer is nil")
}
