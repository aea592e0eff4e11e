package router_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the router starts (moves, deletions, its loops, the
// streams it serves, its hang-up watcher) ends with Close and its clients:
// none outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
