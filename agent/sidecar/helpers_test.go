package sidecar_test

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/headcount-dev/headcount/agent/sidecar"
)

func startOrErr(cfg sidecar.Config, control, stream *string) (*sidecar.Sidecar, error) {
	lc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	ls, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ls.Close()
	*control, *stream = lc.Addr().String(), ls.Addr().String()
	return sidecar.Start(cfg, lc, ls)
}

// counter reads one series of a counter (or gauge) in a registry; 0 when it was
// never incremented.
func counter(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
		for _, m := range fam.GetMetric() {
			if matches(m, labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(labels)
}

func eventCounter(t *testing.T, f *fixture, event string) float64 {
	t.Helper()
	return counter(t, f.registry, "headcount_sidecar_instance_events_total", map[string]string{"event": event})
}

func requestCounter(t *testing.T, f *fixture, api, route, code string) float64 {
	t.Helper()
	return counter(t, f.registry, "headcount_sidecar_requests_total", map[string]string{"api": api, "route": route, "code": code})
}
