package fleet_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/headcount-dev/headcount/fleet"
)

func TestLabel(t *testing.T) {
	assert.Equal(t, "web-7d9f-abcde", fleet.Label("Web_7d9f.abcde", "router"))
	assert.Equal(t, "router", fleet.Label("---", "router"))
	assert.Equal(t, strings.Repeat("a", 63), fleet.Label(strings.Repeat("a", 70), "router"))
	assert.True(t, fleet.ValidName(fleet.HostLabel("router")))
}
