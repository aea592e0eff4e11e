package router_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/otlptest"
)

// TestTraceFollowsACreationAWriteAMoveAndADeletion runs the built binary as
// processes (demo leader, two demo followers, a router), each exporting
// spans as in production (OTEL_EXPORTER_OTLP_ENDPOINT) to a real OTLP/gRPC
// collector in the test. A client's requests carry one trace (its
// traceparent); the trace then holds, linked parent to child: the router's
// creation, naming the follower placed on, and the follower's span under
// it; the write and the leader's span under it; the stream's opening; the
// move of the stream off its drained follower (its creation on the target,
// naming it, and the target's span, the target's stream up to its first
// event, the switch, the deletion of the old instance and the old
// follower's span); and the deletion of the moved id and its new owner's
// span. The router sends its own span's context with each request (no
// client span of its own); followers and the leader name their spans by
// route, as otelhttp does.
func TestTraceFollowsACreationAWriteAMoveAndADeletion(t *testing.T) {
	rec := otlptest.Start(t)
	for _, kv := range rec.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v) // every process of the fleet inherits it
	}
	f := startProcessFleet(t)
	followers := map[string]*e2e.Proc{"follower-a": f.follower(t, "follower-a"), "follower-b": f.follower(t, "follower-b")}
	control, streaming := e2e.FreeAddr(t), e2e.FreeAddr(t)
	startProc(t, f.bin, append([]string{"router", "--id", "r-1", "--placement", "least-loaded", "--no-rebalance",
		"--control-addr", control, "--streaming-addr", streaming}, f.common...)...)
	require.Eventually(t, func() bool {
		_, lead := f.view.Leader(svc)
		resp, err := http.Get("http://" + control + "/readyz")
		if err != nil {
			return false // not listening yet
		}
		_ = resp.Body.Close()
		return lead && f.view.Totals(svc).Ready == 2 && resp.StatusCode == http.StatusOK
	}, 60*time.Second, 20*time.Millisecond, "the leader, both followers and the router ready")

	traceID := hex.EncodeToString(randomBytes(16))
	// The client's own spans: one per request it sends.
	client := map[string]string{}
	header := func(request string) http.Header {
		client[request] = hex.EncodeToString(randomBytes(8))
		return http.Header{"Traceparent": {"00-" + traceID + "-" + client[request] + "-01"}}
	}

	code, id := e2e.DoWith(t, http.MethodPost, control+"/v1/streams/collection", createBody, header("create"))
	require.Equal(t, http.StatusCreated, code, id)
	st, code := e2e.SubscribeWith(t, streaming, id, header("stream"))
	require.Equal(t, http.StatusOK, code)
	c := &e2e.Client{ID: id, Stream: st}
	require.Equal(t, "init", c.Next(t).Kind)
	code, body := e2e.DoWith(t, http.MethodPatch, control+"/v1/inputs/posts", `[["traced",[1]]]`, header("write"))
	require.Equal(t, http.StatusOK, code, body)
	c.Until(t, `"traced"`)

	owner, _, _ := strings.Cut(id, "/")
	target := "follower-a"
	if owner == target {
		target = "follower-b"
	}
	followers[owner].Signal(t, syscall.SIGTERM)
	require.Equal(t, "init", c.Next(t).Kind, "moved off the draining %s: a fresh init", owner)
	select {
	case <-followers[owner].Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still draining after 30 s", owner)
	}
	code, body = e2e.DoWith(t, http.MethodDelete, control+"/v1/streams/"+id, "", header("delete"))
	require.Equal(t, http.StatusOK, code, body)

	// The processes export every 100 ms; the drained follower flushed at its exit.
	var spans []otlptest.Span
	var missing string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		spans = rec.Trace(traceID)
		if missing = traced(spans, client, owner, target).missing(); missing == "" || time.Now().After(deadline) {
			break
		}
	}
	require.Empty(t, missing, "the trace lacks what is listed; it has:\n%s", list(spans))
	for _, s := range rec.Spans() {
		if strings.HasPrefix(s.GetName(), "router ") && s.TraceID() != traceID {
			t.Errorf("span %s of %s started a trace of its own", s.GetName(), s.Service)
		}
	}
}

// tracedSpans is a received trace, checked link by link.
type tracedSpans struct {
	spans  []otlptest.Span
	client map[string]string
	lacks  []string
}

// traced checks spans against the client's requests: the stream was
// created on owner and moved to target.
func traced(spans []otlptest.Span, client map[string]string, owner, target string) *tracedSpans {
	tr := &tracedSpans{spans: spans, client: client}
	create := tr.child("client create", client["create"], "headcount-router", "router create")
	tr.attribute(create, "headcount.follower", owner)
	tr.child("router create", create, "headcount-follower", "POST /v1/streams/{resource}")
	write := tr.child("client write", client["write"], "headcount-router", "router write")
	tr.child("router write", write, "headcount-leader", "PATCH /v1/inputs/{collection}")
	move := tr.child("router stream", tr.child("client stream", client["stream"], "headcount-router", "router stream"),
		"headcount-router", "router move")
	moveCreate := tr.child("router move", move, "headcount-router", "router move create")
	tr.attribute(moveCreate, "headcount.follower", target)
	tr.child("router move create", moveCreate, "headcount-follower", "POST /v1/streams/{resource}")
	tr.event(tr.child("router move", move, "headcount-router", "router move open"), "first event")
	tr.child("router move", move, "headcount-router", "router move switch")
	deleteOld := tr.child("router move", move, "headcount-router", "router delete instance")
	tr.child("router delete instance", deleteOld, "headcount-follower", "DELETE /v1/streams/{id...}")
	del := tr.child("client delete", client["delete"], "headcount-router", "router delete")
	tr.child("router delete", del, "headcount-follower", "DELETE /v1/streams/{id...}")
	return tr
}

// child finds the span of service named name whose parent is the span
// parent (described as what) and returns its id; "" if there is none (or
// no parent), noted as missing.
func (tr *tracedSpans) child(what, parent, service, name string) string {
	if parent == "" {
		return ""
	}
	for _, s := range tr.spans {
		if s.ParentID() == parent && s.Service == service && s.GetName() == name {
			return s.SpanID()
		}
	}
	tr.lacks = append(tr.lacks, fmt.Sprintf("%s (%s) under %s", name, service, what))
	return ""
}

// attribute checks that the span id has the string attribute key = value.
func (tr *tracedSpans) attribute(id, key, value string) {
	for _, s := range tr.spans {
		if id != "" && s.SpanID() == id && slices.ContainsFunc(s.GetAttributes(), func(kv *commonpb.KeyValue) bool {
			return kv.GetKey() == key && kv.GetValue().GetStringValue() == value
		}) {
			return
		}
	}
	if id != "" {
		tr.lacks = append(tr.lacks, fmt.Sprintf("attribute %s=%s of span %s", key, value, id))
	}
}

// event checks that the span id has an event named name.
func (tr *tracedSpans) event(id, name string) {
	for _, s := range tr.spans {
		if id != "" && s.SpanID() == id && slices.ContainsFunc(s.GetEvents(), func(e *tracepb.Span_Event) bool { return e.GetName() == name }) {
			return
		}
	}
	if id != "" {
		tr.lacks = append(tr.lacks, fmt.Sprintf("event %s of span %s", name, id))
	}
}

func (tr *tracedSpans) missing() string { return strings.Join(tr.lacks, "; ") }

// list lists spans for a failure message.
func list(spans []otlptest.Span) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s %q id %s parent %s\n", s.Service, s.GetName(), s.SpanID(), s.ParentID())
	}
	return b.String()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
