package natsauth_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/natsapi"
	"github.com/headcount-dev/headcount/natsauth"
)

// collect sends a request on subject from c and gathers the answers that
// arrive within wait, as `nats req … --replies 0` does.
func collect(t *testing.T, c *client, subject string, wait time.Duration) [][]byte {
	t.Helper()
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, c.nc.PublishRequest(subject, inbox, nil))
	var out [][]byte
	for {
		m, err := sub.NextMsg(wait)
		if err != nil {
			return out
		}
		out = append(out, m.Data)
	}
}

// The banner's observer reads everything, calls the roll as a request and
// gets every member's report in its inbox, lists and asks the members' micro
// services, and may write nothing.
func TestAnObserverCallsTheRollAndTheMicroServicesAndWritesNothing(t *testing.T) {
	auth, url := authServer(t)
	for _, id := range []string{"follower-1", "follower-2"} {
		m := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleMember, Service: "hn", Name: id})
		a, err := agent.New(m.nc, agent.Config{Service: "hn", Follower: id, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2"})
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = a.Close()
			require.Empty(t, m.All(), "%s: permission violations", id)
		})
	}
	obs := connectAs(t, auth, url, natsauth.Identity{Role: natsauth.RoleObserver})
	heard := make(chan string, 64)
	_, err := obs.nc.Subscribe(fleet.DefaultPrefix+".>", func(m *nats.Msg) { heard <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, obs.nc.Flush())

	reports := map[string]fleet.Report{}
	require.Eventually(t, func() bool {
		for _, data := range collect(t, obs, subjects.RollCall("hn"), 300*time.Millisecond) {
			var r fleet.Report
			require.NoError(t, json.Unmarshal(data, &r))
			reports[r.Follower] = r
		}
		return len(reports) == 2
	}, 10*time.Second, 10*time.Millisecond, "one report per member in the roll call's inbox")
	require.Contains(t, reports, "follower-2")
	// The broadcast stays: the observer's `P.>` heard the reports too.
	require.Eventually(t, func() bool {
		for {
			select {
			case s := <-heard:
				if s == subjects.Report("hn", "follower-1") {
					return true
				}
			default:
				return false
			}
		}
	}, 5*time.Second, 10*time.Millisecond)

	pings := collect(t, obs, "$SRV.PING."+natsapi.Name(natsapi.Member), 300*time.Millisecond)
	require.Len(t, pings, 2, "`nats micro ls` finds both members")
	var ping micro.Ping
	require.NoError(t, json.Unmarshal(pings[0], &ping))
	require.Equal(t, "hn", ping.Metadata["service"])
	require.Equal(t, natsapi.Version, ping.Version)
	got := collect(t, obs, natsapi.MemberSubject(subjects, "hn", "follower-2", "report"), 300*time.Millisecond)
	require.Len(t, got, 1)
	var r fleet.Report
	require.NoError(t, json.Unmarshal(got[0], &r))
	require.Equal(t, "follower-2", r.Follower)
	require.Empty(t, obs.All(), "the observer's reads and requests are all allowed")

	for _, subj := range []string{
		subjects.Report("hn", "follower-1"), subjects.Placed("hn", "follower-1"), subjects.Demand("hn", "r"),
		subjects.Decision("hn"), "headcount.hn.moved.r", "headcount.hn.moving.r", "$SRV.REGISTER", "_INBOX.x",
	} {
		obs.Refused(t, obs.nc, subj)
	}
	// It cannot register a service of its own (nor answer as one).
	_, err = obs.nc.Subscribe("$SRV.PING", func(*nats.Msg) {})
	require.NoError(t, err)
	obs.Wait(t, "$SRV.PING")
}
