package fleet

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test ends its goroutines: watchers, agents and servers are closed,
// not left running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
