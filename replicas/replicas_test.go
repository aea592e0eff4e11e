package replicas

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDesired(t *testing.T) {
	pro, err := PlanNamed("pro")
	require.NoError(t, err)
	cases := []struct {
		name          string
		policy        Policy
		current, live int64
		want          int64
	}{
		{"ceil", pro.Policy(100, false), 0, 250, 3},
		{"exact", pro.Policy(100, false), 0, 300, 3},
		{"inside band keeps current", pro.Policy(100, false), 4, 430, 4},
		{"inside band keeps current downwards", pro.Policy(100, false), 4, 365, 4},
		{"outside band scales up", pro.Policy(100, false), 4, 450, 5},
		{"outside band scales down", pro.Policy(100, false), 4, 350, 4},
		{"well below scales down", pro.Policy(100, false), 4, 150, 2},
		{"plan max", pro.Policy(100, false), 0, 5000, 10},
		{"plan min without zero", pro.Policy(100, false), 3, 0, 1},
		{"zero when allowed", pro.Policy(100, true), 3, 0, 0},
		{"zero only when idle", pro.Policy(100, true), 0, 1, 1},
		{"free is one", mustPlan(t, "free").Policy(10, false), 0, 1000, 1},
		{"starter caps at three", mustPlan(t, "starter").Policy(10, false), 1, 1000, 3},
		{"enterprise unlimited", mustPlan(t, "enterprise").Policy(10, false), 0, 1000, 100},
		{"enterprise never sleeps", mustPlan(t, "enterprise").Policy(10, true), 5, 0, 1},
		{"fractional target", Policy{Target: 0.5, Min: 1}, 0, 3, 6},
		{"no tolerance", Policy{Target: 100, Min: 1, Tolerance: -1}, 4, 401, 5},
		{"custom tolerance", Policy{Target: 100, Min: 1, Tolerance: 0.5}, 4, 590, 4},
		{"negative live counts as none", Policy{Target: 100, Min: 2}, 0, -5, 2},
		{"huge ratio saturates", Policy{Target: 1e-300, Min: 1}, 0, math.MaxInt64, math.MaxInt64},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.NoError(t, c.policy.Validate())
			assert.Equal(t, c.want, c.policy.Desired(c.current, c.live))
		})
	}
}

func TestValidate(t *testing.T) {
	for _, p := range []Policy{
		{Target: 0},
		{Target: -1},
		{Target: math.NaN()},
		{Target: math.Inf(1)},
		{Target: 1, Min: -1},
		{Target: 1, Min: 3, Max: 2},
		{Target: 1, Max: -1},
		{Target: 1, Tolerance: 1},
		{Target: 1, Tolerance: math.NaN()},
	} {
		assert.Error(t, p.Validate(), "%+v", p)
	}
}

func TestPlanNamed(t *testing.T) {
	_, err := PlanNamed("gold")
	require.ErrorContains(t, err, "free, starter, pro, enterprise")
	for _, p := range Plans {
		got, err := PlanNamed(p.Name)
		require.NoError(t, err)
		assert.Equal(t, p, got)
		assert.Equal(t, int64(1), p.Min, "every plan keeps at least one replica while active")
	}
}

func mustPlan(t *testing.T, name string) Plan {
	t.Helper()
	p, err := PlanNamed(name)
	require.NoError(t, err)
	return p
}

func TestBounds(t *testing.T) {
	for _, tc := range []struct {
		p    Policy
		want string
	}{
		{Policy{Min: 1, Max: 10}, "1–10"},
		{Policy{Min: 1, Max: 3, ScaleToZero: true}, "0–3"},
		{Policy{Min: 2}, "2–unlimited"},
	} {
		if got := tc.p.Bounds(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.p, got, tc.want)
		}
	}
}
