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
