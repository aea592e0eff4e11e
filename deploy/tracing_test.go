package deploy

import (
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// collectorLabels are the labels of the OTLP collector's pods in the tests'
// installs (the chart's tracing.collector.podLabels, where set).
var collectorLabels = map[string]string{"app.kubernetes.io/name": "opentelemetry-collector"}

// tracingInstall is the chart with tracing on: the demo, a collector's pods
// in another namespace, an attribute and a header from a Secret.
var tracingInstall = map[string]any{"tracing": map[string]any{
	"otlpEndpoint":       "http://otel-collector.observability:4317",
	"resourceAttributes": map[string]any{"deployment.environment.name": "staging"},
	"env": []any{map[string]any{"name": "OTEL_EXPORTER_OTLP_HEADERS",
		"valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "otlp", "key": "headers"}}}},
	"collector": map[string]any{"podLabels": collectorLabels},
}}

// tracers are the workloads whose containers export spans, by role, with
// the container's env (only the first such container of each).
func tracers(r rendered) map[string][]corev1.EnvVar {
	out := map[string][]corev1.EnvVar{}
	for _, w := range r.workloads {
		for _, c := range w.pod.Spec.Containers {
			if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" }) {
				out[w.pod.Labels["headcount.dev/role"]] = c.Env
				break
			}
		}
	}
	return out
}

// checkTracingEnv: each container's OTEL_* names the collector and the
// sampler, and its resource attributes refer only to variables defined
// before them (Kubernetes expands $(VAR) from earlier entries only, and
// leaves any other reference as it is).
func checkTracingEnv(t *testing.T, env []corev1.EnvVar, endpoint, sampler, arg string) {
	t.Helper()
	vals := envOf(corev1.Container{Env: env})
	assert.Equal(t, endpoint, vals["OTEL_EXPORTER_OTLP_ENDPOINT"])
	assert.Equal(t, sampler, vals["OTEL_TRACES_SAMPLER"])
	assert.Equal(t, arg, vals["OTEL_TRACES_SAMPLER_ARG"])
	attrs := vals["OTEL_RESOURCE_ATTRIBUTES"]
	for _, want := range []string{"k8s.namespace.name=", "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)", "k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME)"} {
		assert.Contains(t, attrs, want)
	}
	at := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == "OTEL_RESOURCE_ATTRIBUTES" })
	for _, ref := range regexp.MustCompile(`\$\(([A-Z0-9_]+)\)`).FindAllStringSubmatch(attrs, -1) {
		assert.True(t, slices.ContainsFunc(env[:at], func(e corev1.EnvVar) bool { return e.Name == ref[1] && e.ValueFrom != nil }),
			"$(%s) is defined (from the pod) before OTEL_RESOURCE_ATTRIBUTES", ref[1])
	}
}

// collectorOf is where an OTLP endpoint leads: its port, and the namespace
// of a Service name (<service>.<namespace>[.svc…]) or an IP address.
func collectorOf(t *testing.T, endpoint string) (namespace string, ip net.IP, port int32) {
	t.Helper()
	u, err := url.Parse(endpoint)
	require.NoError(t, err, endpoint)
	p, err := strconv.Atoi(u.Port())
	require.NoError(t, err, "%s names its port", endpoint)
	if ip = net.ParseIP(u.Hostname()); ip == nil {
		labels := strings.Split(u.Hostname(), ".")
		require.GreaterOrEqual(t, len(labels), 2, "%s: <service>.<namespace>", endpoint)
		namespace = labels[1]
	}
	return namespace, ip, int32(p)
}

// checkCollectorFlows: every workload that traces may dial its collector
// (a pod labelled collectorLabels in the endpoint's namespace, or its
// address), and no other may.
func checkCollectorFlows(t *testing.T, r rendered) {
	t.Helper()
	traced := tracers(r)
	for _, w := range r.workloads {
		env, traces := traced[w.pod.Labels["headcount.dev/role"]]
		if !traces {
			continue
		}
		ns, ip, port := collectorOf(t, envOf(corev1.Container{Env: env})["OTEL_EXPORTER_OTLP_ENDPOINT"])
		assert.True(t, r.egressAllowsOut(t, w.pod.Labels, ns, collectorLabels, ip, port), "%s may dial its OTLP collector", w.name)
	}
	if len(traced) == 0 {
		return
	}
	var endpoint string
	for _, env := range traced {
		endpoint = envOf(corev1.Container{Env: env})["OTEL_EXPORTER_OTLP_ENDPOINT"]
	}
	ns, ip, port := collectorOf(t, endpoint)
	for _, w := range r.workloads {
		role := w.pod.Labels["headcount.dev/role"]
		if _, ok := traced[role]; !ok && role != "leader" && role != "follower" {
			assert.False(t, r.egressAllowsOut(t, w.pod.Labels, ns, collectorLabels, ip, port), "%s (no tracing) may not dial the collector", w.name)
		}
	}
}

// egressAllowsOut says whether the egress policies covering a pod labelled
// from let it connect to port of a pod labelled to in namespace ns (by
// its kubernetes.io/metadata.name label), or, with ip set, to that address
// (no policy with Egress covering it: anything).
func (r rendered) egressAllowsOut(t *testing.T, from map[string]string, ns string, to map[string]string, ip net.IP, port int32) bool {
	t.Helper()
	everything := func(sel *metav1.LabelSelector) bool {
		return sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0
	}
	return r.egressAllowsPeer(t, from,
		func(pp networkingv1.NetworkPolicyPort) bool {
			return pp.Port == nil || (pp.Port.Type == intstr.Int && pp.Port.IntVal == port)
		},
		func(peer networkingv1.NetworkPolicyPeer) bool {
			switch {
			case peer.IPBlock != nil:
				_, cidr, err := net.ParseCIDR(peer.IPBlock.CIDR)
				require.NoError(t, err)
				return ip != nil && cidr.Contains(ip)
			case peer.NamespaceSelector != nil && ip == nil:
				inNS := everything(peer.NamespaceSelector) || selects(t, peer.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": ns})
				return inNS && (everything(peer.PodSelector) || selects(t, peer.PodSelector, to))
			}
			return false
		})
}

// The chart's tracing values: off by default (no OTEL_*, no way out to a
// collector); on, every process that traces (the routers, the scalers, the
// demo leader and followers) gets the standard OTEL_* and may reach the
// collector, every check of a hardened install still passes; with your
// own images, the sidecars (which do not trace) get nothing, and a
// collector outside the cluster is reached by its CIDR.
func TestChartTracing(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		r := decodeChart(t, nil)
		assert.Empty(t, tracers(r))
		for _, w := range r.workloads {
			assert.False(t, r.egressAllowsOut(t, w.pod.Labels, "observability", collectorLabels, nil, 4317), "%s may not dial out", w.name)
		}
	})
	t.Run("on", func(t *testing.T) {
		r := decodeChart(t, tracingInstall)
		traced := tracers(r)
		assert.ElementsMatch(t, []string{"router", "scaler", "leader", "follower"}, slices.Collect(maps.Keys(traced)))
		for role, env := range traced {
			t.Run(role, func(t *testing.T) {
				checkTracingEnv(t, env, "http://otel-collector.observability:4317", "parentbased_traceidratio", "0.1")
				vals := envOf(corev1.Container{Env: env})
				assert.Equal(t, "k8s.namespace.name="+chartNamespace+",k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),"+
					"k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),deployment.environment.name=staging", vals["OTEL_RESOURCE_ATTRIBUTES"])
				assert.True(t, slices.ContainsFunc(env, func(e corev1.EnvVar) bool {
					return e.Name == "OTEL_EXPORTER_OTLP_HEADERS" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name == "otlp"
				}), "tracing.env")
			})
		}
		// checkEgressFlows runs checkCollectorFlows; the collector's other
		// pods stay out of reach.
		checkHardened(t, r)
		for _, w := range r.workloads {
			assert.False(t, r.egressAllowsOut(t, w.pod.Labels, "observability", map[string]string{"app": "other"}, nil, 4317), w.name)
		}
	})
	t.Run("own images, a collector by its address", func(t *testing.T) {
		vals := map[string]any{"service": chartInstalls["own service, enterprise"]["service"], "tracing": map[string]any{
			"otlpEndpoint": "http://10.20.0.7:4317", "sampler": "parentbased_always_on", "samplerArg": "",
			"collector": map[string]any{"cidrs": []any{"10.20.0.0/24"}}}}
		r := decodeChart(t, vals)
		traced := tracers(r)
		assert.ElementsMatch(t, []string{"router", "scaler"}, slices.Collect(maps.Keys(traced)), "not the sidecars")
		for _, env := range traced {
			assert.Equal(t, "parentbased_always_on", envOf(corev1.Container{Env: env})["OTEL_TRACES_SAMPLER"])
			assert.NotContains(t, envOf(corev1.Container{Env: env}), "OTEL_TRACES_SAMPLER_ARG")
		}
		checkHardened(t, r)
		// Your leader and followers may trace by their own env: they may reach it too.
		for _, w := range r.workloads {
			role := w.pod.Labels["headcount.dev/role"]
			if role == "leader" || role == "follower" {
				assert.True(t, r.egressAllowsOut(t, w.pod.Labels, "", nil, net.ParseIP("10.20.0.7"), 4317), w.name)
			}
			assert.False(t, r.egressAllowsOut(t, w.pod.Labels, "", nil, net.ParseIP("10.20.1.7"), 4317), "%s: outside tracing.collector.cidrs", w.name)
		}
	})
}

// components/tracing does for an overlay what the chart's values do, with
// the base's settings or yours merged into them.
func TestTracingComponent(t *testing.T) {
	const settings = `configMapGenerator:
- name: headcount-tracing
  namespace: headcount
  behavior: merge
  literals: [endpoint=http://collector.telemetry:4317, sampler=parentbased_always_on, samplerArg=1, collectorNamespace=telemetry]
`
	for name, c := range map[string]struct {
		r                      rendered
		endpoint, sampler, arg string
	}{
		"defaults":      {composed(t, "pro", "components/tracing"), "http://otel-collector.observability:4317", "parentbased_traceidratio", "0.1"},
		"your settings": {decode(t, composedDirWith(t, "hpa", settings, "components/nats-auth", "components/tracing")), "http://collector.telemetry:4317", "parentbased_always_on", "1"},
	} {
		t.Run(name, func(t *testing.T) {
			assert.NotContains(t, c.r.configs, "headcount-tracing", "build-time settings only")
			traced := tracers(c.r)
			assert.ElementsMatch(t, []string{"router", "scaler", "leader", "follower"}, slices.Collect(maps.Keys(traced)))
			for role, env := range traced {
				t.Run(role, func(t *testing.T) { checkTracingEnv(t, env, c.endpoint, c.sampler, c.arg) })
			}
			checkHardened(t, c.r)
		})
	}
	// Without the component, nothing traces.
	assert.Empty(t, tracers(decode(t, filepath.Join("overlays", "pro"))))
}
