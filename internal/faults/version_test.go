package faults_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
)

// skewPrefix is where the skewed followers speak; the test republishes
// their reports on headcount's prefix as another release would write them.
const skewPrefix = "skew"

// relay republishes the reports of the followers on skewPrefix under
// headcount's prefix, rewritten by that follower's release, and forwards
// headcount's roll calls to them.
func relay(t *testing.T, url string, rewrite map[string]func(map[string]any)) {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	skew, hc := fleet.Subjects{Prefix: skewPrefix}, fleet.Subjects{Prefix: fleet.DefaultPrefix}
	_, err = nc.Subscribe(skew.Report(service, "*"), func(m *nats.Msg) {
		id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		var body map[string]any
		if json.Unmarshal(m.Data, &body) != nil || rewrite[id] == nil {
			return
		}
		rewrite[id](body)
		data, _ := json.Marshal(body)
		_ = nc.Publish(hc.Report(service, id), data)
	})
	require.NoError(t, err)
	for _, svc := range []string{"", service} {
		to := skew.RollCall(svc)
		_, err = nc.Subscribe(hc.RollCall(svc), func(m *nats.Msg) { _ = nc.Publish(to, m.Data) })
		require.NoError(t, err)
	}
	require.NoError(t, nc.Flush())
}

// Components one release apart keep placing and scaling (docs/protocol.md,
// Versions): beside today's router and scaler, a follower whose reports
// carry fields this build does not know (a newer release's additions) and
// one whose reports lack the optional fields later releases added (an older
// release's) are both verified, placed on, and counted.
func TestMixedVersionReportsKeepPlacingAndScaling(t *testing.T) {
	s := newStack(t, 1)
	relay(t, s.url(), map[string]func(map[string]any){
		"f-newer": func(r map[string]any) {
			r["zone"] = "eu-west-1a"
			r["drain"] = map[string]any{"deadline_ms": 25000}
		},
		"f-older": func(r map[string]any) {
			for _, k := range []string{"moved_out", "capacity", "pod", "namespace"} {
				delete(r, k)
			}
		},
	})
	s.startLeader()
	s.follower("f-newer", "--prefix", skewPrefix)
	s.follower("f-older", "--prefix", skewPrefix)
	r := s.router("r-1")
	s.startScaler()
	s.waitRouted(r, 2)
	keda := s.keda()

	placed := map[string]int{}
	const n = 20
	for range n {
		code, id := e2e.Do(t, http.MethodPost, r.control+"/v1/streams/collection", `{"name":"posts"}`)
		require.Equal(t, http.StatusCreated, code, id)
		id = strings.TrimSpace(id)
		placed[id[:strings.IndexByte(id, '/')]]++
		st, code := e2e.Subscribe(t, r.streaming, id)
		require.Equal(t, http.StatusOK, code)
		t.Cleanup(st.Close)
	}
	assert.Positive(t, placed["f-newer"], "placed on the newer follower: %v", placed)
	assert.Positive(t, placed["f-older"], "placed on the older follower: %v", placed)
	require.Eventually(t, func() bool { v, err := live(keda); return err == nil && v == n }, wait, 20*time.Millisecond,
		"the scaler counts every instance of both")
	dropped, _ := e2e.Metric(r.control, `headcount_messages_dropped_total{reason="version"}`)
	assert.Zero(t, dropped, "no report dropped for its version")
}
