package metricsadapter_test

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	cmclient "k8s.io/metrics/pkg/client/custom_metrics"

	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/metricsadapter"
	"github.com/headcount-dev/headcount/natsembed"
	"github.com/headcount-dev/headcount/replicas"
)

const waitFor = 15 * time.Second

// podValues reads resource_instances of the pods matching sel, by pod name.
func podValues(c cmclient.CustomMetricsClient, sel labels.Selector) (map[string]int64, error) {
	list, err := c.NamespacedMetrics("default").GetForObjects(podKind, sel, metricsadapter.PodMetric, labels.Everything())
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, v := range list.Items {
		if v.DescribedObject.Kind != "Pod" || v.DescribedObject.Namespace != "default" || v.WindowSeconds == nil || v.Timestamp.IsZero() {
			return nil, fmt.Errorf("malformed value %+v", v)
		}
		out[v.DescribedObject.Name] = v.Value.Value()
	}
	return out, nil
}

// eventuallyPods waits until both API versions answer want for sel.
func (a *adapter) eventuallyPods(t *testing.T, sel labels.Selector, want map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		var got map[string]int64
		var err error
		agree := true
		for _, gv := range []schema.GroupVersion{v1beta2, v1beta1} {
			if got, err = podValues(a.clients[gv], sel); err != nil || !maps.Equal(got, want) {
				agree = false
				break
			}
		}
		if agree {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods %q: want %v, last %v (%v)", sel, want, got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// objectValue reads live_instances of one workload in both versions and
// requires them to agree.
func (a *adapter) objectValue(t *testing.T, kind schema.GroupKind, name string) (int64, error) {
	t.Helper()
	var values []int64
	for _, gv := range []schema.GroupVersion{v1beta2, v1beta1} {
		v, err := a.clients[gv].NamespacedMetrics("default").GetForObject(kind, name, metricsadapter.WorkloadMetric, labels.Everything())
		if err != nil {
			return 0, err
		}
		require.Equal(t, kind.Kind, v.DescribedObject.Kind)
		require.Equal(t, name, v.DescribedObject.Name)
		values = append(values, v.Value.Value())
	}
	require.Equal(t, values[0], values[1], "v1beta2 and v1beta1 disagree")
	return values[0], nil
}

func TestCustomMetricsFollowAgents(t *testing.T) {
	url := natstest.Server(t)
	hn := map[string]string{metricsadapter.DefaultServiceLabel: "hn"}
	a := startAdapter(t, adapterOptions{natsURL: url, objects: []runtime.Object{
		pod("hn-0", map[string]string{"app": "hn", "shard": "a"}),
		pod("hn-1", map[string]string{"app": "hn", "shard": "b"}),
		pod("other-0", map[string]string{"app": "other"}),
		deployment("hn-follower", hn),
		statefulSet("hn-sts", hn),
		deployment("unlabelled", map[string]string{"app": "x"}),
	}})
	f0 := follower(t, a.nc, "hn", "follower-0", "hn-0", 3*time.Second)
	f1 := follower(t, a.nc, "hn", "follower-1", "hn-1", 300*time.Millisecond)
	other := follower(t, a.nc, "other", "follower-0", "other-0", 3*time.Second)
	f0.Set(5)
	f1.Set(7)
	other.Set(3)
	// A follower elsewhere claiming hn-0's name: its report is not hn-0's.
	followerAt(t, a.nc, "127.0.0.2", "other", "impostor", "hn-0", 3*time.Second).Set(1000)
	require.Eventually(t, func() bool { _, ok := a.view.Member("other", "impostor"); return ok }, waitFor, 10*time.Millisecond)

	t.Run("all pods", func(t *testing.T) {
		a.eventuallyPods(t, labels.Everything(), map[string]int64{"hn-0": 5, "hn-1": 7, "other-0": 3})
	})
	t.Run("label selectors", func(t *testing.T) {
		a.eventuallyPods(t, labels.SelectorFromSet(labels.Set{"app": "hn"}), map[string]int64{"hn-0": 5, "hn-1": 7})
		a.eventuallyPods(t, labels.SelectorFromSet(labels.Set{"shard": "b"}), map[string]int64{"hn-1": 7})
		a.eventuallyPods(t, labels.SelectorFromSet(labels.Set{"app": "nothing"}), map[string]int64{})
	})
	t.Run("one pod by name", func(t *testing.T) {
		for _, gv := range []schema.GroupVersion{v1beta2, v1beta1} {
			v, err := a.clients[gv].NamespacedMetrics("default").GetForObject(podKind, "hn-1", metricsadapter.PodMetric, labels.Everything())
			require.NoError(t, err)
			require.Equal(t, int64(7), v.Value.Value())
			require.Equal(t, "hn-1", v.DescribedObject.Name)
			require.Equal(t, int64(1), *v.WindowSeconds) // ttl 300 ms, rounded up
		}
	})
	t.Run("object metric on the workloads", func(t *testing.T) {
		for _, kind := range []schema.GroupKind{depKind, stsKind} {
			name := map[schema.GroupKind]string{depKind: "hn-follower", stsKind: "hn-sts"}[kind]
			v, err := a.objectValue(t, kind, name)
			require.NoError(t, err)
			require.Equal(t, int64(12), v)
		}
	})
	t.Run("not found", func(t *testing.T) {
		c := a.clients[v1beta2].NamespacedMetrics("default")
		_, err := c.GetForObject(podKind, "no-such-pod", metricsadapter.PodMetric, labels.Everything())
		require.True(t, apierrors.IsNotFound(err), "unknown pod: %v", err)
		_, err = c.GetForObject(podKind, "hn-0", "no_such_metric", labels.Everything())
		require.True(t, apierrors.IsNotFound(err), "unknown metric: %v", err)
		_, err = c.GetForObject(depKind, "unlabelled", metricsadapter.WorkloadMetric, labels.Everything())
		require.True(t, apierrors.IsNotFound(err), "workload without service label: %v", err)
		_, err = c.GetForObject(depKind, "no-such-deployment", metricsadapter.WorkloadMetric, labels.Everything())
		require.True(t, apierrors.IsNotFound(err), "unknown workload: %v", err)
		_, err = a.clients[v1beta2].NamespacedMetrics("elsewhere").GetForObject(podKind, "hn-0", metricsadapter.PodMetric, labels.Everything())
		require.True(t, apierrors.IsNotFound(err), "pod of another namespace: %v", err)
	})
	t.Run("discovery lists the metrics", func(t *testing.T) {
		dc, err := discovery.NewDiscoveryClientForConfig(a.config)
		require.NoError(t, err)
		for _, gv := range []schema.GroupVersion{v1beta2, v1beta1} {
			list, err := dc.ServerResourcesForGroupVersion(gv.String())
			require.NoError(t, err)
			var names []string
			for _, r := range list.APIResources {
				names = append(names, r.Name)
			}
			require.ElementsMatch(t, []string{
				"pods/resource_instances", "deployments.apps/live_instances", "statefulsets.apps/live_instances",
				"pods/resource_graphs", "deployments.apps/live_graphs", "statefulsets.apps/live_graphs",
				"pods/resource_cost", "deployments.apps/live_cost", "statefulsets.apps/live_cost",
			}, names)
		}
		_, err = dc.ServerResourcesForGroupVersion("external.metrics.k8s.io/v1beta1")
		require.True(t, apierrors.IsNotFound(err), "external API off by default: %v", err)
	})
	t.Run("values follow changes", func(t *testing.T) {
		f0.Set(20)
		a.eventuallyPods(t, labels.Everything(), map[string]int64{"hn-0": 20, "hn-1": 7, "other-0": 3})
		require.Eventually(t, func() bool { v, err := a.objectValue(t, depKind, "hn-follower"); return err == nil && v == 27 }, waitFor, 10*time.Millisecond)
	})
	t.Run("an expired follower disappears", func(t *testing.T) {
		f1.Abandon() // silent, as if crashed: gone after its 300 ms TTL
		a.eventuallyPods(t, labels.Everything(), map[string]int64{"hn-0": 20, "other-0": 3})
		_, err := a.clients[v1beta2].NamespacedMetrics("default").GetForObject(podKind, "hn-1", metricsadapter.PodMetric, labels.Everything())
		require.True(t, apierrors.IsNotFound(err), "expired pod: %v", err)
		v, err := a.objectValue(t, depKind, "hn-follower")
		require.NoError(t, err)
		require.Equal(t, int64(20), v)
	})
}

// The graphs and cost variants of every metric: a follower holding 40
// instances of one definition weighs 1 graph, one holding 10 of ten 10; an
// agent that counts no graphs counts every instance as one.
func TestGraphsAndCostMetrics(t *testing.T) {
	url := natstest.Server(t)
	hn := map[string]string{metricsadapter.DefaultServiceLabel: "hn"}
	a := startAdapter(t, adapterOptions{natsURL: url, external: true, objects: []runtime.Object{
		pod("hn-0", nil), pod("hn-1", nil), pod("hn-2", nil), deployment("hn-follower", hn),
	}})
	hot := follower(t, a.nc, "hn", "follower-0", "hn-0", 3*time.Second)
	hot.SetGraphs(1)
	hot.Set(40)
	spread := follower(t, a.nc, "hn", "follower-1", "hn-1", 3*time.Second)
	spread.SetGraphs(10)
	spread.Set(10)
	follower(t, a.nc, "hn", "follower-2", "hn-2", 3*time.Second).Set(5) // counts no graphs
	a.eventuallyPods(t, labels.Everything(), map[string]int64{"hn-0": 40, "hn-1": 10, "hn-2": 5})

	c := a.clients[v1beta2].NamespacedMetrics("default")
	for metric, want := range map[string]map[string]string{
		metricsadapter.PodGraphsMetric: {"hn-0": "1", "hn-1": "10", "hn-2": "5"},
		metricsadapter.PodCostMetric:   {"hn-0": "5", "hn-1": "11", "hn-2": "5500m"},
	} {
		list, err := c.GetForObjects(podKind, labels.Everything(), metric, labels.Everything())
		require.NoError(t, err, metric)
		got := map[string]string{}
		for _, v := range list.Items {
			require.Equal(t, metric, v.Metric.Name)
			got[v.DescribedObject.Name] = v.Value.String()
		}
		require.Equal(t, want, got, metric)
	}
	for metric, want := range map[string]string{
		metricsadapter.WorkloadGraphsMetric: "16",
		metricsadapter.WorkloadCostMetric:   "21500m", // 16 graphs + 55 × 0.1
	} {
		v, err := c.GetForObject(depKind, "hn-follower", metric, labels.Everything())
		require.NoError(t, err, metric)
		require.Equal(t, want, v.Value.String(), metric)
	}
	ext := a.external(t).NamespacedMetrics("default")
	for metric, want := range map[string]string{metricsadapter.ExternalGraphsMetric: "16", metricsadapter.ExternalCostMetric: "21500m"} {
		list, err := ext.List(metric, labels.SelectorFromSet(labels.Set{"service": "hn"}))
		require.NoError(t, err, metric)
		require.Len(t, list.Items, 1)
		require.Equal(t, metric, list.Items[0].MetricName)
		require.Equal(t, want, list.Items[0].Value.String(), metric)
	}
}

func TestExternalMetricBehindFlag(t *testing.T) {
	url := natstest.Server(t)
	a := startAdapter(t, adapterOptions{natsURL: url, external: true})
	follower(t, a.nc, "hn", "follower-0", "hn-0", 3*time.Second).Set(4)
	follower(t, a.nc, "hn", "follower-1", "hn-1", 3*time.Second).Set(6)
	follower(t, a.nc, "other", "follower-0", "other-0", 3*time.Second).Set(1)
	c := a.external(t).NamespacedMetrics("default")
	read := func(sel labels.Selector) map[string]int64 {
		list, err := c.List(metricsadapter.ExternalMetric, sel)
		if err != nil {
			return nil
		}
		out := map[string]int64{}
		for _, v := range list.Items {
			out[v.MetricLabels[metricsadapter.ServiceKey]] = v.Value.Value()
		}
		return out
	}
	require.Eventually(t, func() bool {
		return maps.Equal(read(labels.SelectorFromSet(labels.Set{"service": "hn"})), map[string]int64{"hn": 10})
	}, waitFor, 10*time.Millisecond)
	require.Equal(t, map[string]int64{"hn": 10, "other": 1}, read(labels.Everything()))
	// A service nobody reports (scaled to zero) is 0, not an error.
	require.Equal(t, map[string]int64{"asleep": 0}, read(labels.SelectorFromSet(labels.Set{"service": "asleep"})))
	_, err := c.List("no_such_metric", labels.Everything())
	require.True(t, apierrors.IsNotFound(err), "unknown external metric: %v", err)
}

// TestStaleValuesThenUnavailableThenFresh stops the NATS server for real:
// the adapter serves the last values stamped with the disconnection, answers
// 503 once the outage is older than the bound, and serves fresh values once
// the server is back.
func TestStaleValuesThenUnavailableThenFresh(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Options{})
	require.NoError(t, err)
	port := srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { srv.Shutdown() }) // the server running at the end
	const bound = 3 * time.Second
	a := startAdapter(t, adapterOptions{natsURL: srv.ClientURL(), maxStaleness: bound,
		objects: []runtime.Object{pod("hn-0", nil)}})
	// A TTL far beyond the test: this checks the adapter's bound, not expiry.
	f := follower(t, a.nc, "hn", "follower-0", "hn-0", time.Minute)
	f.Set(9)
	a.eventuallyPods(t, labels.Everything(), map[string]int64{"hn-0": 9})
	c := a.clients[v1beta2].NamespacedMetrics("default")
	get := func() (int64, time.Time, error) {
		v, err := c.GetForObject(podKind, "hn-0", metricsadapter.PodMetric, labels.Everything())
		if err != nil {
			return 0, time.Time{}, err
		}
		return v.Value.Value(), v.Timestamp.Time, nil
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	require.Eventually(t, func() bool { return !a.view.StaleSince().IsZero() }, waitFor, 10*time.Millisecond)
	since := a.view.StaleSince()
	// Within the bound: the last value, stamped with the disconnection.
	n, at, err := get()
	if time.Since(since) < bound { // a machine this slow cannot check this half
		require.NoError(t, err)
		require.Equal(t, int64(9), n)
		require.Equal(t, since.Unix(), at.Unix())
	}
	// Past it, and not before: 503, which the HPA takes as "hold the replica count".
	var unavailable error
	var after time.Duration
	require.Eventually(t, func() bool {
		_, _, err := get()
		var status apierrors.APIStatus
		if errors.As(err, &status) && status.Status().Code == http.StatusServiceUnavailable {
			unavailable, after = err, time.Since(since)
			return true
		}
		return false
	}, waitFor, 50*time.Millisecond)
	require.GreaterOrEqual(t, after, bound, "503 within the bound: %v", unavailable)
	require.ErrorContains(t, unavailable, "NATS disconnected")

	// NATS back on its address: the client reconnects, the watcher calls the
	// roll and resumes the view, and values are fresh again.
	srv, err = natsembed.Start(natsembed.Options{Port: port})
	require.NoError(t, err)
	back := time.Now()
	f.Set(12)
	require.Eventually(t, func() bool {
		n, at, err := get()
		return err == nil && n == 12 && at.Unix() >= back.Unix()
	}, waitFor, 50*time.Millisecond)
	require.True(t, a.view.StaleSince().IsZero())
}

// hpaDesired is what the HPA controller decides for an AverageValue target,
// reimplemented from its documented algorithm
// (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details,
// pkg/controller/podautoscaler/replica_calculator.go), all pods ready and
// reporting: usageRatio = current metric value / target; within the
// tolerance of 1 the replica count stays; otherwise ceil(usageRatio ×
// pods) (Pods metric: the average over pods; Object metric with an
// AverageValue: the value over target × current replicas); then clamped to
// [minReplicas, maxReplicas].
func hpaDesired(current int64, perPod []int64, object int64, usePods bool, target float64, minR, maxR int64) int64 {
	const tolerance = 0.1
	var ratio float64
	if usePods {
		var sum int64
		for _, v := range perPod {
			sum += v
		}
		ratio = float64(sum) / float64(len(perPod)) / target
	} else {
		ratio = float64(object) / (target * float64(current))
	}
	desired := current
	if math.Abs(1-ratio) > tolerance {
		if usePods {
			desired = int64(math.Ceil(ratio * float64(len(perPod))))
		} else {
			desired = int64(math.Ceil(float64(object) / target))
		}
	}
	return min(max(desired, minR), maxR)
}

func TestHPADecisionMatchesReplicaArithmetic(t *testing.T) {
	url := natstest.Server(t)
	hn := map[string]string{metricsadapter.DefaultServiceLabel: "hn"}
	const followers = 3
	objects := []runtime.Object{deployment("hn-follower", hn)}
	for i := range followers {
		objects = append(objects, pod(fmt.Sprintf("hn-%d", i), map[string]string{"app": "hn"}))
	}
	a := startAdapter(t, adapterOptions{natsURL: url, objects: objects})
	var agents []interface{ Set(int64) }
	for i := range followers {
		agents = append(agents, follower(t, a.nc, "hn", fmt.Sprintf("follower-%d", i), fmt.Sprintf("hn-%d", i), 3*time.Second))
	}
	sel := labels.SelectorFromSet(labels.Set{"app": "hn"})
	pro, err := replicas.PlanNamed("pro")
	require.NoError(t, err)
	decisions := 0
	for _, counts := range [][3]int64{{0, 0, 0}, {90, 100, 110}, {100, 105, 120}, {250, 300, 280}, {10, 5, 0}, {400, 500, 600}, {1000, 1200, 900}} {
		want := map[string]int64{}
		for i, n := range counts {
			agents[i].Set(n)
			want[fmt.Sprintf("hn-%d", i)] = n
		}
		a.eventuallyPods(t, sel, want)
		got, err := podValues(a.clients[v1beta2], sel)
		require.NoError(t, err)
		perPod := make([]int64, 0, followers)
		for _, v := range got {
			perPod = append(perPod, v)
		}
		object, err := a.objectValue(t, depKind, "hn-follower")
		require.NoError(t, err)
		for _, target := range []float64{50, 100, 300} {
			policy := pro.Policy(target, false)
			// The Pods metric averages over the pods that exist: current = followers.
			hpa := hpaDesired(followers, perPod, object, true, target, pro.Min, pro.Max)
			require.Equal(t, policy.Desired(followers, object), hpa, "pods metric, counts %v target %v", counts, target)
			for _, current := range []int64{1, 2, followers, 7} {
				hpa := hpaDesired(current, nil, object, false, target, pro.Min, pro.Max)
				require.Equal(t, policy.Desired(current, object), hpa, "object metric, counts %v target %v current %d", counts, target, current)
				decisions++
			}
		}
	}
	t.Logf("%d HPA decisions equal replicas.Policy.Desired", decisions)
}

func TestNewNamesTheMissingSource(t *testing.T) {
	_, err := metricsadapter.New(metricsadapter.Config{})
	require.ErrorContains(t, err, "Config.Fleet is nil")
}
