package router_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the router starts (moves, deletions, its loops, the
// streams it serves) ends with Close and its clients: none outlives the tests.
// The epoll hang-up watcher is process-global here until it gets a Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/headcount-dev/headcount/router.startHangups.func1"))
}
