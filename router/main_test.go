package router_test

import (
	"testing"

	"github.com/headcount-dev/headcount/internal/leaktest"
)

// Every goroutine the router starts (moves, deletions, its loops, the
// streams it serves, its hang-up watcher) ends with Close and its clients:
// none outlives the tests.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
