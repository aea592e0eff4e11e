package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Request limits: generous for a demo, small enough that a bad client
// cannot exhaust memory.
const (
	maxParamsBytes  = 64 << 10
	maxInputBytes   = 8 << 20
	maxCollectionID = 128
)

// resourceCollection is the demo's only resource: params {"name": "<collection>"}
// stream that collection of the leader.
const resourceCollection = "collection"

var errUnknownResource = errors.New("unknown resource")

// entry is one key of a collection with its values, in Skip's wire form
// [key, [values...]]. An entry without values deletes the key, as in Skip.
type entry struct {
	key    []byte   // canonical JSON
	values [][]byte // canonical JSON
}

// canonical re-encodes one JSON value so that equal values have equal bytes:
// object keys sorted, no insignificant space, numbers kept as written.
func canonical(raw []byte) ([]byte, error) {
	v, err := decodeValue(raw)
	if err != nil {
		return nil, err
	}
	return newCanonicalizer().encode(v)
}

// decodeValue decodes exactly one JSON value, numbers kept as json.Number.
func decodeValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

// canonicalizer encodes decoded values canonically, reusing one buffer.
type canonicalizer struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func newCanonicalizer() *canonicalizer {
	c := &canonicalizer{}
	c.enc = json.NewEncoder(&c.buf)
	c.enc.SetEscapeHTML(false)
	return c
}

func (c *canonicalizer) encode(v any) ([]byte, error) {
	c.buf.Reset()
	if err := c.enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.Clone(bytes.TrimSuffix(c.buf.Bytes(), []byte("\n"))), nil
}

// parseEntries decodes Skip's collection update body: [[key, [values...]], ...].
func parseEntries(body []byte) ([]entry, error) {
	v, err := decodeValue(body)
	raw, ok := v.([]any)
	if err != nil || !ok {
		return nil, errors.New("want a JSON array of [key, [values...]] entries")
	}
	c := newCanonicalizer()
	out := make([]entry, 0, len(raw))
	for i, r := range raw {
		pair, ok := r.([]any)
		if !ok || len(pair) != 2 {
			return nil, fmt.Errorf("entry %d: want [key, [values...]]", i)
		}
		vals, ok := pair[1].([]any)
		if !ok {
			return nil, fmt.Errorf("entry %d: values must be a JSON array", i)
		}
		e := entry{values: make([][]byte, len(vals))}
		if e.key, err = c.encode(pair[0]); err != nil {
			return nil, fmt.Errorf("entry %d: key: %w", i, err)
		}
		for j, v := range vals {
			if e.values[j], err = c.encode(v); err != nil {
				return nil, fmt.Errorf("entry %d: value %d: %w", i, j, err)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// appendEntries encodes entries in Skip's wire form.
func appendEntries(buf []byte, entries []entry) []byte {
	buf = append(buf, '[')
	for i, e := range entries {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		buf = append(buf, e.key...)
		buf = append(buf, ',')
		buf = appendValues(buf, e.values)
		buf = append(buf, ']')
	}
	return append(buf, ']')
}

func appendValues(buf []byte, values [][]byte) []byte {
	buf = append(buf, '[')
	for i, v := range values {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, v...)
	}
	return append(buf, ']')
}

// parseParams resolves a resource and its JSON params to the collection it
// streams. Unknown fields are refused so that a typo is not silently shared
// with another client's instance.
func parseParams(resource string, body []byte) (string, error) {
	if resource != resourceCollection {
		return "", fmt.Errorf("%w %q: this service has only %q", errUnknownResource, resource, resourceCollection)
	}
	var p struct {
		Name string `json:"name"`
	}
	if err := decodeStrict(body, &p); err != nil {
		return "", fmt.Errorf(`params: want {"name": "<collection>"}: %w`, err)
	}
	if !validCollection(p.Name) {
		return "", fmt.Errorf("params: name %q: want 1-%d letters, digits, '_', '-' or '.'", p.Name, maxCollectionID)
	}
	return p.Name, nil
}

// lookupRequest is the body of POST /v1/snapshot/:resource/lookup.
type lookupRequest struct {
	Key    json.RawMessage `json:"key"`
	Params json.RawMessage `json:"params"`
}

func parseLookup(body []byte) (lookupRequest, []byte, error) {
	var l lookupRequest
	if err := decodeStrict(body, &l); err != nil || l.Key == nil || l.Params == nil {
		return l, nil, errors.New(`want {"key": <key>, "params": <params>}`)
	}
	key, err := canonical(l.Key)
	return l, key, err
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// validCollection keeps collection names to a safe, path-friendly alphabet.
func validCollection(s string) bool {
	if len(s) == 0 || len(s) > maxCollectionID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
