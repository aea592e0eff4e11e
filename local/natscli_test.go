package local_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/natsapi"
)

// TestNATSCLIReadsUp runs the real NATS CLI against the built binary's `up`
// with the reader credentials its banner prints, as docs/protocol.md shows:
// micro ls lists every component, micro info one, a roll call as a request
// collects one report per member, sub shows the reports; every write is
// refused.
func TestNATSCLIReadsUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the NATS CLI and runs the whole system")
	}
	cli := e2e.NATSCLI(t)
	up := e2e.StartUp(t, e2e.Binary(t))
	nats := func(args ...string) (string, error) {
		out, err := exec.Command(cli, append([]string{"-s", up.NATS, "--creds", up.Creds, "--timeout", "5s"}, args...)...).CombinedOutput()
		return string(out), err
	}
	members := []string{"follower-1", "leader-1"}

	// micro ls: every component up runs: each member (the demo follower, the
	// leader), the router and the scaler.
	type info struct {
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	var listed []info
	waitUntil(t, 60*time.Second, func() bool {
		out, err := nats("micro", "ls", "--json")
		listed = nil
		return err == nil && json.Unmarshal([]byte(out), &listed) == nil && len(listed) == 4
	}, "micro ls lists the leader, follower-1, the router and the scaler", func() string { out, _ := nats("micro", "ls"); return out })
	var got []string
	for _, s := range listed {
		got = append(got, s.Name+"/"+s.Metadata["id"])
		want := "demo"
		if s.Name == natsapi.Name(natsapi.Scaler) {
			want = "*" // the scaler answers for every service
		}
		require.Equal(t, want, s.Metadata["service"], "%s", s.Name)
	}
	require.ElementsMatch(t, []string{"headcount-member/follower-1", "headcount-member/leader-1", "headcount-router/router-1", "headcount-scaler/up"}, got)

	out, err := nats("micro", "info", natsapi.Name(natsapi.Scaler))
	require.NoError(t, err, out)
	require.Contains(t, out, "headcount.*.api.scaler.status")
	out, err = nats("req", "headcount.demo.api.scaler.status", "")
	require.NoError(t, err, out)
	require.Contains(t, out, `"ready":1`)
	out, err = nats("req", "headcount.demo.api.member.follower-1.report", "")
	require.NoError(t, err, out)
	require.Contains(t, out, `"follower":"follower-1"`)
	out, err = nats("micro", "info", natsapi.Name(natsapi.Router))
	require.NoError(t, err, out)
	require.Contains(t, out, "headcount.demo.api.router.router-1.view")
	out, err = nats("req", "headcount.demo.api.router.router-1.view", "")
	require.NoError(t, err, out)
	require.Contains(t, out, `"router":"router-1"`)
	require.Contains(t, out, `"follower":"follower-1"`)
	out, err = nats("micro", "stats", natsapi.Name(natsapi.Member))
	require.NoError(t, err, out)
	require.Contains(t, out, "report")

	// One report per member in the roll call's inbox.
	out, err = nats("req", "headcount.demo.rollcall", "", "--replies", "0")
	require.NoError(t, err, out)
	var answered []string
	for line := range strings.SplitSeq(out, "\n") {
		var r fleet.Report
		if json.Unmarshal([]byte(line), &r) == nil && r.V == fleet.Version {
			answered = append(answered, r.Follower)
		}
	}
	require.ElementsMatch(t, members, answered, "nats req … --replies 0:\n%s", out)

	// sub on the documented subject shows every member's reports (heartbeats: 1 s).
	sub := exec.Command(cli, "-s", up.NATS, "--creds", up.Creds, "sub", "headcount.>", "--count", "10")
	subOut, err := sub.CombinedOutput()
	require.NoError(t, err, string(subOut))
	for _, m := range members {
		require.Contains(t, string(subOut), `Received on "headcount.demo.report.`+m+`"`)
	}

	// Every write with the reader's credentials is refused.
	for _, subj := range []string{"headcount.demo.report.follower-1", "headcount.demo.placed.follower-1",
		"headcount.demo.demand.router-1", "headcount.demo.moved.router-1", "headcount.demo.decision", "$SRV.REGISTER"} {
		out, err := nats("pub", subj, `{"v":1}`)
		require.Error(t, err, "pub %s: %s", subj, out)
		require.Contains(t, out, "Permissions Violation for Publish to \""+subj+"\"")
	}
	out, err = nats("sub", "$SRV.PING", "--count", "1")
	require.Error(t, err, "a reader cannot pose as a micro service: %s", out)
	require.Contains(t, out, "Permissions Violation for Subscription")
	require.NotContains(t, up.Logs(), "Permissions Violation", "up and its children were refused nothing")
	up.Stop(t, 30*time.Second)
}
