package natsauth_test

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/operator"
	"github.com/headcount-dev/headcount/natsembed"
)

var subjects = fleet.Subjects{Prefix: fleet.DefaultPrefix}

// authServer runs an embedded NATS that trusts only a fresh authority.
func authServer(t *testing.T) (*operator.Authority, string) {
	t.Helper()
	auth, err := operator.New(subjects)
	require.NoError(t, err)
	s, err := natsembed.Start(natsembed.Options{Auth: auth})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return auth, s.ClientURL()
}

// client is a connection of one identity that records the permission
// violations the server reports to it.
type client struct {
	nc *nats.Conn
	natstest.Violations
}

func connectAs(t *testing.T, auth *operator.Authority, url string, id natsauth.Identity) *client {
	t.Helper()
	creds, err := auth.Issue(id)
	require.NoError(t, err)
	c := &client{}
	c.nc = natstest.Connect(t, url, creds.Option(), c.Option())
	return c
}

func TestAnonymousAndForeignClientsAreRefused(t *testing.T) {
	_, url := authServer(t)
	_, err := nats.Connect(url)
	require.Error(t, err, "anonymous connect")
	require.ErrorContains(t, err, "Authorization Violation")

	// Credentials from another authority (an attacker's own operator).
	other, err := operator.New(subjects)
	require.NoError(t, err)
	creds, err := other.Issue(natsauth.Identity{Role: natsauth.RoleReader})
	require.NoError(t, err)
	_, err = nats.Connect(url, creds.Option())
	require.Error(t, err, "a user JWT signed by an untrusted account")
}

func TestAFollowerSpeaksOnlyForItself(t *testing.T) {
	auth, url := authServer(t)
	reader := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleReader})
	var mu sync.Mutex
	got := map[string]int{}
	_, err := reader.nc.Subscribe(subjects.Watch(""), func(m *nats.Msg) {
		mu.Lock()
		got[m.Subject]++
		mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, reader.nc.Flush())

	f1 := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleMember, Service: "hn", Name: "follower-1"})
	forged := []string{
		subjects.Report("hn", "follower-2"),    // another follower's report (or its `gone`)
		subjects.Report("other", "follower-1"), // another service's
		subjects.Placed("hn", "follower-1"),
		subjects.Demand("hn", "follower-1"),
		subjects.RollCall("hn"),
		"headcount.hn.moved.follower-1",
		"headcount.hn.moving.follower-1",
	}
	for _, subj := range forged {
		require.NoError(t, f1.nc.Publish(subj, []byte(`{"v":1}`)))
	}
	for _, subj := range forged {
		f1.Wait(t, subj)
	}
	// Reading other followers' reports (to learn an incarnation) is refused too.
	_, err = f1.nc.Subscribe(subjects.Watch("hn"), func(*nats.Msg) {})
	require.NoError(t, err)
	f1.Wait(t, subjects.Watch("hn"))

	// Its own report goes through; and it hears its service's roll call.
	rollcalls := make(chan string, 4)
	_, err = f1.nc.Subscribe(subjects.RollCall("hn"), func(m *nats.Msg) { rollcalls <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, f1.nc.Flush())
	own := subjects.Report("hn", "follower-1")
	require.NoError(t, f1.nc.Publish(own, []byte(`{"v":1}`)))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return got[own] == 1 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, reader.nc.Publish(subjects.RollCall("hn"), nil))
	require.Equal(t, subjects.RollCall("hn"), <-rollcalls)

	mu.Lock()
	defer mu.Unlock()
	for _, subj := range forged {
		if subj != subjects.RollCall("hn") {
			require.Zero(t, got[subj], "%s reached a reader", subj)
		}
	}
}

func TestRoutersAndReadersDoTheirJobOnly(t *testing.T) {
	auth, url := authServer(t)
	reader := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleReader})
	msgs := make(chan string, 16)
	_, err := reader.nc.Subscribe(subjects.Watch(""), func(m *nats.Msg) { msgs <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, reader.nc.Flush())
	// Roll calls reach the members.
	member := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleMember, Service: "hn", Name: "follower-1"})
	for _, subj := range []string{subjects.RollCall("hn"), subjects.RollCall("")} {
		_, err = member.nc.Subscribe(subj, func(m *nats.Msg) { msgs <- m.Subject })
		require.NoError(t, err)
	}
	require.NoError(t, member.nc.Flush())

	r1 := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleRouter, Service: "hn", Name: "r-1"})
	// A router hears its service's roll calls: it answers them with its moved ids.
	recalls := make(chan string, 4)
	_, err = r1.nc.Subscribe(subjects.RollCall("hn"), func(m *nats.Msg) { recalls <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, r1.nc.Flush())
	allowed := []string{subjects.Placed("hn", "follower-1"), subjects.Demand("hn", "r-1"), "headcount.hn.moved.r-1", "headcount.hn.moving.r-1", subjects.RollCall("hn")}
	for _, subj := range allowed {
		require.NoError(t, r1.nc.Publish(subj, []byte("{}")))
		select {
		case got := <-msgs:
			require.Equal(t, subj, got)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s did not arrive", subj)
		}
	}
	for _, subj := range []string{subjects.Demand("hn", "r-2"), subjects.Report("hn", "r-1"), subjects.Placed("other", "f"), "headcount.hn.moved.r-2", "headcount.hn.moving.r-2", subjects.RollCall(""), subjects.RollCall("other")} {
		require.NoError(t, r1.nc.Publish(subj, []byte("{}")))
		r1.Wait(t, subj)
	}
	for _, subj := range []string{subjects.Report("hn", "x"), subjects.Demand("hn", "x"), subjects.Placed("hn", "x")} {
		require.NoError(t, reader.nc.Publish(subj, []byte("{}")))
		reader.Wait(t, subj)
	}
	for _, subj := range []string{subjects.RollCall(""), subjects.RollCall("hn")} {
		require.NoError(t, reader.nc.Publish(subj, nil), "readers call the roll")
		require.Equal(t, subj, <-msgs)
	}
	select {
	case got := <-recalls:
		require.Equal(t, subjects.RollCall("hn"), got)
	case <-time.After(5 * time.Second):
		t.Fatal("the router did not hear its service's roll call")
	}

	// The decider (up's supervisor) announces decisions; readers hear them;
	// nobody else may announce one.
	decision := "headcount.hn.decision"
	_, err = reader.nc.Subscribe(decision, func(m *nats.Msg) { msgs <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, reader.nc.Flush())
	decider := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleDecider, Service: "hn"})
	require.NoError(t, decider.nc.Publish(decision, []byte("{}")))
	require.Equal(t, decision, <-msgs)
	for _, c := range []*client{member, r1, reader} {
		require.NoError(t, c.nc.Publish(decision, []byte("{}")))
		c.Wait(t, decision)
	}
	require.NoError(t, decider.nc.Publish("headcount.other.decision", []byte("{}")))
	decider.Wait(t, "headcount.other.decision")
}

func TestIdentitiesThatWouldWidenTheGrantAreRefused(t *testing.T) {
	auth, err := operator.New(subjects)
	require.NoError(t, err)
	for _, id := range []natsauth.Identity{
		{Role: natsauth.RoleMember, Service: "hn", Name: "*"},
		{Role: natsauth.RoleMember, Service: "hn", Name: "a.b"},
		{Role: natsauth.RoleMember, Service: ">", Name: "a"},
		{Role: natsauth.RoleRouter, Service: "hn"},
		{Role: natsauth.RoleReader, Service: "a.*"},
		{Role: natsauth.RoleDecider},
		{Role: "admin"},
	} {
		_, err := auth.Issue(id)
		require.Error(t, err, "%+v", id)
	}
}

// A revoked credential's connection is cut and it cannot connect again;
// other credentials, a new one for the same name included, are unaffected,
// and revocations accumulate.
func TestRevokedCredentialsAreCutAndRefused(t *testing.T) {
	auth, err := operator.New(subjects)
	require.NoError(t, err)
	s, err := natsembed.Start(natsembed.Options{Auth: auth})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	url := s.ClientURL()
	issue := func(name string) natsauth.Credentials {
		c, err := auth.Issue(natsauth.Identity{Role: natsauth.RoleMember, Service: "hn", Name: name})
		require.NoError(t, err)
		return c
	}
	old, other := issue("follower-1"), issue("follower-2")
	closed := make(chan struct{})
	nc, err := nats.Connect(url, old.Option(), nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	reader := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleReader})
	got := make(chan string, 4)
	_, err = reader.nc.Subscribe(subjects.Watch("hn"), func(m *nats.Msg) { got <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, reader.nc.Flush())
	kept := natstest.Connect(t, url, other.Option())

	require.NoError(t, auth.Revoke(s, old))
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked user's connection stayed open")
	}
	_, err = nats.Connect(url, old.Option())
	require.ErrorContains(t, err, "Authorization Violation")

	renewed := natstest.Connect(t, url, issue("follower-1").Option())
	require.NoError(t, auth.Revoke(s, other))
	_, err = nats.Connect(url, old.Option())
	require.ErrorContains(t, err, "Authorization Violation", "the first revocation holds")
	require.Eventually(t, func() bool { return kept.IsClosed() || !kept.IsConnected() }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, renewed.Publish(subjects.Report("hn", "follower-1"), []byte(`{}`)))
	select {
	case subj := <-got:
		require.Equal(t, subjects.Report("hn", "follower-1"), subj)
	case <-time.After(5 * time.Second):
		t.Fatal("a new credential of the same name was cut too")
	}
	require.True(t, renewed.IsConnected())
}
