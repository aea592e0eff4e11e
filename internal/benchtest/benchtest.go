// Package benchtest holds what benchmarks share. Only tests import it, so
// shipped binaries never link the testing package.
package benchtest

import (
	"slices"
	"testing"
	"time"
)

// ReportLatencies adds p50, p99 and max of d, in µs, to the benchmark's output.
func ReportLatencies(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / float64(time.Microsecond) }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
	b.ReportMetric(at(1), "max-µs")
}

// Median is the middle of v (the upper one of an even count).
func Median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}
