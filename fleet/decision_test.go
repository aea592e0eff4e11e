package fleet_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
)

func TestDecodeDecision(t *testing.T) {
	good := fleet.Decision{V: 1, Service: "demo", By: "up", Target: 4, TargetPerReplica: 10, Min: 1, Max: 10,
		Processes: []fleet.Process{{ID: "follower-1", PIDs: []int{41, 42}}}}
	data, err := json.Marshal(good)
	require.NoError(t, err)
	got, err := fleet.DecodeDecision(data, "demo")
	require.NoError(t, err)
	assert.Equal(t, good, got)
	assert.Equal(t, "headcount.demo.decision", fleet.Subjects{Prefix: "headcount"}.Decision("demo"))

	for name, body := range map[string]string{
		"other service":    `{"v":1,"service":"other","by":"up","target":1,"target_per_replica":10}`,
		"version":          `{"v":2,"service":"demo","by":"up","target":1,"target_per_replica":10}`,
		"negative target":  `{"v":1,"service":"demo","by":"up","target":-1,"target_per_replica":10}`,
		"zero per replica": `{"v":1,"service":"demo","by":"up","target":1,"target_per_replica":0}`,
		"bad by":           `{"v":1,"service":"demo","by":"Up!","target":1,"target_per_replica":10}`,
		"bad process":      `{"v":1,"service":"demo","by":"up","target":1,"target_per_replica":10,"processes":[{"id":"a.b"}]}`,
		"not json":         `target=4`,
	} {
		_, err := fleet.DecodeDecision([]byte(body), "demo")
		assert.Error(t, err, name)
	}
}
