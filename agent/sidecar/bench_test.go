package sidecar_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/headcount-dev/headcount/agent/sidecar"
)

// The cost the sidecar adds to a creation: compare the two.
//
//	go test -run XXX -bench . -benchmem ./agent/sidecar/
func BenchmarkCreateDirect(b *testing.B) {
	f := newFixture(b, options{})
	benchCreate(b, f.up.control)
}

func BenchmarkCreateThroughSidecar(b *testing.B) {
	f := newFixture(b, options{})
	benchCreate(b, f.control)
}

func benchCreate(b *testing.B, addr string) {
	client := &http.Client{}
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Post("http://"+addr+"/v1/streams/posts", "application/json", strings.NewReader("{}"))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatal(resp.Status)
		}
	}
}

func BenchmarkParseID(b *testing.B) {
	for b.Loop() {
		if _, ok := sidecar.ParseID("follower-3/0b9f7c4e-6c1a-4a53-9a61-3b2e2f0c9d11"); !ok {
			b.Fatal("not parsed")
		}
	}
}
