package router

import "github.com/prometheus/client_golang/prometheus"

// outageMetrics count what the router does to ride out an outage of the
// leader or of every follower.
type outageMetrics struct {
	writesRetried prometheus.Counter
}

func newOutageMetrics(reg prometheus.Registerer, service string) (*outageMetrics, error) {
	labels := prometheus.Labels{"service": service}
	m := &outageMetrics{
		writesRetried: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_writes_retried_total", ConstLabels: labels,
			Help: "Writes that did not reach the leader at the first try (none registered, or its connection refused) and were tried again.",
		}),
	}
	for _, c := range []prometheus.Collector{m.writesRetried} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
