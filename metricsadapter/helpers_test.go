package metricsadapter_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	cmclient "k8s.io/metrics/pkg/client/custom_metrics"
	emclient "k8s.io/metrics/pkg/client/external_metrics"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/cmd/options"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/headcount-dev/headcount/agent"
	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/metricsadapter"
)

var (
	v1beta1      = schema.GroupVersion{Group: "custom.metrics.k8s.io", Version: "v1beta1"}
	v1beta2      = schema.GroupVersion{Group: "custom.metrics.k8s.io", Version: "v1beta2"}
	podKind      = schema.GroupKind{Kind: "Pod"}
	podsResource = schema.GroupResource{Resource: "pods"}
	depKind      = schema.GroupKind{Group: "apps", Kind: "Deployment"}
	stsKind      = schema.GroupKind{Group: "apps", Kind: "StatefulSet"}
)

// adapter is an in-process headcount-adapter as cmd/headcount-adapter wires
// it, except that the Kubernetes objects come from client-go's fake clientset
// and the server options skip everything that needs a kube-apiserver.
type adapter struct {
	nc      *nats.Conn
	view    *fleet.View
	cluster *metricsadapter.KubeCluster
	config  *rest.Config
	clients map[schema.GroupVersion]cmclient.CustomMetricsClient
}

type adapterOptions struct {
	natsURL      string
	external     bool
	maxStaleness time.Duration
	objects      []runtime.Object
}

func startAdapter(t testing.TB, o adapterOptions) *adapter {
	t.Helper()
	a := &adapter{}
	// The composition root's part: the connection and the watcher, which
	// pauses the view while the connection is down.
	a.nc = natstest.Connect(t, o.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	a.view, _ = natstest.Watch(t, a.nc, fleet.WatchConfig{SweepEvery: 20 * time.Millisecond})
	var err error

	ctx, cancel := context.WithCancel(context.Background())
	a.cluster, err = metricsadapter.NewKubeCluster(fake.NewClientset(o.objects...), "", "")
	require.NoError(t, err)
	a.cluster.Start(ctx)
	p, err := metricsadapter.New(metricsadapter.Config{Fleet: a.view, Link: a.view, Cluster: a.cluster, MaxStaleness: o.maxStaleness, VerifyPodIP: true})
	require.NoError(t, err)

	t.Cleanup(cancel) // if serve fails half-way
	a.config = serve(t, ctx, p, o.external)
	t.Cleanup(cancel) // before serve's cleanup waits for the server to stop
	mapper := meta.NewDefaultRESTMapper([]schema.GroupVersion{{Version: "v1"}, {Group: "apps", Version: "v1"}})
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, meta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}, meta.RESTScopeNamespace)
	a.clients = map[schema.GroupVersion]cmclient.CustomMetricsClient{}
	for _, gv := range []schema.GroupVersion{v1beta1, v1beta2} {
		c, err := cmclient.NewForVersionForConfig(rest.CopyConfig(a.config), mapper, gv)
		require.NoError(t, err)
		a.clients[gv] = c
	}
	require.Eventually(t, func() bool { return a.cluster.Synced() == nil }, 10*time.Second, 10*time.Millisecond)
	return a
}

// serve runs the library's API server for p on 127.0.0.1:0 with TLS (a
// self-signed certificate written to a temp dir), anonymous authentication
// without the in-cluster lookup, and an always-allow authorizer; it returns a
// client config that verifies the server's certificate.
func serve(t testing.TB, ctx context.Context, p *metricsadapter.Provider, external bool) *rest.Config {
	t.Helper()
	o := options.NewCustomMetricsAdapterServerOptions()
	ln, port, err := genericoptions.CreateListener("tcp", "127.0.0.1:0", net.ListenConfig{})
	require.NoError(t, err)
	o.SecureServing.Listener, o.SecureServing.BindPort = ln, port
	o.SecureServing.BindAddress = net.ParseIP("127.0.0.1")
	o.SecureServing.ServerCert.CertDirectory = t.TempDir()
	o.SecureServing.ServerCert.PairName = "headcount-adapter"
	o.Authentication.SkipInClusterLookup = true
	o.Authentication.RemoteKubeConfigFileOptional = true
	o.Authorization = nil // always allow
	require.Empty(t, o.Validate())

	cfg := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	require.NoError(t, o.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}))
	require.NoError(t, o.SecureServing.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig))
	require.NoError(t, o.Authentication.ApplyTo(&cfg.Authentication, cfg.SecureServing, nil))
	require.NoError(t, o.Authorization.ApplyTo(&cfg.Authorization))
	var em provider.ExternalMetricsProvider // a nil interface leaves the external API out
	if external {
		em = p
	}
	server, err := (&apiserver.Config{GenericConfig: &cfg.Config}).Complete(nil).New("headcount-adapter", p, em)
	require.NoError(t, err)
	stopped := make(chan error, 1)
	go func() { stopped <- server.GenericAPIServer.PrepareRun().RunWithContext(ctx) }()
	t.Cleanup(func() {
		select {
		case err := <-stopped:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("adapter did not stop")
		}
	})
	rc := &rest.Config{
		Host:            "https://" + ln.Addr().String(),
		TLSClientConfig: rest.TLSClientConfig{CAFile: filepath.Join(o.SecureServing.ServerCert.CertDirectory, "headcount-adapter.crt")},
		QPS:             -1, // no client-side throttle: the benchmark polls
	}
	require.Eventually(t, func() bool {
		hc, err := rest.HTTPClientFor(rc)
		if err != nil {
			return false
		}
		resp, err := hc.Get(rc.Host + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "adapter never ready")
	return rc
}

func (a *adapter) external(t testing.TB) emclient.ExternalMetricsClient {
	c, err := emclient.NewForConfig(rest.CopyConfig(a.config))
	require.NoError(t, err)
	return c
}

// follower starts a real agent for pod in namespace "default", advertising 127.0.0.1.
func follower(t testing.TB, nc *nats.Conn, service, id, pod string, ttl time.Duration) *agent.Agent {
	t.Helper()
	return followerAt(t, nc, "127.0.0.1", service, id, pod, ttl)
}

func followerAt(t testing.TB, nc *nats.Conn, ip, service, id, pod string, ttl time.Duration) *agent.Agent {
	t.Helper()
	a, err := agent.New(nc, agent.Config{
		Service: service, Follower: id, Control: ip + ":8081", Streaming: ip + ":8080",
		Pod: pod, Namespace: "default", Heartbeat: ttl / 3, TTL: ttl,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	a.Ready()
	return a
}

func pod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Status: corev1.PodStatus{PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}}}} // where follower() advertises
}

func deployment(name string, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels}}
}

func statefulSet(name string, labels map[string]string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels}}
}

// TestMain keeps the API server libraries' klog lines out of test and
// benchmark output.
func TestMain(m *testing.M) {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	os.Exit(m.Run())
}
