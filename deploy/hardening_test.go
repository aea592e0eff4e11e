package deploy

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/headcount-dev/headcount/fleet"
	"github.com/headcount-dev/headcount/internal/certtest"
	"github.com/headcount-dev/headcount/internal/natstest"
	"github.com/headcount-dev/headcount/natsauth"
	"github.com/headcount-dev/headcount/natsauth/callout"
	"github.com/headcount-dev/headcount/replicas"
)

// overlays are every directory under overlays/: each must pass every check.
func overlays(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("overlays", "*", "kustomization.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for i, d := range dirs {
		dirs[i] = filepath.Dir(d)
	}
	return dirs
}

// rendered is one overlay decoded strictly into Kubernetes' types; kinds
// outside client-go's scheme (ScaledObject, APIService, ServiceMonitor) stay
// maps.
type rendered struct {
	workloads []workload
	services  map[string]*corev1.Service
	configs   map[string]*corev1.ConfigMap
	secrets   map[string]*corev1.Secret
	// deployments by name, for what workload does not carry (the strategy)
	deployments map[string]*appsv1.Deployment
	policies    []*networkingv1.NetworkPolicy
	pdbs        []*policyv1.PodDisruptionBudget
	ingresses   []*networkingv1.Ingress
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	admission   []*admissionregistrationv1.ValidatingAdmissionPolicy
	other       map[string][]map[string]any // by kind
}

type workload struct {
	kind, name  string
	serviceName string // a StatefulSet's
	replicas    *int32
	selector    *metav1.LabelSelector
	pod         corev1.PodTemplateSpec
}

// strict decodes YAML into client-go's types, refusing unknown fields.
var strict = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

func decode(t *testing.T, dir string) rendered {
	t.Helper()
	var docs [][]byte
	for _, res := range render(t, dir).Resources() {
		y, err := res.AsYAML()
		require.NoError(t, err)
		docs = append(docs, y)
	}
	return decodeDocs(t, dir, docs)
}

// decodeDocs decodes rendered manifests (an overlay's, the chart's), one
// YAML document each, from what.
func decodeDocs(t *testing.T, what string, docs [][]byte) rendered {
	t.Helper()
	r := rendered{services: map[string]*corev1.Service{}, configs: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, deployments: map[string]*appsv1.Deployment{}, other: map[string][]map[string]any{}}
	for _, y := range docs {
		var u map[string]any
		require.NoError(t, yaml.Unmarshal(y, &u), what)
		if u == nil {
			continue
		}
		obj := &unstructured.Unstructured{Object: u}
		gvk := obj.GroupVersionKind()
		if !scheme.Scheme.Recognizes(gvk) {
			r.other[gvk.Kind] = append(r.other[gvk.Kind], u)
			continue
		}
		typed, _, err := strict.Decode(y, nil, nil)
		require.NoError(t, err, "%s %s/%s decodes strictly", what, gvk.Kind, obj.GetName())
		switch o := typed.(type) {
		case *appsv1.Deployment:
			r.deployments[o.Name] = o
			r.workloads = append(r.workloads, workload{"Deployment", o.Name, "", o.Spec.Replicas, o.Spec.Selector, o.Spec.Template})
		case *appsv1.StatefulSet:
			r.workloads = append(r.workloads, workload{"StatefulSet", o.Name, o.Spec.ServiceName, o.Spec.Replicas, o.Spec.Selector, o.Spec.Template})
		case *corev1.Service:
			r.services[o.Name] = o
		case *corev1.ConfigMap:
			r.configs[o.Name] = o
		case *corev1.Secret:
			r.secrets[o.Name] = o
		case *networkingv1.NetworkPolicy:
			r.policies = append(r.policies, o)
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *networkingv1.Ingress:
			r.ingresses = append(r.ingresses, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, o)
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			r.admission = append(r.admission, o)
		}
	}
	return r
}

// autoscaled names the workloads a ScaledObject or an HPA owns.
func (r rendered) autoscaled() map[string]bool {
	names := map[string]bool{}
	for _, so := range r.other["ScaledObject"] {
		names[so["spec"].(map[string]any)["scaleTargetRef"].(map[string]any)["name"].(string)] = true
	}
	for _, h := range r.hpas {
		names[h.Spec.ScaleTargetRef.Name] = true
	}
	return names
}

// covers says whether np applies to pods labelled podLabels: an empty
// selector applies to every pod of the namespace.
func covers(t *testing.T, np *networkingv1.NetworkPolicy, podLabels map[string]string) bool {
	t.Helper()
	sel := np.Spec.PodSelector
	return len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 || selects(t, &sel, podLabels)
}

func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	require.NoError(t, err)
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// portMatches says whether a policy port (a number or a container port name)
// is the container port p.
func portMatches(pp networkingv1.NetworkPolicyPort, p corev1.ContainerPort) bool {
	if pp.Port == nil {
		return true
	}
	if pp.Port.Type == intstr.String {
		return pp.Port.StrVal == p.Name
	}
	return pp.Port.IntVal == p.ContainerPort
}

// peers lists, for one container port of a pod, who may reach it:
// "anyone", "namespace" (any pod here), "pods" (selected pods here) or
// "ns:<name>" (a namespace by its name label).
func (r rendered) peers(t *testing.T, podLabels map[string]string, p corev1.ContainerPort) []string {
	t.Helper()
	var out []string
	for _, np := range r.policies {
		if !selects(t, &np.Spec.PodSelector, podLabels) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.Ports) > 0 && !slices.ContainsFunc(rule.Ports, func(pp networkingv1.NetworkPolicyPort) bool { return portMatches(pp, p) }) {
				continue
			}
			if len(rule.From) == 0 {
				out = append(out, "anyone")
			}
			for _, f := range rule.From {
				switch {
				case f.NamespaceSelector != nil:
					out = append(out, "ns:"+f.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
				case f.PodSelector != nil && len(f.PodSelector.MatchLabels)+len(f.PodSelector.MatchExpressions) == 0:
					out = append(out, "namespace")
				default:
					out = append(out, "pods")
				}
			}
		}
	}
	return out
}

// podPort is a port of any of the pod's containers (a metrics exporter's,
// beside the server it exports).
func podPort(spec corev1.PodSpec, nameOrNumber string) (corev1.ContainerPort, bool) {
	for _, c := range spec.Containers {
		if p, ok := containerPort(c, nameOrNumber); ok {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

func containerPort(c corev1.Container, nameOrNumber string) (corev1.ContainerPort, bool) {
	for _, p := range c.Ports {
		if p.Name == nameOrNumber || fmt.Sprint(p.ContainerPort) == nameOrNumber {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// The operator's checklist (issue 14), over every overlay: each check failed
// on the manifests before it.
func TestEveryOverlayIsHardened(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) { checkHardened(t, decode(t, dir)) })
	}
}

// checkHardened is the checklist, for an overlay's rendering or the chart's.
func checkHardened(t *testing.T, r rendered) {
	require.NotEmpty(t, r.workloads)
	autoscaled := r.autoscaled()
	require.NotEmpty(t, autoscaled, "something autoscales the followers")

	t.Run("a default-deny ingress policy over every workload", func(t *testing.T) {
		for _, w := range r.workloads {
			assert.True(t, slices.ContainsFunc(r.policies, func(np *networkingv1.NetworkPolicy) bool {
				return covers(t, np, w.pod.Labels) && len(np.Spec.Ingress) == 0 &&
					slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
			}), w.name)
		}
	})
	t.Run("a default-deny egress policy over every workload: DNS, and given ports only", func(t *testing.T) {
		for _, w := range r.workloads {
			assert.True(t, slices.ContainsFunc(r.policies, func(np *networkingv1.NetworkPolicy) bool {
				return covers(t, np, w.pod.Labels) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) &&
					slices.ContainsFunc(np.Spec.Egress, func(e networkingv1.NetworkPolicyEgressRule) bool {
						return slices.ContainsFunc(e.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port.IntValue() == 53 })
					})
			}), "%s: a default-deny egress policy allowing DNS", w.name)
			for _, np := range r.policies {
				if !covers(t, np, w.pod.Labels) {
					continue
				}
				for _, e := range np.Spec.Egress {
					assert.NotEmpty(t, e.Ports, "%s: policy %s: egress to given ports only", w.name, np.Name)
				}
			}
		}
	})
	t.Run("egress lets each role reach the peers it dials", func(t *testing.T) {
		checkEgressFlows(t, r)
	})
	for _, w := range r.workloads {
		podLabels := w.pod.Labels
		spec := w.pod.Spec
		t.Run(w.name, func(t *testing.T) {
			assert.True(t, slices.ContainsFunc(r.policies, func(np *networkingv1.NetworkPolicy) bool {
				return selects(t, &np.Spec.PodSelector, podLabels)
			}), "a NetworkPolicy of its own")

			if autoscaled[w.name] {
				assert.Nil(t, w.replicas, "no spec.replicas: the autoscaler owns it")
			}
			if autoscaled[w.name] || w.replicas == nil || *w.replicas > 1 {
				assert.True(t, slices.ContainsFunc(r.pdbs, func(b *policyv1.PodDisruptionBudget) bool {
					return selects(t, b.Spec.Selector, podLabels)
				}), "a PodDisruptionBudget (more than one replica)")
			}

			psc := spec.SecurityContext
			require.NotNil(t, psc, "pod securityContext")
			require.NotNil(t, psc.SeccompProfile, "seccomp profile")
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				sc := c.SecurityContext
				require.NotNil(t, sc, "%s: securityContext", c.Name)
				nonRoot := (psc.RunAsNonRoot != nil && *psc.RunAsNonRoot) || (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot)
				assert.True(t, nonRoot, "%s: runAsNonRoot", c.Name)
				uid := psc.RunAsUser
				if sc.RunAsUser != nil {
					uid = sc.RunAsUser
				}
				assert.True(t, uid != nil && *uid != 0, "%s: a non-zero runAsUser (images may default to root)", c.Name)
				assert.True(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation false", c.Name)
				assert.True(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", c.Name)
				assert.True(t, sc.Privileged == nil || !*sc.Privileged, "%s: not privileged", c.Name)
				assert.True(t, sc.Capabilities != nil && slices.Contains(sc.Capabilities.Drop, "ALL") && len(sc.Capabilities.Add) == 0,
					"%s: capabilities drop ALL", c.Name)

				assert.False(t, c.Resources.Requests.Cpu().IsZero(), "%s: cpu request", c.Name)
				assert.False(t, c.Resources.Requests.Memory().IsZero(), "%s: memory request", c.Name)
				assert.False(t, c.Resources.Limits.Memory().IsZero(), "%s: memory limit", c.Name)

				if slices.ContainsFunc(spec.InitContainers, func(i corev1.Container) bool { return i.Name == c.Name }) {
					// An init container runs to completion: the API refuses probes on it.
					assert.True(t, c.LivenessProbe == nil && c.ReadinessProbe == nil && c.StartupProbe == nil, "%s: no probes on an init container", c.Name)
					continue
				}
				assert.NotNil(t, c.LivenessProbe, "%s: liveness probe", c.Name)
				assert.NotNil(t, c.ReadinessProbe, "%s: readiness probe", c.Name)
				assert.NotNil(t, c.StartupProbe, "%s: startup probe", c.Name)
			}

			// Scraped pods say where, and only the monitoring
			// namespace (besides this namespace's own traffic on a
			// shared port) may reach that port.
			if port, ok := w.pod.Annotations["prometheus.io/port"]; ok {
				p, found := podPort(spec, port)
				require.True(t, found, "prometheus.io/port %s is a container port", port)
				who := r.peers(t, podLabels, p)
				assert.Contains(t, who, "ns:monitoring", "metrics port %s from the monitoring namespace", port)
				assert.NotContains(t, who, "anyone", "metrics port %s not from everywhere", port)
			} else {
				assert.Equal(t, "nats", podLabels["app.kubernetes.io/name"], "only NATS (no Prometheus endpoint of its own) is not scraped")
				p, _ := containerPort(spec.Containers[0], "monitor")
				assert.Equal(t, []string{"ns:monitoring"}, r.peers(t, podLabels, p), "NATS monitoring port only from the monitoring namespace")
			}
		})
	}

	t.Run("scaler gRPC from KEDA's namespace only", func(t *testing.T) {
		for _, w := range r.workloads {
			if w.pod.Labels["headcount.dev/role"] != "scaler" {
				continue
			}
			p, ok := containerPort(w.pod.Spec.Containers[0], "grpc")
			require.True(t, ok)
			assert.Equal(t, []string{"ns:keda"}, r.peers(t, w.pod.Labels, p))
			http, ok := containerPort(w.pod.Spec.Containers[0], "http")
			require.True(t, ok)
			assert.Equal(t, []string{"ns:monitoring"}, r.peers(t, w.pod.Labels, http))
		}
	})

	t.Run("an Ingress for the streaming routes only", func(t *testing.T) {
		require.Len(t, r.ingresses, 1)
		ing := r.ingresses[0]
		assert.Nil(t, ing.Spec.DefaultBackend, "no catch-all backend")
		paths := 0
		for _, rule := range ing.Spec.Rules {
			for _, p := range rule.HTTP.Paths {
				paths++
				assert.Contains(t, []string{"/v1/streams/", "/streams/"}, p.Path)
				svc := r.services[p.Backend.Service.Name]
				require.NotNil(t, svc, p.Backend.Service.Name)
				require.Len(t, svc.Spec.Ports, 1, "the backend Service exposes one port")
				assert.Equal(t, "streaming", svc.Spec.Ports[0].TargetPort.StrVal, "the routers' streaming port")
			}
		}
		assert.NotZero(t, paths)
	})

	t.Run("router: preStop sleep, --shutdown-delay seen by the readiness probe, a grace longer than it all", func(t *testing.T) {
		found := false
		for _, w := range r.workloads {
			if w.pod.Labels["headcount.dev/role"] != "router" {
				continue
			}
			found = true
			c := w.pod.Spec.Containers[0]
			require.NotNil(t, c.Lifecycle, "lifecycle")
			require.NotNil(t, c.Lifecycle.PreStop, "preStop")
			require.NotNil(t, c.Lifecycle.PreStop.Sleep, "preStop sleep action")
			preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
			// Explicit, so that the grace period below is computed
			// from what runs, not from a default that may change.
			delay, ok := flagDuration(t, c.Args, "--shutdown-delay")
			require.True(t, ok, "--shutdown-delay set explicitly")
			grace, ok := flagDuration(t, c.Args, "--shutdown-grace")
			require.True(t, ok, "--shutdown-grace set explicitly")
			// The failing /readyz of the delay must be seen within it.
			p := c.ReadinessProbe
			require.NotNil(t, p, "readiness probe")
			period, failures := cmp.Or(p.PeriodSeconds, 10), cmp.Or(p.FailureThreshold, 3) // Kubernetes' defaults
			seen := time.Duration(period*failures) * time.Second
			assert.LessOrEqual(t, seen, 2*time.Second, "unready seen within 2 s (periodSeconds × failureThreshold)")
			assert.Less(t, seen, delay, "unready seen within --shutdown-delay")
			const margin = 5 * time.Second
			need := preStop + delay + grace + margin
			require.NotNil(t, w.pod.Spec.TerminationGracePeriodSeconds)
			assert.GreaterOrEqual(t, time.Duration(*w.pod.Spec.TerminationGracePeriodSeconds)*time.Second, need,
				"terminationGracePeriodSeconds ≥ preStop %s + --shutdown-delay %s + --shutdown-grace %s + %s", preStop, delay, grace, margin)
		}
		assert.True(t, found)
	})

	t.Run("ScaledObject: a fallback holding the replicas once the scaler is Unavailable", func(t *testing.T) {
		for _, so := range r.other["ScaledObject"] {
			spec := scaledObject(t, so)
			fb := spec.Fallback
			require.NotNil(t, fb, "spec.fallback")
			assert.Positive(t, fb.FailureThreshold, "failureThreshold: one failed read is not an outage")
			// 0 would let KEDA scale to zero on the error.
			assert.Positive(t, fb.Replicas, "replicas")
			require.NotNil(t, spec.MinReplicaCount)
			require.NotNil(t, spec.MaxReplicaCount)
			assert.GreaterOrEqual(t, fb.Replicas, *spec.MinReplicaCount, "replicas within the plan")
			assert.LessOrEqual(t, fb.Replicas, *spec.MaxReplicaCount, "replicas within the plan")
			assert.Equal(t, "currentReplicasIfHigher", fb.Behavior, "an outage never scales down")
		}
	})
}

// dialled are the connections each role opens inside the install: to
// NATS's client port, and to its peers' ports by name.
var dialled = map[string][]struct{ role, port string }{
	"leader":       {{"nats", "4222"}},
	"follower":     {{"nats", "4222"}, {"leader", "control"}, {"leader", "streaming"}},
	"router":       {{"nats", "4222"}, {"follower", "control"}, {"follower", "streaming"}, {"leader", "control"}, {"leader", "streaming"}},
	"scaler":       {{"nats", "4222"}, {"follower", "control"}},
	"adapter":      {{"nats", "4222"}, {"follower", "control"}},
	"auth-callout": {{"nats", "4222"}},
}

// checkEgressFlows: for every connection of dialled between two workloads
// of the rendering, the egress policies covering the caller allow it.
// NATS is the workload serving 4222 (none with an existing NATS).
func checkEgressFlows(t *testing.T, r rendered) {
	t.Helper()
	roleOf := func(w workload) string {
		if _, ok := podPort(w.pod.Spec, "4222"); ok {
			return "nats"
		}
		return w.pod.Labels["headcount.dev/role"]
	}
	checked := 0
	for _, from := range r.workloads {
		for _, flow := range dialled[roleOf(from)] {
			for _, to := range r.workloads {
				if roleOf(to) != flow.role {
					continue
				}
				p, ok := podPort(to.pod.Spec, flow.port)
				require.True(t, ok, "%s has a port %s", to.name, flow.port)
				checked++
				assert.True(t, r.egressAllows(t, from.pod.Labels, to.pod.Labels, p), "%s may dial %s:%d", from.name, to.name, p.ContainerPort)
			}
		}
	}
	assert.NotZero(t, checked)
}

// egressAllows says whether the egress policies covering a pod labelled
// from let it connect to port p of a pod labelled to, in its namespace
// (no policy with Egress covering it: anything).
func (r rendered) egressAllows(t *testing.T, from, to map[string]string, p corev1.ContainerPort) bool {
	t.Helper()
	limited := false
	for _, np := range r.policies {
		if !covers(t, np, from) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			continue
		}
		limited = true
		for _, e := range np.Spec.Egress {
			if len(e.Ports) > 0 && !slices.ContainsFunc(e.Ports, func(pp networkingv1.NetworkPolicyPort) bool { return portMatches(pp, p) }) {
				continue
			}
			if len(e.To) == 0 {
				return true
			}
			for _, peer := range e.To {
				if peer.PodSelector != nil && peer.NamespaceSelector == nil && peer.IPBlock == nil &&
					(len(peer.PodSelector.MatchLabels)+len(peer.PodSelector.MatchExpressions) == 0 || selects(t, peer.PodSelector, to)) {
					return true
				}
			}
		}
	}
	return !limited
}

// flagDuration is the value of a duration flag in args ("--f v" or "--f=v").
func flagDuration(t *testing.T, args []string, name string) (time.Duration, bool) {
	t.Helper()
	for i, a := range args {
		v, ok := strings.CutPrefix(a, name+"=")
		if a == name && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if ok {
			d, err := time.ParseDuration(v)
			require.NoError(t, err, name)
			return d, true
		}
	}
	return 0, false
}

// scaledObjectSpec is what the checks read of a ScaledObject: the fields
// of KEDA v2.21's ScaledObjectSpec and Fallback
// (github.com/kedacore/keda/v2/apis/keda/v1alpha1), whose package needs
// modules this one does not; k8se2e applies the overlays to KEDA's CRD.
type scaledObjectSpec struct {
	MinReplicaCount *int32 `json:"minReplicaCount"`
	MaxReplicaCount *int32 `json:"maxReplicaCount"`
	Fallback        *struct {
		FailureThreshold int32  `json:"failureThreshold"`
		Replicas         int32  `json:"replicas"`
		Behavior         string `json:"behavior"`
	} `json:"fallback"`
}

func scaledObject(t *testing.T, so map[string]any) scaledObjectSpec {
	t.Helper()
	raw, err := json.Marshal(so["spec"])
	require.NoError(t, err)
	var spec scaledObjectSpec
	require.NoError(t, json.Unmarshal(raw, &spec))
	return spec
}

// Enterprise is unlimited: its cap is the largest replica count KEDA and the
// HPA accept (an int32), and the overlay says so.
func TestEnterpriseCapIsTheLargestReplicaCount(t *testing.T) {
	r := decode(t, filepath.Join("overlays", "enterprise"))
	require.Len(t, r.other["ScaledObject"], 1)
	assert.EqualValues(t, math.MaxInt32, r.other["ScaledObject"][0]["spec"].(map[string]any)["maxReplicaCount"])
	k, err := os.ReadFile(filepath.Join("overlays", "enterprise", "kustomization.yaml"))
	require.NoError(t, err)
	assert.Contains(t, string(k), "2147483647, the largest")
}

// overlays/hpa: the adapter's APIServices, and a plain HPA on the Pods
// metric with plan "pro"'s bounds, no KEDA.
func TestHPAOverlay(t *testing.T) {
	r := decode(t, filepath.Join("overlays", "hpa"))
	assert.Empty(t, r.other["ScaledObject"], "no KEDA")
	var versions []string
	for _, a := range r.other["APIService"] {
		spec := a["spec"].(map[string]any)
		versions = append(versions, spec["version"].(string)+"."+spec["group"].(string))
		svc := spec["service"].(map[string]any)
		assert.Contains(t, r.services, svc["name"], "the APIService's Service is deployed")
	}
	assert.ElementsMatch(t, []string{"v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io"}, versions)
	// The aggregated API's RoleBinding stays where its Role is, whatever
	// components the overlay is composed with (a component's namespace:
	// field moved it).
	for _, dir := range []string{filepath.Join("overlays", "hpa"),
		composedDir(t, "hpa", "components/nats-cluster", "components/servicemonitor", "components/nats-auth", "adapter/external")} {
		var authReader []string
		for _, res := range render(t, dir).Resources() {
			if res.GetKind() == "RoleBinding" && res.GetName() == "headcount-adapter-auth-reader" {
				authReader = append(authReader, res.GetNamespace())
			}
		}
		assert.Equal(t, []string{"kube-system"}, authReader, dir)
	}

	require.Len(t, r.hpas, 1)
	h := r.hpas[0]
	pro := replicas.Plans[slices.IndexFunc(replicas.Plans, func(p replicas.Plan) bool { return p.Name == "pro" })]
	assert.EqualValues(t, pro.Min, *h.Spec.MinReplicas)
	assert.EqualValues(t, pro.Max, h.Spec.MaxReplicas)
	require.Len(t, h.Spec.Metrics, 1)
	m := h.Spec.Metrics[0]
	require.Equal(t, autoscalingv2.PodsMetricSourceType, m.Type)
	assert.Equal(t, "resource_instances", m.Pods.Metric.Name)
	assert.Equal(t, autoscalingv2.AverageValueMetricType, m.Pods.Target.Type)
}

// composed renders overlays/<overlay> with extra components, as a user's
// own overlay would.
func composed(t *testing.T, overlay string, components ...string) rendered {
	t.Helper()
	return decode(t, composedDir(t, overlay, components...))
}

// composedDir is the kustomization of composed.
func composedDir(t *testing.T, overlay string, components ...string) string {
	t.Helper()
	return composedDirWith(t, overlay, "", components...)
}

// composedDirWith is composedDir with more kustomization fields (extra, YAML).
func composedDirWith(t *testing.T, overlay, extra string, components ...string) string {
	t.Helper()
	dir := t.TempDir()
	abs, err := filepath.Abs(".")
	require.NoError(t, err)
	// kustomize refuses absolute paths outside the root: link the tree in.
	require.NoError(t, os.Symlink(abs, filepath.Join(dir, "deploy")))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "o"), 0o755))
	k := "resources: [../deploy/overlays/" + overlay + "]\n" + extra + "components:\n"
	for _, c := range components {
		k += "- ../deploy/" + c + "\n"
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "o", "kustomization.yaml"), []byte(k), 0o644))
	return filepath.Join(dir, "o")
}

func container(t *testing.T, r rendered, workload string) corev1.Container {
	t.Helper()
	for _, w := range r.workloads {
		if w.name == workload {
			return w.pod.Spec.Containers[0]
		}
	}
	t.Fatalf("no workload %s", workload)
	return corev1.Container{}
}

// The optional external API is one component away, and only there.
func TestAdapterExternalComponent(t *testing.T) {
	r := composed(t, "hpa", "adapter/external")
	names := []string{}
	for _, a := range r.other["APIService"] {
		names = append(names, a["metadata"].(map[string]any)["name"].(string))
	}
	assert.Contains(t, names, "v1beta1.external.metrics.k8s.io")
	assert.Contains(t, container(t, r, "headcount-adapter").Args, "--external-metrics")
}

// KEDA and Prometheus elsewhere: an overlay that merges other names into
// headcount-namespaces and adds components/namespaces gets them in every
// rule that named "keda" or "monitoring", and nowhere else; the settings
// ConfigMap itself is never rendered.
func TestNamespacesComponentRenamesEveryNamespace(t *testing.T) {
	renamed := map[string]string{"keda": "autoscaling", "monitoring": "observability"}
	const settings = `configMapGenerator:
- name: headcount-namespaces
  namespace: headcount
  behavior: merge
  literals: [keda=autoscaling, monitoring=observability]
`
	for _, overlay := range []string{"secure", "hpa"} {
		t.Run(overlay, func(t *testing.T) {
			before := decode(t, filepath.Join("overlays", overlay))
			after := decode(t, composedDirWith(t, overlay, settings, "components/namespaces"))
			assert.NotContains(t, before.configs, "headcount-namespaces")
			assert.NotContains(t, after.configs, "headcount-namespaces")
			named := func(r rendered) map[string]string {
				out := map[string]string{}
				for _, np := range r.policies {
					for i, rule := range np.Spec.Ingress {
						for j, peer := range rule.From {
							if peer.NamespaceSelector != nil {
								out[fmt.Sprintf("%s ingress %d from %d", np.Name, i, j)] = peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
							}
						}
					}
				}
				return out
			}
			want := named(before)
			require.NotEmpty(t, want)
			for rule, ns := range want {
				require.Contains(t, renamed, ns, rule)
				want[rule] = renamed[ns]
			}
			assert.Equal(t, want, named(after))
		})
	}
}

// With the NATS auth component every headcount process, the adapter
// included, connects with its projected token, under a ServiceAccount the
// callout binds to a role, requiring TLS (HEADCOUNT_NATS_TLS_CA: whatever the
// URL's scheme), at the addresses it had without the component (every
// server with nats-cluster: TestNATSClusterGivesEveryClientEveryServer); the
// callout connects where the router does.
func TestNATSAuthComponentCoversEveryProcess(t *testing.T) {
	for name, r := range map[string]rendered{
		"single server": composed(t, "hpa", "components/nats-auth"),
		"cluster":       composed(t, "hpa", "components/nats-cluster", "components/nats-auth"),
	} {
		t.Run(name, func(t *testing.T) {
			binds := strings.Join(container(t, r, "headcount-auth-callout").Args, " ")
			url := envOf(container(t, r, "router"))["HEADCOUNT_NATS_URL"]
			require.NotEmpty(t, url)
			for _, w := range r.workloads {
				c := w.pod.Spec.Containers[0]
				if !strings.Contains(c.Image, "headcount") {
					continue
				}
				env := envOf(c)
				assert.Equal(t, url, env["HEADCOUNT_NATS_URL"], w.name)
				assert.NotEmpty(t, env["HEADCOUNT_NATS_TLS_CA"], w.name)
				if w.name == "headcount-auth-callout" {
					continue
				}
				assert.NotEmpty(t, env["HEADCOUNT_NATS_TOKEN_FILE"], w.name)
				assert.Contains(t, binds, "headcount/"+w.pod.Spec.ServiceAccountName+"=", "%s's ServiceAccount is bound to a role", w.name)
			}
		})
	}
}

func envOf(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

// The Grafana dashboard reads only series the code exports, and shows what
// an operator watches: live instances, replica target, placement spread,
// drops by reason.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("components", "servicemonitor", "grafana-dashboard.json"))
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	exported := exportedMetrics(t)
	series := regexp.MustCompile(`headcount_[a-z_]+`)
	used := map[string]bool{}
	for _, p := range d.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			for _, name := range series.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(name, "_bucket")
				assert.True(t, exported[base], "%q in panel %q is a metric the code exports", name, p.Title)
				used[base] = true
			}
		}
	}
	for _, want := range []string{"headcount_instances", "headcount_scaler_desired_replicas",
		"headcount_router_placements_total", "headcount_messages_dropped_total", "headcount_router_streams_moved_total"} {
		assert.True(t, used[want], "the dashboard shows %s", want)
	}
}

// exportedMetrics are the metric names in the module's non-test Go source.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("git", "grep", "--untracked", "-hoE", `"headcount_[a-z_]+"`, "--", "../*.go", ":!*_test.go").Output()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		names[strings.Trim(l, `"`)] = true
	}
	require.NotEmpty(t, names)
	return names
}

// The 3-node NATS option (overlays/ha): a StatefulSet whose cluster routes
// name each of its pods through its headless Service, which publishes
// not-ready addresses so that servers starting together find each other.
func TestNATSClusterRoutesNameEveryServer(t *testing.T) {
	m := render(t, filepath.Join("overlays", "ha"))
	var sts *appsv1.StatefulSet
	deployments := 0
	for _, r := range m.Resources() {
		if r.GetName() != "nats" {
			continue
		}
		y, err := r.AsYAML()
		require.NoError(t, err)
		switch r.GetKind() {
		case "StatefulSet":
			obj, _, err := strict.Decode(y, nil, nil)
			require.NoError(t, err)
			sts = obj.(*appsv1.StatefulSet)
		case "Deployment":
			deployments++
		}
	}
	require.NotNil(t, sts)
	assert.Zero(t, deployments, "the single server is replaced, not doubled")
	n := int(*sts.Spec.Replicas)
	assert.Equal(t, 3, n)
	args := strings.Join(sts.Spec.Template.Spec.Containers[0].Args, " ")
	for i := range n {
		assert.Contains(t, args, fmt.Sprintf("nats://%s-%d.%s:6222", sts.Name, i, sts.Spec.ServiceName))
	}
	svc := decode(t, filepath.Join("overlays", "ha")).services[sts.Spec.ServiceName]
	require.NotNil(t, svc, "the headless Service")
	assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP)
	assert.True(t, svc.Spec.PublishNotReadyAddresses)
}

// With the 3-node NATS cluster every NATS client, the adapter included,
// is given the three servers' client addresses.
func TestNATSClusterGivesEveryClientEveryServer(t *testing.T) {
	for name, r := range map[string]rendered{
		"ha":                          decode(t, filepath.Join("overlays", "ha")),
		"hpa+components/nats-cluster": composed(t, "hpa", "components/nats-cluster"),
		"hpa+components/nats-cluster+components/nats-auth": composed(t, "hpa", "components/nats-cluster", "components/nats-auth"),
	} {
		t.Run(name, func(t *testing.T) {
			var want []string
			for _, w := range r.workloads {
				if w.kind == "StatefulSet" && w.name == "nats" {
					for i := range int(*w.replicas) {
						want = append(want, fmt.Sprintf("nats://%s-%d.%s:4222", w.name, i, w.serviceName))
					}
				}
			}
			require.Len(t, want, 3, "the NATS StatefulSet's servers")
			roles := map[string]bool{}
			for _, w := range r.workloads {
				c := w.pod.Spec.Containers[0]
				if !strings.HasPrefix(filepath.Base(c.Image), "headcount") {
					continue
				}
				url := ""
				for _, e := range c.Env {
					if e.Name == "HEADCOUNT_NATS_URL" {
						url = e.Value
					}
				}
				if i := slices.Index(c.Args, "--nats-url"); i >= 0 {
					url = c.Args[i+1] // the flag wins over the variable
				}
				assert.ElementsMatch(t, want, strings.Split(url, ","), "%s: HEADCOUNT_NATS_URL / --nats-url", w.name)
				roles[w.pod.Labels["headcount.dev/role"]] = true
			}
			for _, role := range []string{"router", "scaler", "leader", "follower"} {
				assert.True(t, roles[role], "a %s is checked", role)
			}
			if name != "ha" {
				assert.True(t, roles["adapter"], "the adapter is checked")
			}
			if strings.Contains(name, "nats-auth") {
				assert.True(t, roles["auth-callout"], "the auth callout is checked")
			}
		})
	}
}

// reviewed is a TokenReview that knows one token.
type reviewed struct {
	token  string
	review callout.Review
}

func (r reviewed) Review(_ context.Context, token string) (callout.Review, error) {
	if token != r.token {
		return callout.Review{}, errors.New("not authenticated")
	}
	return r.review, nil
}

// components/nats-cluster then components/nats-auth (overlays/secure-ha)
// make one secured cluster: nats-server's own parsing of the StatefulSet's arguments and the
// ConfigMap's files gives each server client TLS, the auth callout, and
// routes to the three servers with mutual TLS. Started on loopback, the
// three servers route to one another, and a pod connected to one server is
// admitted by the callout connected to another and speaks only as itself.
// In the other order the build fails rather than render a cluster without
// TLS or the callout.
func TestNATSAuthSecuresTheCluster(t *testing.T) {
	_, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(),
		composedDir(t, "pro", "components/nats-auth", "components/nats-cluster"))
	require.ErrorContains(t, err, "testing value /spec/template/spec/containers/0/args/0 failed")

	r := decode(t, filepath.Join("overlays", "secure-ha")) // ha (with nats-cluster), then nats-auth
	var sts []workload
	for _, w := range r.workloads {
		if w.name == "nats" {
			sts = append(sts, w)
		}
	}
	require.Len(t, sts, 1)
	require.Equal(t, "StatefulSet", sts[0].kind)
	sts0 := sts[0]
	ctr := sts0.pod.Spec.Containers[0]
	volumes := map[string]corev1.Volume{}
	for _, v := range sts0.pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	mounted := map[string]corev1.Volume{}
	for _, m := range ctr.VolumeMounts {
		mounted[m.MountPath] = volumes[m.Name]
	}
	require.NotNil(t, mounted["/etc/nats/config"].ConfigMap)
	require.NotNil(t, mounted["/etc/nats/tls"].Secret)
	require.Equal(t, "nats-tls", mounted["/etc/nats/tls"].Secret.SecretName)
	cm := r.configs[mounted["/etc/nats/config"].ConfigMap.Name]
	require.NotNil(t, cm)

	// The Secrets' files and the ConfigMap's, where the pod mounts them.
	dir := t.TempDir()
	confDir, tlsDir := filepath.Join(dir, "config"), filepath.Join(dir, "tls")
	require.NoError(t, os.MkdirAll(confDir, 0o700))
	require.NoError(t, os.MkdirAll(tlsDir, 0o700))
	ca, err := certtest.New("nats-ca")
	require.NoError(t, err)
	require.NoError(t, ca.Write(tlsDir, "ca.crt", "tls.crt", "tls.key", &x509.Certificate{Subject: pkix.Name{CommonName: "nats"},
		DNSNames:    []string{"nats", "*.nats-cluster"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, // the routes below dial loopback
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}))
	keys := natstest.NewCalloutKeys(t)
	fill := strings.NewReplacer("UCALLOUT_PUBLIC_KEY_HERE", keys.UserPub, "ACALLOUT_ISSUER_PUBLIC_KEY_HERE", keys.IssuerPub,
		"/etc/nats/tls/", tlsDir+"/", "/etc/nats/config/", confDir+"/")
	for name, data := range cm.Data {
		require.NoError(t, os.WriteFile(filepath.Join(confDir, name), []byte(fill.Replace(data)), 0o600))
	}

	n := int(*sts0.replicas)
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		clusterPorts[i] = l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
	}
	servers := make([]*server.Server, n)
	for i := range servers {
		args := slices.Clone(ctr.Args)
		for j, a := range args {
			args[j] = strings.ReplaceAll(fill.Replace(a), "$(POD_NAME)", fmt.Sprintf("%s-%d", sts0.name, i))
		}
		opts, err := server.ConfigureOptions(flag.NewFlagSet("nats-server", flag.ContinueOnError), args,
			func() {}, func() {}, func() {})
		require.NoError(t, err, "nats-server %v", args)
		require.NotNil(t, opts.TLSConfig, "clients over TLS")
		require.NotNil(t, opts.AuthCallout, "the auth callout")
		require.Equal(t, []string{keys.UserPub}, opts.AuthCallout.AuthUsers)
		require.Equal(t, "headcount", opts.Cluster.Name)
		require.Equal(t, 6222, opts.Cluster.Port)
		require.NotNil(t, opts.Cluster.TLSConfig, "routes over TLS")
		require.Equal(t, tls.RequireAndVerifyClientCert, opts.Cluster.TLSConfig.ClientAuth, "mutual TLS on routes")
		require.Len(t, opts.Routes, n)
		// On loopback: each route's host (nats-<j>.nats-cluster) is server j.
		for _, u := range opts.Routes {
			host, _, _ := strings.Cut(u.Hostname(), ".")
			var idx int
			_, err := fmt.Sscanf(host, sts0.name+"-%d", &idx)
			require.NoError(t, err, u.String())
			u.Host = fmt.Sprintf("127.0.0.1:%d", clusterPorts[idx])
		}
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", clusterPorts[i]
		servers[i] = natstest.Run(t, opts)
	}
	require.Eventually(t, func() bool {
		for _, s := range servers {
			if s.NumRoutes() < n-1 {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "the servers route to one another")

	caFile := filepath.Join(tlsDir, "ca.crt")
	connect := func(i int, c natsauth.Client, opts ...nats.Option) (*nats.Conn, error) {
		c.TLSCA = caFile
		o, err := c.Options()
		require.NoError(t, err)
		nc, err := nats.Connect(servers[i].ClientURL(), append(o, opts...)...)
		if err == nil {
			t.Cleanup(nc.Close)
		}
		return nc, err
	}
	calloutConn, err := connect(0, natsauth.Client{NKey: keys.UserSeedFile})
	require.NoError(t, err)
	var bindings []callout.Binding
	for _, a := range container(t, r, "headcount-auth-callout").Args {
		if b, err := callout.ParseBinding(a); err == nil {
			bindings = append(bindings, b)
		}
	}
	require.NotEmpty(t, bindings)
	subjects := fleet.Subjects{Prefix: fleet.DefaultPrefix}
	pod := "demo-follower-7d9f-aaaaa"
	svc, err := callout.Start(calloutConn, callout.Config{Subjects: subjects, Issuer: keys.Issuer, Bindings: bindings,
		Reviewer: reviewed{token: "follower-token", review: callout.Review{Namespace: "headcount", ServiceAccount: "demo-follower", Pod: pod}},
		Logger:   slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(svc.Close)

	_, err = nats.Connect(servers[2].ClientURL(), nats.Secure(&tls.Config{InsecureSkipVerify: true}))
	require.ErrorContains(t, err, "Authorization Violation", "anonymous")
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("follower-token"), 0o600))
	var violations natstest.Violations
	member, err := connect(2, natsauth.Client{TokenFile: tokenFile}, violations.Option())
	require.NoError(t, err, "a pod on server 2, admitted by the callout on server 0")
	watcher, err := connect(1, natsauth.Client{NKey: keys.UserSeedFile})
	require.NoError(t, err)
	got := make(chan string, 4)
	_, err = watcher.Subscribe(subjects.Watch(""), func(m *nats.Msg) { got <- m.Subject })
	require.NoError(t, err)
	require.NoError(t, watcher.Flush())
	violations.Refused(t, member, subjects.Report("demo", "demo-follower-7d9f-bbbbb"))
	own := subjects.Report("demo", pod)
	require.Eventually(t, func() bool {
		// Until server 2 has learnt the subscription on server 1.
		if member.Publish(own, []byte(`{}`)) != nil {
			return false
		}
		select {
		case s := <-got:
			return s == own
		case <-time.After(100 * time.Millisecond):
			return false
		}
	}, 10*time.Second, time.Millisecond, "the pod's own report crosses the cluster")
}
