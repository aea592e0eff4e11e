package fleet

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a view's figures and a watcher's message counts to
// Prometheus, read at scrape time so nothing is counted twice.
type Collector struct {
	view    *View
	watcher *Watcher

	followers, instances, pending, demand, leaders, unverified, stale, dropped, applied *prometheus.Desc
	// per follower, for placement by cost (docs/placement.md)
	followerGraphs, followerCost *prometheus.Desc
}

// NewCollector describes view and (if not nil) watcher under the headcount_ namespace.
func NewCollector(view *View, watcher *Watcher) *Collector {
	return &Collector{
		view: view, watcher: watcher,
		followers:  prometheus.NewDesc("headcount_followers", "Followers in the view, by state.", []string{"service", "state"}, nil),
		instances:  prometheus.NewDesc("headcount_instances", "Live resource instances on ready and draining followers.", []string{"service"}, nil),
		pending:    prometheus.NewDesc("headcount_pending_placements", "Placements the followers have not reported yet (they count in the live figure).", []string{"service"}, nil),
		stale:      prometheus.NewDesc("headcount_view_stale_seconds", "How long the view has not heard from NATS (0 while connected); its clocks stand still meanwhile.", nil, nil),
		demand:     prometheus.NewDesc("headcount_demand", "Creations held by routers because no follower is ready.", []string{"service"}, nil),
		leaders:    prometheus.NewDesc("headcount_leaders", "Leaders in the view.", []string{"service"}, nil),
		unverified: prometheus.NewDesc("headcount_unverified", "Incarnations not (yet) verified to answer at their address: no traffic, not counted.", []string{"service"}, nil),
		dropped:    prometheus.NewDesc("headcount_messages_dropped_total", "NATS messages dropped by validation or by the view's bounds, by reason.", []string{"reason"}, nil),
		applied:    prometheus.NewDesc("headcount_messages_applied_total", "NATS messages applied to the view, by kind.", []string{"kind"}, nil),
		followerGraphs: prometheus.NewDesc("headcount_follower_graphs",
			"Graphs (distinct definitions) a ready or draining follower holds, as cost counts them: every instance when its agent counts none.", []string{"service", "follower"}, nil),
		followerCost: prometheus.NewDesc("headcount_follower_cost",
			"A ready or draining follower's cost with the default weights: 1 per graph, 0.1 per instance and unreported placement.", []string{"service", "follower"}, nil),
	}
}

func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.followers, c.instances, c.pending, c.demand, c.leaders, c.unverified, c.stale, c.dropped, c.applied, c.followerGraphs, c.followerCost} {
		ch <- d
	}
}

func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.view.Services() {
		t := c.view.Totals(s)
		gauge(c.followers, float64(t.Starting), s, string(StateStarting))
		gauge(c.followers, float64(t.Ready), s, string(StateReady))
		gauge(c.followers, float64(t.Draining), s, string(StateDraining))
		gauge(c.instances, float64(t.Instances), s)
		gauge(c.pending, float64(t.Pending), s)
		gauge(c.demand, float64(t.Demand), s)
		gauge(c.leaders, float64(t.Leaders), s)
		gauge(c.unverified, float64(t.Unverified), s)
		for _, m := range c.view.Members(s) {
			if m.Role == RoleFollower && (m.State == StateReady || m.State == StateDraining) {
				gauge(c.followerGraphs, float64(m.CostGraphs()), s, m.Follower)
				gauge(c.followerCost, DefaultCostWeights.Member(m), s, m.Follower)
			}
		}
	}
	stale := 0.0
	if since := c.view.StaleSince(); !since.IsZero() {
		stale = time.Since(since).Seconds()
	}
	gauge(c.stale, stale)
	drops := c.view.Drops()
	if c.watcher != nil {
		for reason, n := range c.watcher.Drops() {
			drops[reason] += n
		}
	}
	for reason, n := range drops {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), reason)
	}
	if c.watcher == nil {
		return
	}
	for kind, n := range c.watcher.Applied() {
		ch <- prometheus.MustNewConstMetric(c.applied, prometheus.CounterValue, float64(n), kind)
	}
}
