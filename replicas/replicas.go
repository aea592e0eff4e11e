// Package replicas is the replica arithmetic shared by the KEDA scaler and
// local mode: HPA semantics over live instances, clamped to a plan's bounds.
// It is pure: no clocks, no I/O.
package replicas

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// DefaultTolerance is the HPA's default band: a usage ratio within 10 % of 1
// keeps the current replica count, so that small wobbles do not scale.
const DefaultTolerance = 0.1

// Plan is one row of the plan table.
type Plan struct {
	Name string
	Min  int64
	Max  int64 // 0 = unlimited
	// ScaleToZero says whether the plan lets an idle service sleep at zero
	// replicas (the configuration must ask for it too).
	ScaleToZero bool
}

// Plans is the plan table. Enterprise never sleeps: its contract is one warm
// follower at all times, with no cold start.
var Plans = []Plan{
	{Name: "free", Min: 1, Max: 1, ScaleToZero: true},
	{Name: "starter", Min: 1, Max: 3, ScaleToZero: true},
	{Name: "pro", Min: 1, Max: 10, ScaleToZero: true},
	{Name: "enterprise", Min: 1, Max: 0, ScaleToZero: false},
}

// PlanNamed returns the plan called name.
func PlanNamed(name string) (Plan, error) {
	names := make([]string, 0, len(Plans))
	for _, p := range Plans {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return Plan{}, fmt.Errorf("plan %q: want one of %s", name, strings.Join(names, ", "))
}

// Policy says how live instances become replicas.
type Policy struct {
	// Target is the instances one replica should hold (> 0).
	Target float64
	// Min and Max bound the result; Max 0 means unlimited.
	Min, Max int64
	// ScaleToZero allows 0 replicas when nothing is live, below Min.
	ScaleToZero bool
	// Tolerance is the band around a usage ratio of 1 inside which the
	// current count is kept; 0 means DefaultTolerance, negative means none.
	Tolerance float64
}

// Policy returns the plan's policy for target; zero is allowed only when both
// the plan and the caller's configuration allow it.
func (p Plan) Policy(target float64, scaleToZero bool) Policy {
	return Policy{Target: target, Min: p.Min, Max: p.Max, ScaleToZero: p.ScaleToZero && scaleToZero}
}

// Bounds is the replica range for people: "1–10", "0–3" with scale to
// zero (0 only while nothing is live), "1–unlimited".
func (p Policy) Bounds() string {
	lo := p.Min
	if p.ScaleToZero {
		lo = 0
	}
	hi := "unlimited"
	if p.Max > 0 {
		hi = strconv.FormatInt(p.Max, 10)
	}
	return strconv.FormatInt(lo, 10) + "–" + hi
}

// Validate reports a policy that Desired cannot honour.
func (p Policy) Validate() error {
	switch {
	case !(p.Target > 0) || math.IsInf(p.Target, 0):
		return fmt.Errorf("target %v: want a positive finite number", p.Target)
	case p.Min < 0:
		return fmt.Errorf("min %d: want ≥ 0", p.Min)
	case p.Max < 0 || (p.Max > 0 && p.Max < p.Min):
		return fmt.Errorf("max %d: want 0 (unlimited) or ≥ min %d", p.Max, p.Min)
	case math.IsNaN(p.Tolerance) || p.Tolerance >= 1:
		return fmt.Errorf("tolerance %v: want < 1", p.Tolerance)
	}
	return nil
}

// Desired is the replica target for live instances when current replicas
// run, with the HPA's AverageValue semantics: ceil(live / target), except
// that a usage ratio within the tolerance band keeps current; then clamped to
// [Min, Max], with 0 only when nothing is live and ScaleToZero is set.
func (p Policy) Desired(current, live int64) int64 {
	live = max(live, 0)
	if live == 0 && p.ScaleToZero {
		return 0
	}
	tolerance := p.Tolerance
	switch {
	case tolerance == 0:
		tolerance = DefaultTolerance
	case tolerance < 0:
		tolerance = 0
	}
	var desired int64
	if current > 0 && math.Abs(float64(live)/(p.Target*float64(current))-1) <= tolerance {
		desired = current
	} else {
		desired = ceilDiv(live, p.Target)
	}
	desired = max(desired, p.Min, 1)
	if p.Max > 0 {
		desired = min(desired, p.Max)
	}
	return desired
}

// ceilDiv is ceil(live/target) without overflowing int64 for huge ratios.
func ceilDiv(live int64, target float64) int64 {
	f := math.Ceil(float64(live) / target)
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(f)
}
