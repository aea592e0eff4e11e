package local

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/headcount-dev/headcount/replicas"
)

func TestWelcomeBoundsAndCommands(t *testing.T) {
	pro, err := replicas.PlanNamed("pro")
	assert.NoError(t, err)
	addrs := Addrs{Streaming: "http://127.0.0.1:1", Control: "http://127.0.0.1:2", Scaler: "127.0.0.1:3", NATS: "nats://127.0.0.1:4"}
	for _, tc := range []struct {
		name        string
		cfg         UpConfig
		bounds      string
		demoCommand bool
	}{
		{"demo", UpConfig{Policy: pro.Policy(10, false)}, "replicas 1–10", true},
		{"scale to zero", UpConfig{Policy: pro.Policy(10, true)}, "replicas 0–10", true},
		{"own follower", UpConfig{Policy: pro.Policy(10, false), FollowerCmd: "node follower.js"}, "replicas 1–10", false},
	} {
		var out bytes.Buffer
		cfg := tc.cfg
		cfg.Service, cfg.Out = "svc", &out
		cfg.Subjects.Prefix = "headcount"
		cfg.printWelcome(addrs)
		assert.Contains(t, out.String(), tc.bounds, tc.name)
		assert.Equal(t, tc.demoCommand, strings.Contains(out.String(), `{"name":"posts"}`), "%s: demo commands", tc.name)
		assert.Contains(t, out.String(), "http://127.0.0.1:2", tc.name)
	}
}

func TestFitKeepsTheTableWithinTheTerminal(t *testing.T) {
	table := "service demo   live instances 3\nreplica target 1\n\nMEMBER  ROLE\nfollower-1  follower  a-very-long-column-that-goes-on\nfollower-2  follower\n"
	got := fit(table, 20, 24)
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		assert.LessOrEqual(t, len([]rune(l)), 19, "%q", l)
	}
	assert.Contains(t, got, "follower-1  follow…")
	assert.Equal(t, 6, strings.Count(got, "\n"), "short enough: every line kept")

	got = fit(table, 80, 5)
	assert.Equal(t, 4, strings.Count(got, "\n"), "rows-1 lines at most")
	assert.Contains(t, got, "… 3 more lines")
	assert.Equal(t, table, fit(table, 200, 50), "a table that fits is unchanged")
}
