package defaults_test

import (
	"testing"
	"time"

	"github.com/headcount-dev/headcount/internal/defaults"
)

func TestPositiveKeepsWhatIsAboveZero(t *testing.T) {
	for _, tc := range []struct{ in, want time.Duration }{{0, time.Second}, {-time.Millisecond, time.Second}, {time.Millisecond, time.Millisecond}} {
		v := tc.in
		defaults.Positive(&v, time.Second)
		if v != tc.want {
			t.Errorf("Positive(%v, 1s) = %v, want %v", tc.in, v, tc.want)
		}
	}
	f := 0.5
	defaults.Positive(&f, 2)
	if f != 0.5 {
		t.Errorf("Positive(0.5, 2) = %v", f)
	}
}
