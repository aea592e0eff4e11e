package sidecar

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	events   *prometheus.CounterVec
	requests *prometheus.CounterVec
	healthy  prometheus.Gauge
	checks   *prometheus.CounterVec
	// abandoned: creations whose caller left before the follower answered
	abandoned *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, instances, abandoned func() int) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_sidecar_instance_events_total",
			Help: "Instance count changes by cause: created, deleted, collected, vanished; unparsed 201 bodies are not counted.",
		}, []string{"event"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_sidecar_requests_total",
			Help: "Requests proxied to the follower, by API, route and status code (499: the client left first).",
		}, []string{"api", "route", "code"}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "headcount_sidecar_upstream_healthy",
			Help: "1 while the follower's GET /v1/healthcheck answers 200.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_sidecar_health_checks_total",
			Help: "Health checks of the follower by result: ok, tolerated (failed, below the failure threshold), failed (counted against readiness).",
		}, []string{"result"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_sidecar_abandoned_creations_total",
			Help: "Creations whose caller left before the follower answered, by outcome: deleted (the follower created the instance; the sidecar deleted it), kept (created, not deleted: counted), not_created, unanswered.",
		}, []string{"outcome"}),
	}
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_sidecar_instances",
		Help: "Live resource instances the sidecar counts on its follower.",
	}, func() float64 { return float64(instances()) })
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_sidecar_abandoned_creations_waiting",
		Help: "Creations whose caller left that the follower has not answered yet.",
	}, func() float64 { return float64(abandoned()) })
	for _, c := range []prometheus.Collector{m.events, m.requests, m.healthy, m.checks, m.abandoned, live, waiting} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
