package k8se2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/headcount-dev/headcount/natsembed"
)

const (
	namespace = "headcount"
	follower  = "demo-follower"
	service   = "demo"
)

var followerSelector = metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + follower}

// startNATS runs an embedded NATS server on host for t.
func startNATS(t *testing.T, host string) string {
	t.Helper()
	s, err := natsembed.Start(natsembed.Options{Host: host})
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// saKubeconfig is a kubeconfig holding a fresh token of ServiceAccount
// namespace/name: headcount's processes act with the rights deploy/ grants.
func saKubeconfig(t *testing.T, c *cluster, ns, name string) string {
	t.Helper()
	tr, err := c.client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}},
		metav1.CreateOptions{})
	require.NoError(t, err)
	path, err := c.writeKubeconfig(ns+"-"+name, tr.Status.Token)
	require.NoError(t, err)
	return path
}

// runHeadcount starts argv (the binary first) for t; stopped when t ends.
func runHeadcount(t *testing.T, name string, argv ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	p, err := start(dir, name, argv...)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, p.output())
		}
	})
	return p
}

func scale(t *testing.T, c *cluster, n int32) {
	t.Helper()
	_, err := c.client.AppsV1().Deployments(namespace).UpdateScale(context.Background(), follower,
		&autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: follower, Namespace: namespace},
			Spec: autoscalingv1.ScaleSpec{Replicas: n}}, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// livePods are the follower pods not being deleted, oldest first.
func livePods(ctx context.Context, c *cluster) ([]corev1.Pod, error) {
	list, err := c.client.CoreV1().Pods(namespace).List(ctx, followerSelector)
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	slices.SortStableFunc(pods, func(a, b corev1.Pod) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	return pods, nil
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
	}
	return names
}

func waitPods(t *testing.T, c *cluster, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	eventually(t, time.Minute, func() string { return fmt.Sprintf("want %d pods, have %v", n, podNames(pods)) },
		func(ctx context.Context) bool {
			var err error
			pods, err = livePods(ctx, c)
			return err == nil && len(pods) == n
		})
	return pods
}

// Deletion cost for real: with `headcount scaler --deletion-cost` (as the
// ServiceAccount deploy/rbac grants), scaling the follower Deployment down
// makes the ReplicaSet controller delete exactly the pods with the fewest
// live instances; without the annotation it would delete the newest.
//
// No kubelet runs, so the pods stay Pending and unscheduled: the ReplicaSet
// controller's ranking (controller.ActivePodsWithRanks) compares
// scheduled-ness, phase and readiness first, which are equal for all of
// them, then the deletion cost, then age (newest first). The test sets no
// pod status. The fewest instances go to the OLDEST pods, so the deletion
// cost and the default order disagree and the outcome tells them apart.
func TestDeletionCostPicksTheEmptiestFollowers(t *testing.T) {
	c, _ := proScaledByHand(t)

	natsURL := startNATS(t, c.host)
	kubeconfig := saKubeconfig(t, c, namespace, "headcount-scaler")
	runHeadcount(t, "scaler", env.headcount, "scaler", "--nats-url", natsURL,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--deletion-cost", "--kubeconfig", kubeconfig, "--deletion-cost-every", "100ms")

	// Two pods, then two more at least a second later: creation timestamps
	// have a one-second resolution and the ReplicaSet controller's last
	// criterion is age.
	scale(t, c, 0)
	waitPods(t, c, 0)
	scale(t, c, 2)
	first := waitPods(t, c, 2)
	time.Sleep(1100 * time.Millisecond)
	scale(t, c, 4)
	pods := waitPods(t, c, 4)
	require.Equal(t, podNames(first), podNames(pods[:2]), "the first two are the oldest")
	require.True(t, pods[1].CreationTimestamp.Before(&pods[2].CreationTimestamp), "two ages")

	nc, err := nats.Connect(natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	counts := map[string]int64{pods[0].Name: 1, pods[1].Name: 2, pods[2].Name: 40, pods[3].Name: 30}
	for _, p := range pods {
		f, err := startFollower(nc, c.host, p.Name)
		require.NoError(t, err)
		t.Cleanup(f.stop)
		f.Set(counts[p.Name])
	}

	// The scaler annotates each pod with its live instances.
	waitDeletionCosts(t, c, counts)

	scale(t, c, 2)
	left := waitPods(t, c, 2)
	require.ElementsMatch(t, []string{pods[2].Name, pods[3].Name}, podNames(left),
		"the two followers with the most instances stay; the emptiest (and oldest) go")
}
