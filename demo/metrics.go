package demo

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	instances   prometheus.Gauge
	subscribers prometheus.Gauge
	created     prometheus.Counter
	writes      prometheus.Counter
	writtenKeys prometheus.Counter
	rejected    *prometheus.CounterVec
	reconnects  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		instances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "headcount_demo_instances", Help: "Live resource instances."}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "headcount_demo_subscribers", Help: "Open SSE streams."}),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_demo_instances_created_total", Help: "Resource instances created."}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_demo_writes_total", Help: "Input updates applied (PATCH /v1/inputs)."}),
		writtenKeys: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_demo_written_keys_total", Help: "Keys written by input updates."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_demo_rejected_requests_total", Help: "Requests refused, by reason."}, []string{"reason"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_demo_mirror_reconnects_total", Help: "Times a follower's mirror lost the leader's stream."}),
	}
	reg.MustRegister(m.instances, m.subscribers, m.created, m.writes, m.writtenKeys, m.rejected, m.reconnects)
	return m
}
