// Package leaktest checks that a package's tests leave no goroutine behind;
// only tests import it.
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// settle is how long goroutines may take to end after the last test: the
// servers, connections and background work the tests closed end on their
// own schedule, which a loaded machine stretches well past the half second
// goleak.VerifyTestMain waits.
const settle = 10 * time.Second

// VerifyTestMain runs the tests and, if they passed, fails the run when
// goroutines are still running settle after the last one (goleak.Find's
// report), as goleak.VerifyTestMain does after its own half second.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		err := goleak.Find()
		for deadline := time.Now().Add(settle); err != nil && time.Now().Before(deadline); err = goleak.Find() {
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "leaktest: goroutines still running %v after the tests passed: %v\n", settle, err)
			code = 1
		}
	}
	os.Exit(code)
}
