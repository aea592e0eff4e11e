package scaler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/headcount-dev/headcount/replicas"
)

// Register adds the scaler's own metrics to reg, read at scrape time (the
// view's figures are fleet.Collector's, registered by the process).
func (s *Scaler) Register(reg prometheus.Registerer) error {
	if err := reg.Register(s.rpcs); err != nil {
		return err
	}
	return reg.Register(&collector{s: s,
		live:        prometheus.NewDesc("headcount_scaler_live_instances", "Live instances KEDA is told: instances on ready and draining followers plus routers' demand.", []string{"service"}, nil),
		desired:     prometheus.NewDesc("headcount_scaler_desired_replicas", "Replica target under each plan's bounds, for services in the view whose target KEDA has sent.", []string{"service", "plan"}, nil),
		target:      prometheus.NewDesc("headcount_scaler_target_instances_per_replica", "Last targetInstancesPerReplica KEDA sent.", []string{"service"}, nil),
		subscribers: prometheus.NewDesc("headcount_scaler_stream_subscribers", "Open StreamIsActive streams.", []string{"service"}, nil),
	})
}

type collector struct {
	s                                  *Scaler
	live, desired, target, subscribers *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.live, c.desired, c.target, c.subscribers} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, service := range c.s.view.Services() {
		st := c.s.status(service)
		gauge(c.live, float64(st.Live), service)
		if st.Desired == nil {
			continue
		}
		gauge(c.target, st.TargetPerReplica, service)
		for _, p := range replicas.Plans {
			gauge(c.desired, float64(st.Desired[p.Name]), service, p.Name)
		}
	}
	for service, n := range c.s.streams.counts() {
		gauge(c.subscribers, float64(n), service)
	}
}
