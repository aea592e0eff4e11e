package demo_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/headcount-dev/headcount/demo"
	"github.com/headcount-dev/headcount/internal/demotest"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
)

// A write to the leader reaches, as an SSE update, every subscriber of every follower.
func TestWriteReachesEverySubscriberOfEveryFollower(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	write(t, leader, "posts", `[["p1",[{"title":"a","votes":1}]],["p2",[{"votes":2,"title":"b"}]]]`)
	followers := []*demo.Server{demotest.Follower(t, nc, "hn", "follower-1", leader), demotest.Follower(t, nc, "hn", "follower-2", leader)}

	const init = `[["p1",[{"title":"a","votes":1}]],["p2",[{"title":"b","votes":2}]]]`
	var streams []*e2e.Stream
	for _, f := range followers {
		for range 2 { // two instances per follower: they share one mirror
			id := create(t, f, "posts")
			if !strings.HasPrefix(id, f.Agent().Report().Follower+"/") {
				t.Fatalf("id %q lacks the follower's prefix", id)
			}
			st := subscribe(t, f, id)
			st.Expect(t, "init", init)
			streams = append(streams, st)
		}
	}
	if n := leader.InstanceCount(); n != len(followers) {
		t.Fatalf("leader holds %d instances, want one mirror per follower (%d)", n, len(followers))
	}

	write(t, leader, "posts", `[["p2",[{"title":"b","votes":3}]],["p3",["new"]]]`)
	for _, st := range streams {
		st.Expect(t, "update", `[["p2",[{"title":"b","votes":3}]],["p3",["new"]]]`)
	}
	write(t, leader, "posts", `[["p1",[]]]`) // no values: the key is deleted
	for _, st := range streams {
		ev := st.Expect(t, "update", `[["p1",[]]]`)
		if ev.ID == "" {
			t.Fatal("update without a watermark id")
		}
	}
	write(t, leader, "other", `[["x",[1]]]`) // other collections do not leak in
	write(t, leader, "posts", `[["p3",["newer"]]]`)
	for _, st := range streams {
		st.Expect(t, "update", `[["p3",["newer"]]]`)
	}
}

func TestStreamFormatIsSkips(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	write(t, leader, "c", `[[1,["a","b"]]]`)
	resp := get(t, "http://"+leader.StreamingAddr()+"/v1/streams/"+create(t, leader, "c"))
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var got []string
	for range 4 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, line)
	}
	want := []string{"event: init\n", "id: 1\n", "data: [[1,[\"a\",\"b\"]]]\n", "\n"}
	if strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestSecondSubscriberGets409(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	id := create(t, f, "c")
	first := subscribe(t, f, id)
	first.Expect(t, "init", `[]`)
	resp := get(t, "http://"+f.StreamingAddr()+"/v1/streams/"+id)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("second subscriber: %d, want 409", resp.StatusCode)
	}
	// Once the first leaves, the instance (within its TTL) takes a new subscriber.
	first.Close()
	eventually(t, "subscription freed", func() bool {
		resp := get(t, "http://"+f.StreamingAddr()+"/v1/streams/"+id)
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func TestUnknownInstanceIs404(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	id := create(t, f, "c")
	_, uuid, _ := strings.Cut(id, "/")
	for _, path := range []string{"nope", "follower-1/nope", "follower-2/" + uuid, "a/b/c"} {
		resp := get(t, "http://"+f.StreamingAddr()+"/v1/streams/"+path)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
		if code, _ := do(t, http.MethodDelete, "http://"+f.ControlAddr()+"/v1/streams/"+path, ""); code != http.StatusNotFound {
			t.Errorf("DELETE %s: %d, want 404", path, code)
		}
	}
	// Both id forms name the same instance.
	subscribe(t, f, uuid).Expect(t, "init", `[]`)
}

func TestDeleteEndsInstanceAndStream(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	for _, form := range []string{"prefixed", "bare"} {
		id := create(t, f, "c")
		st := subscribe(t, f, id)
		st.Expect(t, "init", `[]`)
		del := id
		if form == "bare" {
			_, del, _ = strings.Cut(id, "/")
		}
		if code, body := do(t, http.MethodDelete, "http://"+f.ControlAddr()+"/v1/streams/"+del, ""); code != http.StatusOK {
			t.Fatalf("DELETE %s: %d %s", del, code, body)
		}
		if !st.Ended() {
			t.Fatal("stream still open")
		}
		resp := get(t, "http://"+f.StreamingAddr()+"/v1/streams/"+id)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET after DELETE: %d, want 404", resp.StatusCode)
		}
	}
	// The last instance gone, the follower releases its mirror on the leader.
	eventually(t, "leader instance released", func() bool { return leader.InstanceCount() == 0 })
}

func TestHealthAndOpsEndpoints(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	for _, s := range []*demo.Server{leader, f} {
		for _, url := range []string{
			"http://" + s.ControlAddr() + "/v1/healthcheck",
			"http://" + s.StreamingAddr() + "/v1/healthcheck",
			"http://" + s.ControlAddr() + "/healthz",
			"http://" + s.ControlAddr() + "/readyz",
		} {
			if code, body := do(t, http.MethodGet, url, ""); code != http.StatusOK {
				t.Errorf("%s %s: %d %s", s.Agent().Report().Role, url, code, body)
			}
		}
	}
	create(t, f, "c")
	write(t, leader, "c", `[["k",[1]]]`)
	for name, want := range map[string]float64{"headcount_demo_instances": 1, "headcount_demo_instances_created_total": 1, "headcount_demo_subscribers": 0} {
		if got := metric(t, f, name); got != want {
			t.Errorf("follower %s = %v, want %v", name, got, want)
		}
	}
	if got := metric(t, leader, "headcount_demo_writes_total"); got != 1 {
		t.Errorf("leader writes_total = %v, want 1", got)
	}
}

func TestFollowerHasNoInputs(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	if code, _ := do(t, http.MethodPatch, "http://"+f.ControlAddr()+"/v1/inputs/c", `[["k",[1]]]`); code != http.StatusNotFound {
		t.Fatalf("PATCH on a follower: %d, want 404", code)
	}
}

func TestSnapshotAndLookup(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	write(t, leader, "c", `[["a",[1,2]],["b",[3]]]`)
	for _, s := range []*demo.Server{leader, f} {
		code, body := do(t, http.MethodPost, "http://"+s.ControlAddr()+"/v1/snapshot/collection", `{"name":"c"}`)
		if code != http.StatusOK || body != `[["a",[1,2]],["b",[3]]]` {
			t.Errorf("%s snapshot: %d %s", s.Agent().Report().Role, code, body)
		}
		code, body = do(t, http.MethodPost, "http://"+s.ControlAddr()+"/v1/snapshot/collection/lookup", `{"key":"a","params":{"name":"c"}}`)
		if code != http.StatusOK || body != `[1,2]` {
			t.Errorf("%s lookup: %d %s", s.Agent().Report().Role, code, body)
		}
		code, body = do(t, http.MethodPost, "http://"+s.ControlAddr()+"/v1/snapshot/collection/lookup", `{"key":"zz","params":{"name":"c"}}`)
		if code != http.StatusOK || body != `[]` {
			t.Errorf("%s lookup of an absent key: %d %s", s.Agent().Report().Role, code, body)
		}
	}
	// Snapshots are temporary: nothing stays on the follower, nor its mirror on the leader.
	if n := f.InstanceCount(); n != 0 {
		t.Fatalf("follower keeps %d instances after snapshots", n)
	}
	eventually(t, "leader mirror released", func() bool { return leader.InstanceCount() == 0 })
}

// The instance count reported on NATS rises on create and falls once the
// subscriber has left for InstanceTTL.
func TestInstanceCountOnNATS(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	reps := e2e.WatchReports(t, nc, "hn", "follower-1")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	reps.WaitFor(t, "ready", func(r fleet.Report) bool {
		return r.State == fleet.StateReady && r.Instances == 0 && r.Role == fleet.RoleFollower && r.Streaming == f.StreamingAddr()
	})
	id := create(t, f, "c")
	reps.WaitFor(t, "1 instance", func(r fleet.Report) bool { return r.Instances == 1 && r.Created == 1 })

	st := subscribe(t, f, id)
	st.Expect(t, "init", `[]`)
	time.Sleep(2 * demotest.InstanceTTL) // subscribed: the TTL does not run
	if n := f.InstanceCount(); n != 1 {
		t.Fatalf("subscribed instance destroyed: %d left", n)
	}
	left := time.Now()
	st.Close()
	reps.WaitFor(t, "0 instances", func(r fleet.Report) bool { return r.Instances == 0 && r.Created == 1 })
	if waited := time.Since(left); waited < demotest.InstanceTTL {
		t.Fatalf("destroyed %v after the subscriber left, before the TTL (%v)", waited, demotest.InstanceTTL)
	}
	resp := get(t, "http://"+f.StreamingAddr()+"/v1/streams/"+id)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("expired instance: %d, want 404", resp.StatusCode)
	}
}

// The follower models Skip's sharing: one computation per definition, and
// its reports count them as graphs while any of their instances lives.
func TestReportsCountOneGraphPerDefinition(t *testing.T) {
	f, reps := readyFollower(t)
	ids := []string{create(t, f, "a"), create(t, f, "a"), create(t, f, "b")}
	rep := reps.WaitFor(t, "3 instances", func(r fleet.Report) bool { return r.Instances == 3 })
	if rep.Graphs != 2 {
		t.Fatalf("graphs %d with two instances of a and one of b, want 2", rep.Graphs)
	}

	for i, want := range []int64{2, 1, 0} {
		if code, body := do(t, http.MethodDelete, "http://"+f.ControlAddr()+"/v1/streams/"+ids[i], ""); code != http.StatusOK {
			t.Fatalf("delete: %d %s", code, body)
		}
		rep = reps.WaitFor(t, "one fewer", func(r fleet.Report) bool { return r.Instances == int64(2-i) })
		if rep.Graphs != want {
			t.Fatalf("after deleting %d: graphs %d, want %d (a's graph outlives its first instance)", i+1, rep.Graphs, want)
		}
	}
}

func TestLeaderRegistersAsLeader(t *testing.T) {
	nc := testNATS(t)
	reps := e2e.WatchReports(t, nc, "hn", "leader")
	leader := demotest.Leader(t, nc, "hn")
	reps.WaitFor(t, "leader ready", func(r fleet.Report) bool {
		return r.Role == fleet.RoleLeader && r.State == fleet.StateReady && r.Control == leader.ControlAddr()
	})
}

func TestBadRequestsAreClear4xx(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	c, s := "http://"+leader.ControlAddr(), "http://"+leader.StreamingAddr()
	big := `{"name":"` + strings.Repeat("x", demo.MaxParamsBytes) + `"}`
	for _, tc := range []struct {
		method, url, body string
		want              int
	}{
		{"POST", c + "/v1/streams/collection", `{"name":`, 400},
		{"POST", c + "/v1/streams/collection", `{"name":"c"} junk`, 400},
		{"POST", c + "/v1/streams/collection", `{"nam":"c"}`, 400},
		{"POST", c + "/v1/streams/collection", `{"name":"a/b"}`, 400},
		{"POST", c + "/v1/streams/collection", ``, 400},
		{"POST", c + "/v1/streams/collection", big, 413},
		{"POST", c + "/v1/streams/nosuch", `{"name":"c"}`, 404},
		{"POST", c + "/v1/snapshot/collection", `[]`, 400},
		{"POST", c + "/v1/snapshot/collection/lookup", `{"params":{"name":"c"}}`, 400},
		{"PATCH", c + "/v1/inputs/c", `{"k":[1]}`, 400},
		{"PATCH", c + "/v1/inputs/c", `[["k",1]]`, 400},
		{"PATCH", c + "/v1/inputs/c", `[["k"]]`, 400},
		{"PATCH", c + "/v1/inputs/c", `null`, 400},
		{"PATCH", c + "/v1/inputs/bad%20name", `[]`, 400},
		{"GET", c + "/v1/nosuch", ``, 404},
		{"GET", c + "/v1/streams/x", ``, 405},
		{"PUT", c + "/v1/inputs/c", `[]`, 405},
		{"POST", s + "/v1/streams/x", ``, 405},
		{"PATCH", s + "/v1/inputs/c", `[]`, 404},
	} {
		if code, body := do(t, tc.method, tc.url, tc.body); code != tc.want {
			t.Errorf("%s %s %.40q: %d %s, want %d", tc.method, tc.url, tc.body, code, body, tc.want)
		}
	}
	id := create(t, leader, "c")
	if code, _ := do(t, "GET", s+"/v1/streams/"+id, "", "Accept", "application/json"); code != http.StatusNotAcceptable {
		t.Errorf("stream without Accept: text/event-stream: %d, want 406", code)
	}
	_, metrics := do(t, http.MethodGet, c+"/metrics", "")
	if !strings.Contains(metrics, `headcount_demo_rejected_requests_total{reason="bad_params"}`) {
		t.Error("rejections not counted")
	}
}

// When the leader's stream breaks, the follower's mirror reconnects, and its
// subscribers see the difference as an update.
func TestMirrorReconnects(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	write(t, leader, "c", `[["a",[1]],["b",[2]]]`)
	st := subscribe(t, f, create(t, f, "c"))
	st.Expect(t, "init", `[["a",[1]],["b",[2]]]`)

	// Destroy the follower's instance on the leader: its stream ends.
	upstream := leader.InstanceIDs()
	if len(upstream) != 1 {
		t.Fatalf("leader holds %d instances, want 1", len(upstream))
	}
	leader.DestroyInstance(upstream[0])
	write(t, leader, "c", `[["a",[]],["b",[3]]]`) // lands while the mirror is away, or after

	// One write is atomic: whether it lands before the new init (a diff) or
	// after (an update), subscribers see the same single update.
	st.Expect(t, "update", `[["a",[]],["b",[3]]]`)
	eventually(t, "reconnect counted", func() bool {
		return metric(t, f, "headcount_demo_mirror_reconnects_total") >= 1
	})
	code, body := do(t, http.MethodPost, "http://"+f.ControlAddr()+"/v1/snapshot/collection", `{"name":"c"}`)
	if code != http.StatusOK || body != `[["b",[3]]]` {
		t.Fatalf("follower content after reconnect: %d %s", code, body)
	}
}

func TestDrainThenShutdown(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	reps := e2e.WatchReports(t, nc, "hn", "follower-1")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	id := create(t, f, "c")
	st := subscribe(t, f, id)
	st.Expect(t, "init", `[]`)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		done <- f.Shutdown(ctx)
	}()
	reps.WaitFor(t, "draining", func(r fleet.Report) bool { return r.State == fleet.StateDraining && r.Instances == 1 })
	if code, _ := do(t, http.MethodPost, "http://"+f.ControlAddr()+"/v1/streams/collection", `{"name":"c"}`); code != http.StatusServiceUnavailable {
		t.Fatalf("create while draining: %d, want 503", code)
	}
	if code, _ := do(t, http.MethodGet, "http://"+f.ControlAddr()+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d, want 503", code)
	}
	write(t, leader, "c", `[["k",[1]]]`) // open instances are still served
	st.Expect(t, "update", `[["k",[1]]]`)
	select {
	case err := <-done:
		t.Fatalf("shutdown returned with a live instance: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	do(t, http.MethodDelete, "http://"+f.ControlAddr()+"/v1/streams/"+id, "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("shutdown did not return once the instances were gone")
	}
	reps.WaitFor(t, "gone", func(r fleet.Report) bool { return r.State == fleet.StateGone && r.Instances == 0 })
}

func TestKillPublishesNoGone(t *testing.T) {
	f, reps := readyFollower(t)
	f.Kill()
	if _, err := http.Get("http://" + f.ControlAddr() + "/v1/healthcheck"); err == nil {
		t.Fatal("control port still answers after Kill")
	}
	n := len(reps.All())
	time.Sleep(5 * demotest.Heartbeat)
	after := reps.All()
	for _, r := range after {
		if r.State == fleet.StateGone {
			t.Fatal("Kill published gone")
		}
	}
	if len(after) > n+1 { // one report may have been in flight
		t.Fatalf("%d reports after Kill", len(after)-n)
	}
}

func TestKeepAliveComments(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Start(t, demo.StartLeader, demo.Config{Service: "hn", ID: "leader", NATS: nc, KeepAlive: 20 * time.Millisecond})
	resp := get(t, "http://"+leader.StreamingAddr()+"/v1/streams/"+create(t, leader, "c"))
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for range 20 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": keep-alive\n" {
			return
		}
	}
	t.Fatal("no keep-alive comment")
}

func TestStartRefusesBadConfig(t *testing.T) {
	nc := testNATS(t)
	for _, tc := range []struct {
		name  string
		start func(demo.Config, net.Listener, net.Listener) (*demo.Server, error)
		cfg   demo.Config
	}{
		{"no id", demo.StartLeader, demo.Config{NATS: nc}},
		{"bad id", demo.StartLeader, demo.Config{ID: "Leader_1", NATS: nc}},
		{"bad service", demo.StartLeader, demo.Config{Service: "a.b", ID: "leader", NATS: nc}},
		{"no NATS", demo.StartLeader, demo.Config{ID: "leader"}},
		{"prefix with a slash", demo.StartLeader, demo.Config{ID: "leader", NATS: nc, ResourcePrefix: "a/b"}},
		{"follower without leader", demo.StartFollower, demo.Config{ID: "f-1", NATS: nc}},
	} {
		control, streaming := listen(t), listen(t)
		if s, err := tc.start(tc.cfg, control, streaming); err == nil {
			s.Kill()
			t.Errorf("%s: started", tc.name)
		}
	}
}

func TestFollowerWithoutLeaderNamesTheFields(t *testing.T) {
	control, streaming := listen(t), listen(t)
	_, err := demo.StartFollower(demo.Config{ID: "f-1", NATS: testNATS(t), LeaderStreaming: "127.0.0.1:1"}, control, streaming)
	if err == nil || !strings.Contains(err.Error(), `LeaderControl ""`) {
		t.Fatalf("err %v, want one naming LeaderControl and its value", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// A leader that goes away is retried with backoff; the follower's open
// streams stay open meanwhile.
func TestFollowerRetriesALostLeader(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Leader(t, nc, "hn")
	f := demotest.Follower(t, nc, "hn", "follower-1", leader)
	st := subscribe(t, f, create(t, f, "c"))
	st.Expect(t, "init", `[]`)
	leader.Kill()
	eventually(t, "several reconnect attempts", func() bool {
		return metric(t, f, "headcount_demo_mirror_reconnects_total") >= 3
	})
	if !st.Open() {
		t.Fatal("the stream ended while the leader was away")
	}
}

// A leader stream silent for 4 keep-alive periods counts as lost.
func TestSilentLeaderStreamIsDropped(t *testing.T) {
	nc := testNATS(t)
	leader := demotest.Start(t, demo.StartLeader, demo.Config{Service: "hn", ID: "leader", NATS: nc, KeepAlive: time.Hour})
	f := demotest.Start(t, demo.StartFollower, demo.Config{Service: "hn", ID: "follower-1", NATS: nc, KeepAlive: 20 * time.Millisecond,
		LeaderControl: leader.ControlAddr(), LeaderStreaming: leader.StreamingAddr()})
	create(t, f, "c")
	eventually(t, "silent stream dropped", func() bool {
		return metric(t, f, "headcount_demo_mirror_reconnects_total") >= 1
	})
}
