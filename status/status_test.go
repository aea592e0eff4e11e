package status_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/status"
)

// The table and the JSON show each follower's graphs beside its instances.
func TestStatusShowsGraphs(t *testing.T) {
	v := fleet.NewView()
	for id, counts := range map[string][2]int64{"follower-1": {40, 2}, "follower-2": {3, 0}} {
		v.Apply(fleet.Report{V: fleet.Version, Service: "hn", Follower: id, Incarnation: id + "-1",
			Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:1", Streaming: "127.0.0.1:2",
			Instances: counts[0], Graphs: counts[1], Seq: 1, TTLMillis: 3000}, time.Now())
	}
	st := status.Observe(v, "hn", nil)
	var out strings.Builder
	require.NoError(t, st.WriteTable(&out))
	_, table, ok := strings.Cut(out.String(), "MEMBER")
	require.True(t, ok, out.String())
	lines := strings.Split("MEMBER"+table, "\n")
	require.Equal(t, []string{"MEMBER", "ROLE", "STATE", "INSTANCES", "GRAPHS", "PENDING", "CONTROL", "STREAMING", "PROCESS"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"follower-1", "follower", "ready", "40", "2", "0"}, strings.Fields(lines[1])[:6])
	require.Equal(t, []string{"follower-2", "follower", "ready", "3", "3", "0"}, strings.Fields(lines[2])[:6], "no graphs counted: every instance one")
	data, err := json.Marshal(st)
	require.NoError(t, err)
	require.Contains(t, string(data), `"graphs":2`)
}
