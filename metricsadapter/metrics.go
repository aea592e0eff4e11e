package metricsadapter

import (
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Metrics counts the adapter's answers. How long NATS has been away, the
// input of the staleness bound, is the view's own headcount_view_stale_seconds
// (fleet.Collector).
type Metrics struct {
	answers *prometheus.CounterVec
}

// NewMetrics returns the adapter's metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "headcount_adapter_answers_total",
			Help: "Metric requests answered, by API (custom, external) and result (ok, not_found, unavailable: stale or caches not synced, error).",
		}, []string{"api", "result"}),
	}
}

// Register adds the metrics to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	return reg.Register(m.answers)
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
