package metricsadapter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Metrics counts the adapter's answers and exports how long NATS has been
// away, the input of the staleness bound.
type Metrics struct {
	answers *prometheus.CounterVec
	away    prometheus.GaugeFunc
}

// NewMetrics returns the adapter's metrics; link feeds the outage gauge.
func NewMetrics(link Link) *Metrics {
	return &Metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_adapter_answers_total",
			Help: "Metric requests answered, by API (custom, external) and result (ok, not_found, unavailable: stale or caches not synced, error).",
		}, []string{"api", "result"}),
		away: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "headcount_adapter_nats_disconnected_seconds",
			Help: "How long NATS has been unreachable (0 while connected); past --max-staleness every answer is 503.",
		}, func() float64 {
			since := link.StaleSince()
			if since.IsZero() {
				return 0
			}
			return time.Since(since).Seconds()
		}),
	}
}

// Register adds the metrics to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	if err := reg.Register(m.answers); err != nil {
		return err
	}
	return reg.Register(m.away)
}

func (m *Metrics) answered(api string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	switch {
	case err == nil:
	case apierrors.IsNotFound(err):
		result = "not_found"
	case apierrors.IsServiceUnavailable(err):
		result = "unavailable"
	default:
		result = "error"
	}
	m.answers.WithLabelValues(api, result).Inc()
}
