package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// DefinitionKey is the identity Skip gives a resource instance's computation:
// the resource name and its params in canonical form, "<resource>/<json>".
// Every instance of one key shares one resource graph on a follower, so
// routers place equal keys together and followers count distinct keys as
// their graphs (docs/placement.md).
//
// Skip 0.0.15's server parses the body with JSON.parse (express.json) and
// hands the value to its runtime, which keeps object fields sorted; the
// canonical form follows the same steps: object keys sorted (the last of a
// duplicated key wins), no insignificant space, every string in one spelling,
// and every number as the double JSON.parse makes of it, written one way
// (1, 1.0 and 1e0 are one value; -0 is 0). An empty body is {}, as
// express.json makes it. Anything else that is not exactly one JSON value is
// an error: the caller then knows nothing about sharing.
func DefinitionKey(resource string, params []byte) (string, error) {
	if !validResource(resource) {
		return "", fmt.Errorf("definition key: resource %q is not one URL path segment of visible ASCII", resource)
	}
	if len(params) > MaxParams {
		return "", fmt.Errorf("definition key: params of %d bytes, limit %d", len(params), MaxParams)
	}
	if len(params) == 0 {
		return resource + "/{}", nil
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("definition key: params are not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", errors.New("definition key: params have data after the JSON value")
	}
	v, err := canonicalNumbers(v)
	if err != nil {
		return "", fmt.Errorf("definition key: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString(resource)
	buf.WriteByte('/')
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // one spelling of <, > and &
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("definition key: %w", err)
	}
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// canonicalNumbers rewrites every number of a decoded value in its one
// spelling; encoding/json then sorts object keys when it encodes the maps.
func canonicalNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		return canonicalNumber(x)
	case []any:
		for i, e := range x {
			c, err := canonicalNumbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
	case map[string]any:
		for k, e := range x {
			c, err := canonicalNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
	}
	return v, nil
}

// canonicalNumber writes n as the double JSON.parse reads, integers without
// a fraction or exponent below 1e21 (as JavaScript prints them), others in
// the shortest form that reads back as the same double.
func canonicalNumber(n json.Number) (json.Number, error) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return "", fmt.Errorf("number %s is not a finite double", n)
	}
	switch {
	case f == 0:
		return "0", nil // -0 too: Skip keeps it as the integer 0
	case f == math.Trunc(f) && math.Abs(f) < 1e21:
		return json.Number(strconv.FormatFloat(f, 'f', -1, 64)), nil
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
}
