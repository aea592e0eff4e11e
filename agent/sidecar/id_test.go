package sidecar_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/headcount-dev/headcount/agent/sidecar"
)

func TestParseID(t *testing.T) {
	for in, want := range map[string]sidecar.ID{
		"0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11":            {Key: "0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11"},
		"follower-3/0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11": {Prefix: "follower-3", Key: "0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11"},
		"2f1cKsuid_like": {Key: "2f1cKsuid_like"},
	} {
		got, ok := sidecar.ParseID(in)
		assert.True(t, ok, in)
		assert.Equal(t, want, got, in)
		assert.Equal(t, in, got.String())
	}
	for _, bad := range []string{"", "/", "a/", "/b", "a/b/c", "a b", "a/b c", "é", "a/<script>",
		strings.Repeat("k", 129), strings.Repeat("p", 254) + "/k", "p\x00/k"} {
		_, ok := sidecar.ParseID(bad)
		assert.False(t, ok, "%q", bad)
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11", "f1/0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11", "a/b/c", "", "/", "%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := sidecar.ParseID(s)
		if !ok {
			return
		}
		if id.String() != s {
			t.Fatalf("%q parsed as %+v, which prints %q", s, id, id.String())
		}
		if id.Key == "" || strings.ContainsAny(id.Key, "/ ") || strings.Contains(id.Prefix, "/") {
			t.Fatalf("%q parsed as %+v", s, id)
		}
	})
}
