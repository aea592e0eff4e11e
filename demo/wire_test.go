package demo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestParseEntriesCanonicalizes(t *testing.T) {
	got, err := parseEntries([]byte(` [ [ {"b":1, "a":[2,"<"]} , [ 1.50 , {"z":null,"y":true} ] ], ["k", []] ] `))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(appendEntries(nil, got)); s != `[[{"a":[2,"<"],"b":1},[1.50,{"y":true,"z":null}]],["k",[]]]` {
		t.Fatalf("got %s", s)
	}
}

func TestParseEntriesRejects(t *testing.T) {
	for _, body := range []string{``, `null`, `{}`, `[1]`, `[[1]]`, `[[1,2,3]]`, `[[1,2]]`, `[[1,null]]`, `[["k",[1 2]]]`, `[["k",[1]]] x`} {
		if _, err := parseEntries([]byte(body)); err == nil {
			t.Errorf("%q accepted", body)
		}
	}
}

func TestParseParams(t *testing.T) {
	if name, err := parseParams("collection", []byte(`{"name":"posts.v2"}`)); err != nil || name != "posts.v2" {
		t.Fatalf("got %q, %v", name, err)
	}
	if _, err := parseParams("other", []byte(`{"name":"posts"}`)); !errors.Is(err, errUnknownResource) {
		t.Fatalf("unknown resource: %v", err)
	}
	for _, body := range []string{``, `null`, `[]`, `{}`, `{"name":""}`, `{"name":"a b"}`, `{"name":1}`, `{"name":"a","x":1}`, `{"name":"` + strings.Repeat("a", 129) + `"}`} {
		if _, err := parseParams("collection", []byte(body)); err == nil {
			t.Errorf("%q accepted", body)
		}
	}
}

type sseEvent struct{ kind, id, data string }

func readAll(t *testing.T, in string) []sseEvent {
	t.Helper()
	r := newSSEReader(strings.NewReader(in), nil)
	var out []sseEvent
	for {
		kind, id, data, err := r.next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		out = append(out, sseEvent{kind, id, string(data)})
	}
}

func TestSSEReader(t *testing.T) {
	in := ": keep-alive\n\n" +
		"event: init\nid: 7\ndata: [[1,[2]]]\n\n" +
		"event: update\r\ndata:[]\r\n\r\n" + // Skip's heartbeat: no id, no space
		"data: a\ndata: b\nretry: 10\nunknown\n\n" +
		"event: update\rid: 8\rdata: x\r\r"
	got := readAll(t, in)
	want := []sseEvent{{"init", "7", "[[1,[2]]]"}, {"update", "", "[]"}, {"", "", "a\nb"}, {"update", "8", "x"}}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if _, _, _, err := newSSEReader(strings.NewReader("event: init\ndata: ["), nil).next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("cut stream: %v", err)
	}
}

func TestFeedReplaceSendsTheDifference(t *testing.T) {
	f := newFeed()
	f.sync(mustEntries(t, `[["a",[1]],["b",[2]],["c",[3]]]`), "5", true)
	cur, init := f.watch()
	if string(init.data) != `[["a",[1]],["b",[2]],["c",[3]]]` || init.watermark != "5" {
		t.Fatalf("init %s @%s", init.data, init.watermark)
	}
	f.sync(mustEntries(t, `[["a",[1]],["c",[4]],["d",[5]]]`), "9", true)
	f.sync(nil, "", false) // a heartbeat changes nothing
	ev, ok := cur.next()
	if !ok || string(ev.data) != `[["b",[]],["c",[4]],["d",[5]]]` || ev.watermark != "9" {
		t.Fatalf("update %s @%s", ev.data, ev.watermark)
	}
	if _, ok := cur.next(); ok {
		t.Fatal("update without a change")
	}
}

// A slow subscriber costs one mark per key, however many writes it missed.
func TestFeedCoalescesForSlowCursors(t *testing.T) {
	f := newInputFeed()
	cur, _ := f.watch()
	for i := range 1000 {
		f.write(mustEntries(t, `[["k",[`+strings.Repeat("1", i%5+1)+`]]]`))
	}
	ev, ok := cur.next()
	if !ok || string(ev.data) != `[["k",[11111]]]` || ev.watermark != "1000" {
		t.Fatalf("update %s @%s", ev.data, ev.watermark)
	}
}

func mustEntries(t testing.TB, s string) []entry {
	t.Helper()
	e, err := parseEntries([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// FuzzParseEntries: any body is refused or parsed; what is parsed encodes to
// valid JSON that parses back to the same entries.
func FuzzParseEntries(f *testing.F) {
	for _, s := range []string{`[]`, `[["k",[1,"2",{"a":[]}]]]`, `[[{"b":1,"a":2},[]]]`, `[[1]]`, `null`, `[["\u003c",[1e400]]]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		entries, err := parseEntries(body)
		if err != nil {
			return
		}
		enc := appendEntries(nil, entries)
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON %s", enc)
		}
		again, err := parseEntries(enc)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", enc, err)
		}
		if !bytes.Equal(appendEntries(nil, again), enc) {
			t.Fatalf("not canonical: %s", enc)
		}
	})
}

// FuzzParseParams: any params are refused or name a valid collection.
func FuzzParseParams(f *testing.F) {
	for _, s := range []string{`{"name":"c"}`, `{"name":"c","x":1}`, `{}`, `null`, `{"name":"a/b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if name, err := parseParams(resourceCollection, body); err == nil && !validCollection(name) {
			t.Fatalf("accepted %q", name)
		}
		_, _, _ = parseLookup(body)
	})
}

// FuzzSSEReader: any stream ends in events and an error, never a panic; an
// event written as Skip writes it reads back the same.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("event: init\nid: 1\ndata: []\n\n"), "update", "2", []byte(`[["k",[1]]]`))
	f.Add([]byte(": c\r\ndata\r\r\n\n"), "init", "", []byte("x"))
	f.Fuzz(func(t *testing.T, stream []byte, kind, id string, data []byte) {
		r := newSSEReader(bytes.NewReader(stream), nil)
		for range len(stream) + 1 {
			if _, _, _, err := r.next(); err != nil {
				break
			}
		}
		if kind == "" || strings.ContainsAny(kind+id+string(data), "\r\n\x00") {
			return
		}
		k, i, d, err := newSSEReader(bytes.NewReader(appendEvent(nil, event{kind, id, data})), nil).next()
		if err != nil || k != kind || i != id || !bytes.Equal(d, data) {
			t.Fatalf("round trip of %q %q %q: %q %q %q %v", kind, id, data, k, i, d, err)
		}
	})
}

// BenchmarkParseEntries: a 100-key PATCH body.
func BenchmarkParseEntries(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[")
	for i := range 100 {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `["post-%d",[{"title":"t%d","votes":%d,"by":"u"}]]`, i, i, i)
	}
	sb.WriteString("]")
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := parseEntries(body); err != nil {
			b.Fatal(err)
		}
	}
}
