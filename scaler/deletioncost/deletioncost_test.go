package deletioncost

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/headcount-dev/headcount/fleet"
)

const wait = 10 * time.Second

type fixture struct {
	t      *testing.T
	client *fake.Clientset
	view   *fleet.View
	ctrl   *Controller
	seq    map[string]uint64
}

func newFixture(t *testing.T, cfg Config, pods ...string) *fixture {
	client := fake.NewClientset()
	for _, name := range pods {
		require.NoError(t, client.Tracker().Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}))
	}
	f := &fixture{t: t, client: client, view: fleet.NewView(), seq: map[string]uint64{}}
	f.ctrl = New(client.CoreV1(), f.view, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	return f
}

// report applies a member's report to the view and tells the controller, as
// the scaler's NATS watcher does.
func (f *fixture) report(follower, pod string, role fleet.Role, instances int64) {
	f.seq[follower]++
	r := fleet.Report{
		V: fleet.Version, Service: "hackernews", Follower: follower, Incarnation: "i-" + follower,
		Role: role, State: fleet.StateReady, Control: "10.0.0.1:8081", Streaming: "10.0.0.1:8080",
		Instances: instances, Created: instances, Seq: f.seq[follower], TTLMillis: 60_000,
		Pod: pod, Namespace: "default",
	}
	require.NoError(f.t, r.Validate(fleet.AddressPolicy{}))
	f.view.Apply(r, time.Now())
	f.ctrl.Notify("hackernews")
}

func (f *fixture) cost(pod string) string {
	p, err := f.client.CoreV1().Pods("default").Get(context.Background(), pod, metav1.GetOptions{})
	require.NoError(f.t, err)
	return p.Annotations[Annotation]
}

func (f *fixture) patches(pod string) int {
	n := 0
	for _, a := range f.client.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok && a.GetVerb() == "patch" && p.GetName() == pod {
			n++
		}
	}
	return n
}

func (f *fixture) eventuallyCost(pod, want string) {
	f.t.Helper()
	require.Eventually(f.t, func() bool { return f.cost(pod) == want }, wait, 5*time.Millisecond, "%s cost %s", pod, want)
}

func TestCostsFollowCountsAndPatchOnlyOnChange(t *testing.T) {
	f := newFixture(t, Config{QPS: 1000, Burst: 100, Every: time.Millisecond}, "hn-a", "hn-b", "hn-leader")
	f.report("follower-a", "hn-a", fleet.RoleFollower, 5)
	f.report("follower-b", "hn-b", fleet.RoleFollower, 0)
	f.report("leader", "hn-leader", fleet.RoleLeader, 9)
	f.report("follower-x", "not-in-cluster", fleet.RoleFollower, 3)
	f.eventuallyCost("hn-a", "5")
	f.eventuallyCost("hn-b", "0")

	// Heartbeats with the same counts patch nothing.
	f.report("follower-a", "hn-a", fleet.RoleFollower, 5)
	f.report("follower-b", "hn-b", fleet.RoleFollower, 0)
	f.report("follower-x", "not-in-cluster", fleet.RoleFollower, 3)
	// A change patches that pod only; passes run in order, so once it shows,
	// the heartbeats' pass is over.
	f.report("follower-a", "hn-a", fleet.RoleFollower, 7)
	f.eventuallyCost("hn-a", "7")
	assert.Equal(t, 2, f.patches("hn-a"))
	assert.Equal(t, 1, f.patches("hn-b"))
	assert.Equal(t, 1, f.patches("not-in-cluster"), "a missing pod is not asked for again until its count changes")
	assert.Equal(t, 0, f.patches("hn-leader"), "the leader is not a follower pod")
	assert.Equal(t, "", f.cost("hn-leader"))
}

func TestPatchesAreRateLimited(t *testing.T) {
	f := newFixture(t, Config{QPS: 0.001, Burst: 1, Every: time.Millisecond}, "hn-a", "hn-b", "hn-c")
	f.report("follower-a", "hn-a", fleet.RoleFollower, 1)
	f.report("follower-b", "hn-b", fleet.RoleFollower, 2)
	f.report("follower-c", "hn-c", fleet.RoleFollower, 3)
	require.Eventually(t, func() bool { return len(f.client.Actions()) == 1 }, wait, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	assert.Len(t, f.client.Actions(), 1, "the burst is spent: the next patch waits for the limiter")
}

func TestCost(t *testing.T) {
	assert.Equal(t, int32(0), cost(0))
	assert.Equal(t, int32(42), cost(42))
	assert.Equal(t, int32(2147483647), cost(fleet.MaxInstances*1000))
}
