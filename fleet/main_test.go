package fleet

import (
	"testing"

	"github.com/headcount-dev/headcount/internal/leaktest"
)

// Every test ends its goroutines: watchers, agents and servers are closed,
// not left running.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
