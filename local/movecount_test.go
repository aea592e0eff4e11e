package local_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/e2e"
	"github.com/headcount-dev/headcount/internal/natstest"
)

// highWater records the most a fleet view and up's decisions ever said while
// moves were under way: a move's instance counted twice raises the live count
// above the streams open, and with few streams per replica the target with it.
type highWater struct {
	mu     sync.Mutex
	live   int64 // the most the view counted since the last reset
	metric int64 // the most KEDA's GetMetrics answered since the last reset
	// target is the highest target up raised to since the last reset: a
	// target the scale-down window still holds from before it is no new
	// decision.
	target   int64
	owners   map[string]string
	moves    int
	decision fleet.Decision
}

func (h *highWater) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.live, h.metric, h.target = 0, 0, 0
}

func (h *highWater) peaks() (live, metric, target int64, moves int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live, h.metric, h.target, h.moves
}

// pollMetrics asks up's scaler what KEDA would read, every 10 ms until the
// test ends.
func (h *highWater) pollMetrics(t *testing.T, addr string) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	keda := externalscaler.NewExternalScalerClient(cc)
	ref := &externalscaler.ScaledObjectRef{Name: "demo", Namespace: "default",
		ScalerMetadata: map[string]string{"service": "demo", "targetInstancesPerReplica": "3"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			res, err := keda.GetMetrics(ctx, &externalscaler.GetMetricsRequest{ScaledObjectRef: ref, MetricName: "headcount-demo"})
			if err == nil && len(res.MetricValues) == 1 {
				h.mu.Lock()
				h.metric = max(h.metric, int64(res.MetricValues[0].MetricValueFloat))
				h.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
}

// owner follows an id through the moves announced so far.
func (h *highWater) owner(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for range 8 {
		to, ok := h.owners[id]
		if !ok {
			break
		}
		id = to
	}
	follower, _, _ := strings.Cut(id, "/")
	return follower
}

// The observed case (docs/moving.md): up with 6 streams at --target 3 runs
// 2 followers; the rebalance that spreads the streams over the second one,
// then the drain that takes the fleet back to one follower, move streams.
// At no moment may the live count exceed the streams open, nor up decide a
// target those streams do not warrant.
func TestUpMovesCountEachInstanceOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	bin := e2e.Binary(t)
	// Least-loaded: its rebalancer evens 6 streams out to 3/3, which the
	// counts below rely on; affinity's bound lets 6 definitions rest 4/2 on
	// 2 followers (within one placement of 1.25 × the mean: docs/placement.md).
	up := e2e.StartUp(t, bin, "--target", "3", "--plan", "pro", "--placement", "least-loaded",
		"--scale-down-window", "3s", "--instance-ttl", "1s", "--drain-timeout", "20s")
	nc := natstest.Connect(t, up.NATS, nats.UserCredentials(up.Creds))
	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}

	h := &highWater{owners: map[string]string{}}
	view := fleet.NewView()
	w, err := fleet.Watch(nc, view, fleet.WatchConfig{Services: []string{"demo"}})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	w.OnChange(func(string) {
		live := view.Totals("demo").Live()
		h.mu.Lock()
		h.live = max(h.live, live)
		h.mu.Unlock()
	})
	w.OnMoved(func(_ string, m fleet.Moved) {
		h.mu.Lock()
		if _, seen := h.owners[m.From]; !seen {
			h.moves++
		}
		h.owners[m.From] = m.To
		h.mu.Unlock()
	})
	sub, err := nc.Subscribe(subjects.Decision("demo"), func(msg *nats.Msg) {
		d, err := fleet.DecodeDecision(msg.Data, "demo")
		if err != nil {
			return
		}
		h.mu.Lock()
		if d.Target > h.decision.Target {
			h.target = max(h.target, d.Target)
		}
		h.decision = d
		h.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	h.pollMetrics(t, up.Scaler)

	totals := func() fleet.Totals { return view.Totals("demo") }
	require.Eventually(t, func() bool { return totals().Ready == 1 }, 30*time.Second, 50*time.Millisecond, "one follower at rest")

	// Six streams: ceil(6/3) = 2 followers. The second one starts empty and
	// the rebalance moves streams onto it.
	streams := map[string]*e2e.Stream{}
	for i := range 6 {
		code, id := e2e.Do(t, http.MethodPost, up.Control+"/v1/streams/collection", fmt.Sprintf(`{"name":"posts-%d"}`, i))
		require.Equal(t, http.StatusCreated, code, "creation %d: %s", i, id)
		s, code := e2e.Subscribe(t, up.Streaming, id)
		require.Equal(t, http.StatusOK, code, "stream %d (%s)", i, id)
		require.Equal(t, "init", s.Next(t).Kind)
		streams[id] = s
	}
	perFollower := func() map[string]int64 {
		out := map[string]int64{}
		for _, m := range view.Members("demo") {
			if m.Role == fleet.RoleFollower {
				out[m.Follower] = m.Instances
			}
		}
		return out
	}
	require.Eventually(t, func() bool {
		n := perFollower()
		_, _, _, moves := h.peaks()
		return totals().Ready == 2 && len(n) == 2 && moves >= 1 && func() bool {
			for _, c := range n {
				if c != 3 {
					return false
				}
			}
			return true
		}()
	}, 60*time.Second, 50*time.Millisecond, "6 streams spread 3/3 over 2 followers; view: %+v, per follower %v", totals(), perFollower())
	live, metric, target, moves := h.peaks()
	require.LessOrEqual(t, live, int64(6), "the view counted more instances than the 6 streams while %d moved (up decided up to %d followers)", moves, target)
	require.Equal(t, int64(6), metric, "KEDA's GetMetrics peaked at the 6 streams, never above")
	require.LessOrEqual(t, target, int64(2), "up decided a target 6 streams at 3 per replica do not warrant")

	// Leave 3 streams, 2 on one follower and 1 on the other: the target
	// falls to 1 and the follower up stops has its stream moved.
	byOwner := map[string][]string{}
	for id := range streams {
		o := h.owner(id)
		byOwner[o] = append(byOwner[o], id)
	}
	require.Len(t, byOwner, 2, "streams by owner: %v", byOwner)
	closeN := 1
	for _, ids := range byOwner {
		for _, id := range ids[:closeN] {
			streams[id].Close()
			delete(streams, id)
		}
		closeN++
	}
	require.Eventually(t, func() bool { return totals().Live() == 3 }, 30*time.Second, 20*time.Millisecond,
		"the 3 instances left go after the instance ttl; view: %+v", totals())
	h.reset()
	_, _, _, movesBefore := h.peaks()
	require.Eventually(t, func() bool {
		tot := totals()
		return tot.Ready == 1 && tot.Draining == 0 && tot.Starting == 0 && tot.Instances == 3
	}, 60*time.Second, 50*time.Millisecond, "back to one follower serving the 3 streams; view: %+v", totals())
	live, metric, target, moves = h.peaks()
	require.Greater(t, moves, movesBefore, "the drain moved the stopped follower's stream")
	require.LessOrEqual(t, live, int64(3), "the view counted more instances than the 3 streams while streams moved")
	require.Equal(t, int64(3), metric, "KEDA's GetMetrics peaked at the 3 streams, never above")
	require.LessOrEqual(t, target, int64(1), "up decided a target 3 streams at 3 per replica do not warrant")
	for id, s := range streams {
		require.True(t, s.Open(), "stream %s was cut", id)
	}
	up.Stop(t, 30*time.Second)
}
