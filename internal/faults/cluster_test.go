package faults_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/internal/e2e"
)

// Three clustered NATS nodes; every process is given all three in
// --nats-url (a comma list) and connects to one of them at random. One node
// dies under load: its clients move to the others, no creation fails, and
// the views stay whole throughout.
func TestOneOfThreeNATSNodesDiesUnderLoad(t *testing.T) {
	s := newStack(t, 3)
	s.startLeader()
	s.follower("f-1")
	s.follower("f-2")
	r1, r2 := s.router("r-1"), s.router("r-2")
	s.startScaler()
	s.waitRouted(r1, 2)
	s.waitRouted(r2, 2)
	keda := s.keda()
	load := &e2e.Load{Endpoints: s.endpoints, Workers: 4, Every: 50 * time.Millisecond, KeepStreams: 10_000}
	load.Start()
	require.Eventually(t, func() bool { v, err := live(keda); return err == nil && v >= 20 }, wait, 20*time.Millisecond)

	clients := func(i int) int { return s.nats[i].srv.NumClients() }
	t.Logf("clients per node before: %d %d %d", clients(0), clients(1), clients(2))
	victim := 0
	for i := range s.nats { // the busiest node, to move the most clients
		if clients(i) > clients(victim) {
			victim = i
		}
	}
	lowest, _ := live(keda)
	s.stopNATS(victim)
	killed := time.Now()
	var broken []string
	for time.Since(killed) < 3*time.Second {
		for _, r := range []*routerProc{r1, r2} {
			ready, _ := e2e.Metric(r.control, `headcount_followers{service="svc",state="ready"}`)
			leaders, _ := e2e.Metric(r.control, `headcount_leaders{service="svc"}`)
			if ready != 2 || leaders != 1 {
				broken = append(broken, r.id)
			}
		}
		v, err := live(keda)
		require.NoError(t, err)
		lowest = min(lowest, v)
		time.Sleep(50 * time.Millisecond)
	}
	counts := load.Stop()
	t.Logf("%v", counts)
	t.Logf("after node %d died: clients per node %v; scaler's lowest GetMetrics %v", victim, func() (n []int) {
		for i := range s.nats {
			if s.nats[i].srv != nil {
				n = append(n, clients(i))
			}
		}
		return n
	}(), lowest)
	assert.Empty(t, broken, "a router's view lost followers or the leader")
	assert.Zero(t, e2e.Failures(counts.CreateFailed), "failed creations: %v", counts.CreateFailed)
	assert.Zero(t, e2e.Failures(counts.StreamFailed), "failed subscriptions: %v", counts.StreamFailed)
	assert.Zero(t, e2e.Failures(counts.WriteFailed), "failed writes: %v", counts.WriteFailed)
	assert.Zero(t, e2e.Failures(counts.StreamsCut), "streams cut: %v", counts.StreamsCut)
	assert.GreaterOrEqual(t, lowest, 20.0, "the scaler's figure never dropped")
}
