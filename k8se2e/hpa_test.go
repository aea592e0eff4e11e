package k8se2e

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/headcount-dev/headcount/internal/certtest"
	"github.com/headcount-dev/headcount/replicas"
)

const node = "k8se2e-node"

// kubelet plays the one part of a kubelet the HPA needs: it binds each new
// follower pod to a Node object, sets its status Running and Ready (the HPA
// ignores Pending pods), and starts a fake follower reporting for it, as
// the follower in that pod would; it removes pods being deleted (a kubelet
// confirms the deletion once the containers stopped) and stops their agent.
// No container runs: the counts are the test's.
type kubelet struct {
	c      *cluster
	nc     *nats.Conn
	mu     sync.Mutex
	agents map[string]*fakeFollower
	stop   chan struct{}
	done   chan struct{}
	errs   []error
}

func startKubelet(t *testing.T, c *cluster, nc *nats.Conn) *kubelet {
	t.Helper()
	_, err := c.client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	k := &kubelet{c: c, nc: nc, agents: map[string]*fakeFollower{}, stop: make(chan struct{}), done: make(chan struct{})}
	go k.run()
	t.Cleanup(func() {
		close(k.stop)
		<-k.done
		for _, f := range k.agents {
			f.stop()
		}
	})
	return k
}

func (k *kubelet) run() {
	defer close(k.done)
	for {
		select {
		case <-k.stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if err := k.sync(context.Background()); err != nil {
			k.mu.Lock()
			k.errs = append(k.errs, err)
			k.mu.Unlock()
		}
	}
}

func (k *kubelet) sync(ctx context.Context) error {
	pods := k.c.client.CoreV1().Pods(namespace)
	list, err := pods.List(ctx, followerSelector)
	if err != nil {
		return err
	}
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp != nil {
			k.forget(p.Name)
			if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			continue
		}
		if p.Spec.NodeName == "" {
			if err := pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: namespace},
				Target: corev1.ObjectReference{Kind: "Node", Name: node}}, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("bind %s: %w", p.Name, err)
			}
			continue // running on the next pass, as the pod it reads then is bound
		}
		if p.Status.Phase != corev1.PodRunning {
			// The pod's IP is where its follower listens (the adapter
			// counts a report only from one of its pod's IPs).
			ip := k.c.host
			now := metav1.Now()
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &now,
				Conditions: []corev1.PodCondition{
					{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
					{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
					{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
					{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				}}
			if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("status of %s: %w", p.Name, err)
			}
		}
		k.mu.Lock()
		if _, ok := k.agents[p.Name]; !ok {
			f, err := startFollower(k.nc, k.c.host, p.Name)
			if err != nil {
				k.mu.Unlock()
				return err
			}
			k.agents[p.Name] = f
		}
		k.mu.Unlock()
	}
	return nil
}

func (k *kubelet) forget(pod string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if f, ok := k.agents[pod]; ok {
		f.stop()
		delete(k.agents, pod)
	}
}

// set makes the follower in pod hold n instances, once its agent runs.
func (k *kubelet) set(t *testing.T, pod string, n int64) {
	t.Helper()
	eventually(t, 30*time.Second, func() string { return "an agent for " + pod + "; kubelet errors: " + k.errors() },
		func(context.Context) bool {
			k.mu.Lock()
			defer k.mu.Unlock()
			a, ok := k.agents[pod]
			if ok {
				a.Set(n)
			}
			return ok
		})
}

func (k *kubelet) errors() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s []string
	for _, e := range k.errs[max(0, len(k.errs)-3):] {
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}

var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// HPA path for real: headcount-adapter runs as the aggregated
// custom.metrics.k8s.io (in a network namespace: the API server reaches it
// at a non-loopback endpoint, as it would a pod) with the certificate the
// overlay's Certificate describes, its APIServices become Available (the
// aggregator verifying it with the injected caBundle), and the overlays/hpa HPA moves the follower Deployment's
// spec.replicas to what replicas/ predicts as agents report counts over
// NATS: up, then down after a short stabilization window.
func TestHPAScalesOnTheAdaptersMetric(t *testing.T) {
	c := need(t)
	if env.ns == nil {
		skip(t, env.nsReason)
	}
	if env.adapter == "" {
		skip(t, "cmd/headcount-adapter is not in this tree (the adapter branch is not merged)")
	}
	ctx := context.Background()
	a := newApplier(t, c)
	installCRDs(t, a)
	tlsDir := injectAdapterCA(t, a, a.applyOverlay(t, "hpa"))

	// The adapter's endpoint, which the aggregator routes to: its address in
	// the namespace (no kubelet reports the adapter pod's IP, and an
	// endpoint may not be loopback). No endpoint controller runs to replace it.
	_, err := c.client.DiscoveryV1().EndpointSlices(namespace).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "headcount-adapter-k8se2e", Labels: map[string]string{discoveryv1.LabelServiceName: "headcount-adapter"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{env.ns.nsIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("https"), Port: ptr(int32(6443))}},
	}, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}

	natsURL := startNATS(t, c.host)
	kubeconfig := saKubeconfig(t, c, namespace, "headcount-adapter")
	adapter := runHeadcount(t, "adapter", env.ns.exec(env.adapter,
		"--nats-url", natsURL, "--secure-port", "6443", "--bind-address", env.ns.nsIP,
		"--http-addr", net.JoinHostPort(env.ns.nsIP, "0"),
		"--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
		"--lister-kubeconfig", kubeconfig, "--pod-selector", "headcount.dev/role=follower",
		"--tls-cert-file", filepath.Join(tlsDir, "tls.crt"), "--tls-private-key-file", filepath.Join(tlsDir, "tls.key"))...)

	for _, v := range []string{"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"} {
		waitAPIService(t, c, a, v, func() string { return "\nadapter: " + adapter.output() })
	}

	// Short windows for the test; the overlay's are production's.
	hpas := c.client.AutoscalingV2().HorizontalPodAutoscalers(namespace)
	h, err := hpas.Get(ctx, follower, metav1.GetOptions{})
	require.NoError(t, err)
	h.Spec.Behavior = &autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleUp: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr(int32(0)),
			Policies: []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 1000, PeriodSeconds: 1}}},
		ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr(int32(3)),
			Policies: []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 1}}},
	}
	_, err = hpas.Update(ctx, h, metav1.UpdateOptions{})
	require.NoError(t, err)

	nc, err := nats.Connect(natsURL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	k := startKubelet(t, c, nc)

	scale(t, c, 1)
	first := waitPods(t, c, 1)[0].Name
	policy := pro().Policy(h.Spec.Metrics[0].Pods.Target.AverageValue.AsApproximateFloat64(), false)
	replicasNow := func() int32 {
		d, err := c.client.AppsV1().Deployments(namespace).Get(ctx, follower, metav1.GetOptions{})
		require.NoError(t, err)
		return *d.Spec.Replicas
	}
	expect := func(live int64, step string) {
		t.Helper()
		want := int32(policy.Desired(int64(replicasNow()), live))
		var got int32
		var status string
		eventually(t, 90*time.Second, func() string {
			return fmt.Sprintf("%s: spec.replicas %d, want %d (replicas/ for %d live); HPA: %s; kubelet: %s",
				step, got, want, live, status, k.errors())
		}, func(ctx context.Context) bool {
			c.check(t)
			got = replicasNow()
			if h, err := hpas.Get(ctx, follower, metav1.GetOptions{}); err == nil {
				status = hpaStatus(h)
			}
			return got == want
		})
		t.Logf("%s: %d live instances → %d replicas (%s)", step, live, got, status)
	}

	k.set(t, first, 350)
	expect(350, "up")
	k.set(t, first, 120)
	expect(120, "down")
}

// injectAdapterCA plays cert-manager for the overlay's adapter (no
// cert-manager runs here): it issues the certificate the overlay's
// Certificate asks for (its DNS names and usage) from a CA of its own,
// writes it where the adapter reads it, and writes the CA into the
// caBundle of every APIService whose cert-manager.io/inject-ca-from names
// that Certificate, as cainjector would. The aggregator then verifies the
// adapter with it: the APIServices have no insecureSkipTLSVerify.
func injectAdapterCA(t *testing.T, a *applier, objs []*unstructured.Unstructured) string {
	t.Helper()
	var cert *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Certificate" && o.GetName() == "headcount-adapter-tls" {
			cert = o
		}
	}
	require.NotNil(t, cert, "the overlay's adapter Certificate")
	dnsNames, _, err := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	require.NoError(t, err)
	usages, _, err := unstructured.NestedStringSlice(cert.Object, "spec", "usages")
	require.NoError(t, err)
	require.Equal(t, []string{"server auth"}, usages)
	ca, err := certtest.New("headcount CA")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, ca.Write(dir, "ca.crt", "tls.crt", "tls.key", &x509.Certificate{
		Subject: pkix.Name{CommonName: "headcount-adapter"}, DNSNames: dnsNames, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	require.NoError(t, err)
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": caPEM}})
	require.NoError(t, err)
	injected := 0
	for _, o := range objs {
		if o.GetKind() != "APIService" {
			continue
		}
		_, skip, _ := unstructured.NestedBool(o.Object, "spec", "insecureSkipTLSVerify")
		require.False(t, skip, "%s verifies the adapter", o.GetName())
		require.Equal(t, namespace+"/"+cert.GetName(), o.GetAnnotations()["cert-manager.io/inject-ca-from"], o.GetName())
		_, err := a.dyn.Resource(apiServices).Patch(context.Background(), o.GetName(), types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: "cert-manager-cainjector"})
		require.NoError(t, err)
		injected++
	}
	require.NotZero(t, injected)
	return dir
}

// waitAPIService waits for APIService name to be Available; logs says what
// the processes behind it wrote.
func waitAPIService(t *testing.T, c *cluster, a *applier, name string, logs func() string) {
	t.Helper()
	var cond string
	eventually(t, 3*time.Minute, func() string { return name + " Available: " + cond + logs() },
		func(ctx context.Context) bool {
			c.check(t)
			u, err := a.dyn.Resource(apiServices).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				cond = err.Error()
				return false
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, x := range conds {
				m := x.(map[string]any)
				if m["type"] == "Available" {
					cond = fmt.Sprint(m["status"], " ", m["reason"], " ", m["message"])
					return m["status"] == "True"
				}
			}
			return false
		})
}

func pro() replicas.Plan {
	for _, p := range replicas.Plans {
		if p.Name == "pro" {
			return p
		}
	}
	panic("no plan pro")
}

func hpaStatus(h *autoscalingv2.HorizontalPodAutoscaler) string {
	var s []string
	for _, c := range h.Status.Conditions {
		s = append(s, fmt.Sprintf("%s=%s %s", c.Type, c.Status, c.Message))
	}
	for _, m := range h.Status.CurrentMetrics {
		if m.Pods != nil {
			s = append(s, "current "+m.Pods.Metric.Name+"="+m.Pods.Current.AverageValue.String())
		}
	}
	return fmt.Sprintf("desired %d; %s", h.Status.DesiredReplicas, strings.Join(s, "; "))
}
