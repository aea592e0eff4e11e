package fleet

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func validMoved() Moved {
	return Moved{Router: "r-1", From: "follower-1/6f1c2b3a-0000-4000-8000-000000000001",
		To: "follower-2/7e1c2b3a-0000-4000-8000-000000000002", TTLMillis: 120_000}
}

func TestDecodeMoved(t *testing.T) {
	good, _ := json.Marshal(validMoved())
	m, err := DecodeMoved(good, "r-1")
	require.NoError(t, err)
	require.Equal(t, validMoved(), m)

	for name, tc := range map[string]struct {
		mutate func(*Moved)
		router string
		reason string
	}{
		"subject":   {func(*Moved) {}, "r-2", ReasonSubject},
		"bad from":  {func(m *Moved) { m.From = "no-slash" }, "r-1", ReasonName},
		"bad to":    {func(m *Moved) { m.To = "Follower/x" }, "r-1", ReasonName},
		"two slash": {func(m *Moved) { m.To = "f/a/b" }, "r-1", ReasonName},
		"same":      {func(m *Moved) { m.To = m.From }, "r-1", ReasonName},
		"ttl low":   {func(m *Moved) { m.TTLMillis = 1 }, "r-1", ReasonTTL},
		"ttl high":  {func(m *Moved) { m.TTLMillis = MaxTTLMillis + 1 }, "r-1", ReasonTTL},
	} {
		t.Run(name, func(t *testing.T) {
			m := validMoved()
			tc.mutate(&m)
			data, _ := json.Marshal(m)
			_, err := DecodeMoved(data, tc.router)
			require.Error(t, err)
			require.Equal(t, tc.reason, ReasonOf(err))
		})
	}
	_, err = DecodeMoved([]byte(`{"router":`), "r-1")
	require.Equal(t, ReasonJSON, ReasonOf(err))
	_, err = DecodeMoved([]byte(strings.Repeat(" ", MaxMessageBytes+1)), "r-1")
	require.Equal(t, ReasonOversize, ReasonOf(err))
}

func FuzzDecodeMoved(f *testing.F) {
	good, _ := json.Marshal(validMoved())
	f.Add(good, "r-1")
	f.Add([]byte(`{"router":"r-1","from":"a/b","to":"a/b","ttl_ms":100}`), "r-1")
	f.Add([]byte(`[]`), "r")
	f.Fuzz(func(t *testing.T, data []byte, router string) {
		m, err := DecodeMoved(data, router)
		if err != nil {
			if ReasonOf(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Whatever is accepted names two distinct routable ids.
		require.Equal(t, router, m.Router)
		require.NotEqual(t, m.From, m.To)
		for _, id := range []string{m.From, m.To} {
			_, _, ok := SplitInstanceID(id)
			require.True(t, ok, id)
		}
	})
}

func TestOrigin(t *testing.T) {
	params := []byte(`{"name":"posts","x":[1,2]}`)
	res, enc, ok := EncodeOrigin("collection", params)
	require.True(t, ok)
	gotRes, gotParams, ok := DecodeOrigin(res, enc)
	require.True(t, ok)
	require.Equal(t, "collection", gotRes)
	require.Equal(t, params, gotParams)

	_, _, ok = EncodeOrigin("a/b", params)
	require.False(t, ok, "a resource is one path segment")
	_, _, ok = EncodeOrigin("collection", make([]byte, MaxParams+1))
	require.False(t, ok, "oversize params are not carried")
	_, _, ok = DecodeOrigin("collection", "!!not base64")
	require.False(t, ok)
	_, _, ok = DecodeOrigin("", "")
	require.False(t, ok)
	// Empty params (a creation without a body) are carried.
	_, p, ok := DecodeOrigin("collection", "")
	require.True(t, ok)
	require.Empty(t, p)
}
