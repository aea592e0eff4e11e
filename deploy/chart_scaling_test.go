package deploy

import (
	"math"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/utils/ptr"

	"github.com/headcount-dev/headcount/replicas"
)

// hpaSyncPeriod is the HPA controller's default --horizontal-pod-autoscaler-sync-period.
const hpaSyncPeriod = 15 * time.Second

type scaleEvent struct {
	at     time.Duration
	change int32
}

// scaleTime is how long the HPA controller takes to go from `from` to `to`
// replicas once the metric asks for `to`, under behavior: Kubernetes'
// algorithm (pkg/controller/podautoscaler, v1.37), one sync per
// hpaSyncPeriod. The stabilization window keeps the largest (scale-down)
// or smallest (scale-up) recommendation of its span; each policy bounds
// the change over its period from the replicas at the period's start; the
// select policy picks among them.
func scaleTime(t *testing.T, rules *autoscalingv2.HPAScalingRules, from, to int32) time.Duration {
	t.Helper()
	require.NotNil(t, rules)
	require.NotEqual(t, autoscalingv2.DisabledPolicySelect, ptr.Deref(rules.SelectPolicy, ""), "scaling disabled")
	down := to < from
	selectMax := ptr.Deref(rules.SelectPolicy, autoscalingv2.MaxChangePolicySelect) == autoscalingv2.MaxChangePolicySelect
	// The most change is the lowest proposal down, the highest up.
	lowest := down == selectMax
	window := time.Duration(ptr.Deref(rules.StabilizationWindowSeconds, 0)) * time.Second
	current := from
	var events []scaleEvent
	for now := time.Duration(0); now < 24*time.Hour; now += hpaSyncPeriod {
		// The old recommendation (from, made at every sync before 0) is
		// in the window while its last one, at -hpaSyncPeriod, is.
		if now < window-hpaSyncPeriod {
			continue
		}
		var limit int32
		for i, p := range rules.Policies {
			changed := int32(0)
			for _, e := range events {
				if e.at > now-time.Duration(p.PeriodSeconds)*time.Second {
					changed += e.change
				}
			}
			start := float64(current - changed)
			var proposed int32
			switch {
			case p.Type == autoscalingv2.PodsScalingPolicy && down:
				proposed = int32(start) - p.Value
			case p.Type == autoscalingv2.PodsScalingPolicy:
				proposed = int32(start) + p.Value
			case down:
				proposed = int32(start * (1 - float64(p.Value)/100))
			default:
				proposed = int32(math.Ceil(start * (1 + float64(p.Value)/100)))
			}
			if i == 0 || (proposed < limit) == lowest {
				limit = proposed
			}
		}
		next := min(to, limit)
		if down {
			next = max(to, limit)
		}
		events = append(events, scaleEvent{now, next - current})
		if current = next; current == to {
			return now
		}
	}
	t.Fatalf("%d → %d: not within a day", from, to)
	return 0
}

// The defaults of autoscaling/v2 (behavior unset): scale-up at most
// double or 4 pods per 15 s, no window.
var defaultScaleUp = &autoscalingv2.HPAScalingRules{
	StabilizationWindowSeconds: ptr.To[int32](0),
	SelectPolicy:               ptr.To(autoscalingv2.MaxChangePolicySelect),
	Policies: []autoscalingv2.HPAScalingPolicy{
		{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
		{Type: autoscalingv2.PodsScalingPolicy, Value: 4, PeriodSeconds: 15},
	},
}

// The behaviour every install renders (KEDA's ScaledObject, decoded into
// KEDA's types, and the plain HPA): 100 → 1 replicas in at most 10
// minutes, computed with the controller's algorithm from the rendered
// policy; 1 → 100 no slower than the default's.
func TestChartScalingBehaviour(t *testing.T) {
	behaviours := 0
	forEachInstall(t, func(t *testing.T, _ map[string]any, r rendered) {
		var b []*autoscalingv2.HorizontalPodAutoscalerBehavior
		for _, obj := range r.other["ScaledObject"] {
			var so kedav1alpha1.ScaledObject
			strictInto(t, obj, &so)
			require.NotNil(t, so.Spec.Advanced)
			require.NotNil(t, so.Spec.Advanced.HorizontalPodAutoscalerConfig)
			b = append(b, so.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior)
			assert.Nil(t, so.Spec.CooldownPeriod, "cooldownPeriod applies only to scaling to zero, which no plan allows")
		}
		for _, h := range r.hpas {
			b = append(b, h.Spec.Behavior)
		}
		require.NotEmpty(t, b)
		for _, behavior := range b {
			behaviours++
			require.NotNil(t, behavior)
			down := scaleTime(t, behavior.ScaleDown, 100, 1)
			t.Logf("100 → 1 replicas: %s; 1 → 100: %s (default behaviour: %s)", down,
				scaleTime(t, behavior.ScaleUp, 1, 100), scaleTime(t, defaultScaleUp, 1, 100))
			assert.LessOrEqual(t, down, 10*time.Minute, "100 → 1 within 10 minutes")
			assert.LessOrEqual(t, scaleTime(t, behavior.ScaleUp, 1, 100), scaleTime(t, defaultScaleUp, 1, 100), "scale-up no slower than the default")
		}
	})
	assert.NotZero(t, behaviours)
}

// The simulator against cases computed by hand.
func TestScaleTimeMatchesHandComputedCases(t *testing.T) {
	// The old overlays': a 300 s window (the first step at the sync of
	// 285 s), then one pod a minute: 99 steps, the last at 285 + 98 × 60 s.
	onePodAMinute := &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](300),
		Policies: []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PodsScalingPolicy, Value: 1, PeriodSeconds: 60}}}
	assert.Equal(t, 285*time.Second+98*time.Minute, scaleTime(t, onePodAMinute, 100, 1))
	// Halving every 30 s, no window: 100 50 25 12 6 3 1, at 0 … 150 s.
	halving := &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](0),
		Policies: []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 50, PeriodSeconds: 30}}}
	assert.Equal(t, 150*time.Second, scaleTime(t, halving, 100, 1))
	// With 5 pods a period beside it (Max: the larger removal), 6 → 1 in one step.
	both := halving.DeepCopy()
	both.Policies = append(both.Policies, autoscalingv2.HPAScalingPolicy{Type: autoscalingv2.PodsScalingPolicy, Value: 5, PeriodSeconds: 30})
	assert.Equal(t, 120*time.Second, scaleTime(t, both, 100, 1))
	// The default scale-up: 1 5 (4 pods beat doubling) 10 20 40 80 100, 15 s apart.
	assert.Equal(t, 5*hpaSyncPeriod, scaleTime(t, defaultScaleUp, 1, 100))
}

// Rollouts: the single leader never runs twice (Recreate, or no surge);
// followers, routers, scalers and adapters start a new pod before an old
// one stops.
func TestChartDeploymentStrategies(t *testing.T) {
	forEachInstall(t, func(t *testing.T, _ map[string]any, r rendered) {
		for _, d := range chartDeployments(t, r) {
			role := d.Spec.Template.Labels["headcount.dev/role"]
			s := d.Spec.Strategy
			if role == "leader" {
				assert.True(t, s.Type == appsv1.RecreateDeploymentStrategyType ||
					(s.RollingUpdate != nil && s.RollingUpdate.MaxSurge != nil && s.RollingUpdate.MaxSurge.IntValue() == 0), "%s: never two leaders", d.Name)
				continue
			}
			require.Equal(t, appsv1.RollingUpdateDeploymentStrategyType, s.Type, d.Name)
			require.NotNil(t, s.RollingUpdate, d.Name)
			assert.Equal(t, 0, s.RollingUpdate.MaxUnavailable.IntValue(), "%s: surge before drain", d.Name)
			assert.Positive(t, s.RollingUpdate.MaxSurge.IntValue(), "%s: surge before drain", d.Name)
		}
	})
}

// Routers, scalers, adapters and followers spread over nodes: a
// topologySpreadConstraint on the host name selecting the workload's own pods.
func TestChartTopologySpread(t *testing.T) {
	forEachInstall(t, func(t *testing.T, _ map[string]any, r rendered) {
		for _, w := range r.workloads {
			role := w.pod.Labels["headcount.dev/role"]
			if role != "router" && role != "scaler" && role != "adapter" && role != "follower" {
				continue
			}
			spread := false
			for _, c := range w.pod.Spec.TopologySpreadConstraints {
				if c.TopologyKey == "kubernetes.io/hostname" && c.MaxSkew == 1 && selects(t, c.LabelSelector, w.pod.Labels) {
					spread = true
				}
			}
			assert.True(t, spread, "%s spreads over nodes", w.name)
		}
	})
}

// Every plan of replicas.Plans is a value of the chart with its bounds.
func TestChartPlansAreReplicasPlans(t *testing.T) {
	for _, plan := range replicas.Plans {
		for _, autoscaler := range []string{"keda", "hpa"} {
			r := decodeChart(t, map[string]any{"plan": plan.Name, "autoscaler": autoscaler})
			lo, hi := int64(-1), int64(-1)
			for _, obj := range r.other["ScaledObject"] {
				var so kedav1alpha1.ScaledObject
				strictInto(t, obj, &so)
				lo, hi = int64(*so.Spec.MinReplicaCount), int64(*so.Spec.MaxReplicaCount)
			}
			for _, h := range r.hpas {
				lo, hi = int64(*h.Spec.MinReplicas), int64(h.Spec.MaxReplicas)
			}
			assert.Equal(t, plan.Min, lo, "%s %s", plan.Name, autoscaler)
			want := plan.Max
			if want == 0 {
				want = math.MaxInt32 // unlimited: the largest count KEDA and the HPA accept
			}
			assert.Equal(t, want, hi, "%s %s", plan.Name, autoscaler)
		}
	}
	_, err := renderChartErr(map[string]any{"plan": "platinum"})
	assert.ErrorContains(t, err, `plan "platinum"`)
}

func chartDeployments(t *testing.T, r rendered) []*appsv1.Deployment {
	t.Helper()
	var out []*appsv1.Deployment
	for _, d := range r.deployments {
		out = append(out, d)
	}
	require.NotEmpty(t, out)
	return out
}
