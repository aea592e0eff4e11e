package metricsadapter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/benchtest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/metricsadapter"
)

// BenchmarkCountChangeVisible: a real agent's count change until the custom
// metrics client (v1beta2, over TLS) reads it for the agent's pod. Changes
// are spaced beyond the agent's 50 ms coalescing so that each one measures
// the path, not the coalescing window.
func BenchmarkCountChangeVisible(b *testing.B) {
	a := startAdapter(b, adapterOptions{natsURL: natstest.Server(b)})
	f := follower(b, a.nc, "bench", "follower-0", "bench-0", 3*time.Second)
	c := a.clients[v1beta2].NamespacedMetrics("default")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		time.Sleep(60 * time.Millisecond)
		b.StartTimer()
		want := int64(i + 1)
		start := time.Now()
		f.Set(want)
		for {
			v, err := c.GetForObject(podKind, "bench-0", metricsadapter.PodMetric, labels.Everything())
			if err == nil && v.Value.Value() == want {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("count %d never visible: %v", want, err)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	benchtest.ReportLatencies(b, lat)
}

// BenchmarkGetMetricBySelector10k: one Pods-metric request with the HPA's
// label selector over 10,000 followers, in the provider alone and through
// the client (HTTPS, JSON of 10,000 values).
func BenchmarkGetMetricBySelector10k(b *testing.B) {
	const n = 10_000
	objects := make([]runtime.Object, 0, n)
	for i := range n {
		objects = append(objects, pod(fmt.Sprintf("bench-%d", i), map[string]string{"app": "bench"}))
	}
	a := startAdapter(b, adapterOptions{natsURL: natstest.Server(b), objects: objects})
	now := time.Now()
	for i := range n {
		a.view.Apply(fleet.Report{
			V: fleet.Version, Service: "bench", Follower: fmt.Sprintf("follower-%d", i), Incarnation: "bench",
			Role: fleet.RoleFollower, State: fleet.StateReady, Control: "127.0.0.1:8081", Streaming: "127.0.0.1:8080",
			Instances: int64(i % 100), Seq: 1, TTLMillis: fleet.MaxTTLMillis,
			Pod: fmt.Sprintf("bench-%d", i), Namespace: "default",
		}, now)
	}
	sel := labels.SelectorFromSet(labels.Set{"app": "bench"})
	p, err := metricsadapter.New(metricsadapter.Config{Fleet: a.view, Link: a.view, Cluster: a.cluster, MaxStaleness: time.Minute, VerifyPodIP: true})
	require.NoError(b, err)
	info := provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: metricsadapter.PodMetric}
	b.Run("provider", func(b *testing.B) {
		for b.Loop() {
			list, err := p.GetMetricBySelector(context.Background(), "default", sel, info, labels.Everything())
			if err != nil || len(list.Items) != n {
				b.Fatalf("%d items, %v", len(list.Items), err)
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		c := a.clients[v1beta2].NamespacedMetrics("default")
		for b.Loop() {
			list, err := c.GetForObjects(podKind, sel, metricsadapter.PodMetric, labels.Everything())
			if err != nil || len(list.Items) != n {
				b.Fatalf("%v", err)
			}
		}
	})
}
