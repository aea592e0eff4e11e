package fleet

import (
	"strings"
	"testing"
)

func TestValidInstanceKey(t *testing.T) {
	for _, ok := range []string{"0b5e1a9c-4a4e-4f5b-9b1e-2b1c3d4e5f60", "A_b-9", strings.Repeat("x", MaxInstanceKey)} {
		if !ValidInstanceKey(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", "a%20b", "é", "a.b", strings.Repeat("x", MaxInstanceKey+1)} {
		if ValidInstanceKey(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
