package fleet

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefinitionKeyIsSkipsIdentity(t *testing.T) {
	same := [][2]string{
		{`{"a":1,"b":2}`, `{"b":2,"a":1}`},
		{`{"n":1}`, `{"n":1.0}`},
		{`{"n":1}`, `{"n":1e0}`},
		{`{"n":100}`, `{"n":1E2}`},
		{`{"n":0.5}`, `{"n":5e-1}`},
		{`{"n":0}`, `{"n":-0}`},
		{`{"n":0.1}`, `{"n":0.10000000000000001}`}, // one double
		{`{"s":"é<&>"}`, `{"s":"\u00e9\u003c\u0026\u003e"}`},
		{` { "a" : [ 1 , {"y":true,"x":null} ] } `, `{"a":[1.0,{"x":null,"y":true}]}`},
		{`{"a":1,"a":2}`, `{"a":2}`}, // JSON.parse keeps the last
		{``, `{}`},                   // express.json makes {} of an empty body
		{`{"big":12345678901234567890}`, `{"big":12345678901234567000}`},
	}
	for _, tc := range same {
		a, err := DefinitionKey("posts", []byte(tc[0]))
		require.NoError(t, err, tc[0])
		b, err := DefinitionKey("posts", []byte(tc[1]))
		require.NoError(t, err, tc[1])
		require.Equal(t, a, b, "%s and %s", tc[0], tc[1])
	}
	different := [][2]string{
		{`{"n":1}`, `{"n":1.5}`},
		{`{"n":1}`, `{"n":"1"}`},
		{`{"a":[1,2]}`, `{"a":[2,1]}`}, // arrays keep their order
		{`{"a":null}`, `{}`},
		{`{"s":"a"}`, `{"s":"A"}`},
	}
	for _, tc := range different {
		a, err := DefinitionKey("posts", []byte(tc[0]))
		require.NoError(t, err)
		b, err := DefinitionKey("posts", []byte(tc[1]))
		require.NoError(t, err)
		require.NotEqual(t, a, b, "%s and %s", tc[0], tc[1])
	}
	a, _ := DefinitionKey("posts", []byte(`{"a":1}`))
	b, _ := DefinitionKey("comments", []byte(`{"a":1}`))
	require.NotEqual(t, a, b, "the resource is part of the key")
}

func TestDefinitionKeySpelling(t *testing.T) {
	key, err := DefinitionKey("feed", []byte(`{"z":1.50,"a":{"d":1e21,"c":-2.0,"b":1e-7}}`))
	require.NoError(t, err)
	require.Equal(t, `feed/{"a":{"b":1e-07,"c":-2,"d":1e+21},"z":1.5}`, key)
}

func TestDefinitionKeyRefusesWhatIsNotOneValue(t *testing.T) {
	for _, bad := range []string{
		`{`, `{"a":1}{}`, `{"a":1} x`, ` `, `nul`, `{"n":1e400}`, `{"n":-1e999}`, `[1,]`, `{"a":01}`,
		strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000),
		`{"x":"` + strings.Repeat("a", MaxParams) + `"}`,
	} {
		_, err := DefinitionKey("posts", []byte(bad))
		require.Error(t, err, "%.40s", bad)
		require.Contains(t, err.Error(), "definition key")
	}
	for _, res := range []string{"", "a/b", "a b", "a%2f", strings.Repeat("r", 300)} {
		_, err := DefinitionKey(res, []byte(`{}`))
		require.Error(t, err, res)
	}
}

func FuzzDefinitionKey(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":2}`, `{"b":2.0,"a":[1,{"c":null}]}`, `"x"`, `1e400`, `{`, ``, `{"s":"\ud800"}`} {
		f.Add("posts", []byte(s))
	}
	f.Fuzz(func(t *testing.T, resource string, params []byte) {
		key, err := DefinitionKey(resource, params)
		if err != nil {
			require.Contains(t, err.Error(), "definition key")
			return
		}
		// The canonical form is a fixed point: its own params give it back.
		res, canon, ok := strings.Cut(key, "/")
		require.True(t, ok)
		require.Equal(t, resource, res)
		require.True(t, json.Valid([]byte(canon)), canon)
		again, err := DefinitionKey(res, []byte(canon))
		require.NoError(t, err)
		require.Equal(t, key, again)
	})
}
