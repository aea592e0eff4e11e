package deploy

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// chartOnlyFlags are what the chart adds to a command and the overlays do
// not: the adapter watching only the chart's one service.
var chartOnlyFlags = []string{"--services"}

// flags is a container's arguments as flag → value ("" for a switch), the
// subcommand under "".
func flags(args []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			out[""] = a
			continue
		}
		if slices.Contains(chartOnlyFlags, a) {
			i++
			continue
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			out[a] = args[i+1]
			i++
		} else {
			out[a] = ""
		}
	}
	return out
}

func httpProbe(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	return p.HTTPGet.Path + " " + p.HTTPGet.Port.String()
}

// The chart and the overlays describe one install: for plan pro (and the
// hpa overlay against autoscaler hpa), each role's command, ports, probes,
// resources, security context, grace period and rollout strategy are the
// same (the scaler's and the adapter's certificate flags included), and so
// are the ScaledObject's bounds, fallback, behaviour and trigger, the
// HPA's, the scaler's admission policy, and the Ingress's paths. What only the chart does (NATS
// identities, placement, egress) is checked by the chart's own tests.
func TestChartAgreesWithTheOverlays(t *testing.T) {
	for overlay, vals := range map[string]map[string]any{
		"pro": {"plan": "pro"},
		"hpa": {"plan": "pro", "autoscaler": "hpa"},
	} {
		t.Run(overlay, func(t *testing.T) {
			k, c := decode(t, filepath.Join("overlays", overlay)), decodeChart(t, vals)
			for _, role := range []string{"leader", "follower", "router", "scaler", "adapter"} {
				if role == "adapter" && overlay != "hpa" {
					continue
				}
				kw, cw := workloadByRole(t, k, role), workloadByRole(t, c, role)
				kc, cc := kw.pod.Spec.Containers[0], cw.pod.Spec.Containers[0]
				assert.Equal(t, flags(kc.Args), flags(cc.Args), "%s: arguments", role)
				assert.Equal(t, kc.Ports, cc.Ports, "%s: ports", role)
				assert.Equal(t, httpProbe(kc.LivenessProbe), httpProbe(cc.LivenessProbe), "%s: liveness", role)
				assert.Equal(t, httpProbe(kc.StartupProbe), httpProbe(cc.StartupProbe), "%s: startup", role)
				assert.Equal(t, kc.ReadinessProbe, cc.ReadinessProbe, "%s: readiness", role)
				assert.Equal(t, kc.Resources, cc.Resources, "%s: resources", role)
				assert.Equal(t, kc.SecurityContext, cc.SecurityContext, "%s: securityContext", role)
				assert.Equal(t, kc.Lifecycle, cc.Lifecycle, "%s: lifecycle", role)
				assert.Equal(t, kw.pod.Spec.SecurityContext, cw.pod.Spec.SecurityContext, "%s: pod securityContext", role)
				assert.Equal(t, kw.pod.Spec.TerminationGracePeriodSeconds, cw.pod.Spec.TerminationGracePeriodSeconds, "%s: grace", role)
				assert.Equal(t, kw.replicas, cw.replicas, "%s: replicas", role)
				assert.Equal(t, k.deployments[kw.name].Spec.Strategy, c.deployments[cw.name].Spec.Strategy, "%s: strategy", role)
			}
			require.Len(t, c.other["ScaledObject"], len(k.other["ScaledObject"]))
			for i := range k.other["ScaledObject"] {
				var ks, cs kedav1alpha1.ScaledObject
				strictInto(t, k.other["ScaledObject"][i], &ks)
				strictInto(t, c.other["ScaledObject"][i], &cs)
				assert.Equal(t, ks.Spec.MinReplicaCount, cs.Spec.MinReplicaCount)
				assert.Equal(t, ks.Spec.MaxReplicaCount, cs.Spec.MaxReplicaCount)
				assert.Equal(t, ks.Spec.PollingInterval, cs.Spec.PollingInterval)
				assert.Equal(t, ks.Spec.CooldownPeriod, cs.Spec.CooldownPeriod)
				assert.Equal(t, ks.Spec.Fallback, cs.Spec.Fallback)
				assert.Equal(t, ks.Spec.Advanced, cs.Spec.Advanced, "the HPA behaviour")
				km, cm := ks.Spec.Triggers[0].Metadata, cs.Spec.Triggers[0].Metadata
				delete(km, "scalerAddress")
				delete(cm, "scalerAddress")
				assert.Equal(t, km, cm, "trigger metadata")
			}
			require.Len(t, c.hpas, len(k.hpas))
			for i := range k.hpas {
				assert.Equal(t, k.hpas[i].Spec.MinReplicas, c.hpas[i].Spec.MinReplicas)
				assert.Equal(t, k.hpas[i].Spec.MaxReplicas, c.hpas[i].Spec.MaxReplicas)
				assert.Equal(t, k.hpas[i].Spec.Metrics, c.hpas[i].Spec.Metrics)
				assert.Equal(t, k.hpas[i].Spec.Behavior, c.hpas[i].Spec.Behavior)
			}
			// The scaler's admission policy: the same rules, for each one's scaler.
			require.Len(t, k.admission, 1)
			require.Len(t, c.admission, 1)
			kp, cp := k.admission[0].Spec, c.admission[0].Spec
			assert.Equal(t, kp.Validations, cp.Validations)
			assert.Equal(t, kp.Variables, cp.Variables)
			assert.Equal(t, kp.MatchConstraints, cp.MatchConstraints)
			assert.Equal(t, kp.FailurePolicy, cp.FailurePolicy)
			require.Len(t, kp.MatchConditions, 1)
			require.Len(t, cp.MatchConditions, 1)
			assert.Equal(t, `request.userInfo.username == "system:serviceaccount:headcount:headcount-scaler"`, kp.MatchConditions[0].Expression)
			require.Len(t, c.ingresses, 1)
			require.Len(t, k.ingresses, 1)
			paths := func(r rendered) (out []string) {
				for _, rule := range r.ingresses[0].Spec.Rules {
					for _, p := range rule.HTTP.Paths {
						out = append(out, p.Path)
					}
				}
				return out
			}
			assert.Equal(t, paths(k), paths(c))
			assert.Equal(t, k.ingresses[0].Annotations, c.ingresses[0].Annotations)
		})
	}
}
