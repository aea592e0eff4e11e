package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Error reasons: the label of headcount_router_errors_total.
const (
	reasonNotFound     = "not_found"
	reasonMethod       = "method_not_allowed"
	reasonMalformed    = "malformed_id"
	reasonTooLarge     = "body_too_large"
	reasonBadBody      = "bad_body"
	reasonUnknownOwner = "unknown_follower"
	reasonOwnerGone    = "owner_gone"
	reasonNoLeader     = "no_leader"
	reasonNoFollower   = "no_follower"
	reasonRefused      = "upstream_refused"
	reasonUpstream     = "upstream_error"
	reasonClientGone   = "client_canceled"
	reasonHoldFull     = "hold_queue_full"
	reasonHoldTimeout  = "hold_timeout"
	reasonShuttingDown = "shutting_down"
	reasonNotReady     = "not_ready"
)

// metrics are the router's own series; the fleet's (followers by state,
// instances, demand, NATS drops) come from fleet.Collector.
type metrics struct {
	placements *prometheus.CounterVec   // follower
	latency    *prometheus.HistogramVec // route, code
	retries    prometheus.Counter
	ejections  prometheus.Counter
	errors     *prometheus.CounterVec // reason
	holds      *prometheus.CounterVec // outcome
}

func newMetrics(reg prometheus.Registerer, service string, held func() int) (*metrics, error) {
	labels := prometheus.Labels{"service": service}
	m := &metrics{
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_placements_total", ConstLabels: labels,
			Help: "Resource instances this router placed, by follower.",
		}, []string{"follower"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "headcount_router_response_seconds", ConstLabels: labels,
			Help:    "Time from request to response headers (a stream's first byte), by route and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "code"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_retries_total", ConstLabels: labels,
			Help: "Creations and snapshots retried on another follower after a refused connection or a 503.",
		}),
		ejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "headcount_router_ejections_total", ConstLabels: labels,
			Help: "Followers taken out of placement after a refused or reset connection or a 503.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_errors_total", ConstLabels: labels,
			Help: "Requests the router answered with an error itself, by reason.",
		}, []string{"reason"}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_held_total", ConstLabels: labels,
			Help: "Creations held because no follower was ready, by outcome.",
		}, []string{"outcome"}),
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_router_held_requests", ConstLabels: labels,
		Help: "Creations waiting now for a ready follower.",
	}, func() float64 { return float64(held()) })
	for _, c := range []prometheus.Collector{m.placements, m.latency, m.retries, m.ejections, m.errors, m.holds, gauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Move triggers: the label of the move metrics.
const (
	triggerDrain     = "drain"     // the owner is draining
	triggerDeath     = "death"     // the owner's stream ended, or it left the view
	triggerRebalance = "rebalance" // the owner carries more than its share
)

// Why a move failed: the label of headcount_router_move_failures_total.
const (
	failNotMovable = "not_movable" // the follower did not return the resource and params
	failNoTarget   = "no_target"   // no other ready follower
	failCreate     = "create"      // the target did not create the instance
	failOpen       = "open"        // the target did not open its stream
	failInit       = "init"        // no init from the target in time
	failClientGone = "client_gone"
	failDeleteOld  = "delete_old" // the move worked, the old instance was not deleted
)

type moveMetrics struct {
	moved        *prometheus.CounterVec   // trigger
	failed       *prometheus.CounterVec   // trigger, reason
	seconds      *prometheus.HistogramVec // trigger
	movedDropped *prometheus.CounterVec   // reason
}

func newMoveMetrics(reg prometheus.Registerer, service string, openStreams, movedIDs func() int) (*moveMetrics, error) {
	labels := prometheus.Labels{"service": service}
	m := &moveMetrics{
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_streams_moved_total", ConstLabels: labels,
			Help: "Live streams this router moved to another follower, by trigger (drain, death, rebalance).",
		}, []string{"trigger"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_move_failures_total", ConstLabels: labels,
			Help: "Stream moves that failed, by trigger and reason.",
		}, []string{"trigger", "reason"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "headcount_router_move_seconds", ConstLabels: labels,
			Help:    "Time from deciding a move to the new follower's init, by trigger.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"trigger"}),
		movedDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_router_moved_dropped_total", ConstLabels: labels,
			Help: "Move announcements not applied, by reason (table_full; invalid ones count with the fleet's drops).",
		}, []string{"reason"}),
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_router_open_streams", ConstLabels: labels,
		Help: "Client streams this router proxies now.",
	}, func() float64 { return float64(openStreams()) })
	ids := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "headcount_router_moved_ids", ConstLabels: labels,
		Help: "Moved instance ids this router sends to their new owner.",
	}, func() float64 { return float64(movedIDs()) })
	for _, col := range []prometheus.Collector{m.moved, m.failed, m.seconds, m.movedDropped, open, ids} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}
