package verify_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// Against the built binary (`headcount up`, demo leader and follower
// processes), a plain NATS client forges reports for a new follower at the
// test's own listener, for a new follower at the real follower's address, and
// for new incarnations of the real follower at both: the listener gets 0
// requests, every creation lands on the real follower, and its instance
// streams on (nothing was retired).
func TestForgedReportsAgainstTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	// The layer under test is verification, so NATS authorization (which
	// refuses these forgeries first: natsauth's tests) is out of the way:
	// up runs on an open NATS of the test's own.
	url := natstest.Server(t)
	up := e2e.StartUp(t, e2e.Binary(t), "--nats-url", url, "--min", "1", "--max", "1")
	nc := natstest.Connect(t, url)
	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}

	var mu sync.Mutex
	var real fleet.Report
	sub, err := nc.Subscribe(subjects.Report("demo", "*"), func(m *nats.Msg) {
		var r fleet.Report
		if json.Unmarshal(m.Data, &r) == nil && r.Role == fleet.RoleFollower && r.State == fleet.StateReady {
			mu.Lock()
			if real.Follower == "" {
				real = r
			}
			mu.Unlock()
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return real.Follower != "" }, 60*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		code, _ := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/collection", `{"name":"posts"}`)
		return code == http.StatusCreated
	}, 30*time.Second, 100*time.Millisecond, "the real follower takes creations")

	var reached atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != fleet.IdentityPath {
			reached.Add(1)
		}
		http.Error(w, "not a headcount agent", http.StatusTeapot)
	}))
	t.Cleanup(attacker.Close)
	evil := attacker.Listener.Addr().String()
	forge := func(follower, incarnation, control, streaming string) {
		r := real
		r.Follower, r.Incarnation, r.Control, r.Streaming = follower, incarnation, control, streaming
		r.Seq, r.TTLMillis, r.Instances = 1<<62, fleet.MaxTTLMillis, 0
		data, err := json.Marshal(r)
		require.NoError(t, err)
		require.NoError(t, nc.Publish(subjects.Report("demo", follower), data))
	}
	forge("follower-evil", "evil", evil, evil)
	forge("follower-twin", "twin", real.Control, real.Streaming)
	forge(real.Follower, "hijack", evil, evil)
	require.NoError(t, nc.Flush())
	// The next claim to the real id must come after the first one's probe.
	require.Eventually(t, func() bool { return dropped(t, up.Control, fleet.ReasonUnverified) >= 3 }, 30*time.Second, 50*time.Millisecond)
	forge(real.Follower, "restart", real.Control, real.Streaming)
	require.NoError(t, nc.Flush())
	require.Eventually(t, func() bool { return dropped(t, up.Control, fleet.ReasonUnverified) >= 4 }, 30*time.Second, 50*time.Millisecond,
		"%s", metricLines(t, up.Control, "headcount_messages"))

	var id string
	for range 20 {
		code, body := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/collection", `{"name":"posts"}`)
		require.Equal(t, http.StatusCreated, code, body)
		require.True(t, strings.HasPrefix(body, real.Follower+"/"), body)
		id = body
	}
	st, code := e2e.Subscribe(t, up.Streaming, id)
	require.Equal(t, http.StatusOK, code)
	assert.Equal(t, "init", st.Next(t).Kind, "the real incarnation still owns its instances")
	assert.Zero(t, reached.Load(), "nothing but identity probes reached the attacker's listener")
}

// dropped reads headcount_messages_dropped_total{reason} from the router's /metrics.
func dropped(t *testing.T, control, reason string) int {
	t.Helper()
	_, body := e2e.Do(t, http.MethodGet, control+"/metrics", "")
	prefix := `headcount_messages_dropped_total{reason="` + reason + `"} `
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n int
			_ = json.Unmarshal([]byte(v), &n)
			return n
		}
	}
	return 0
}

func metricLines(t *testing.T, control, prefix string) string {
	t.Helper()
	_, body := e2e.Do(t, http.MethodGet, control+"/metrics", "")
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) || strings.HasPrefix(line, "headcount_unverified") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
