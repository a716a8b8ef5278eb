package runner

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/proto/workflow"
)

// Metrics counts what the worker did. A nil *Metrics counts nothing.
type Metrics struct {
	actions  *prometheus.CounterVec
	duration prometheus.Histogram
	retries  prometheus.Counter
	lines    *prometheus.CounterVec
}

// NewMetrics registers the worker's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_worker_actions_total", Help: "Actions run, by final state.",
		}, []string{"state"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herd_worker_action_seconds", Help: "How long actions ran.",
			Buckets: []float64{1, 5, 15, 60, 300, 900, 3600},
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_worker_server_retries_total", Help: "Calls to herd-server sent again after a failure.",
		}),
	}
	m.lines = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herd_worker_log_lines_total", Help: "Output lines of action containers, by fate: sent to herd-server or dropped (buffer full, refused).",
	}, []string{"result"})
	reg.MustRegister(m.actions, m.duration, m.retries, m.lines)
	return m
}

func (m *Metrics) action(st workflow.State, d time.Duration) {
	if m == nil {
		return
	}
	m.actions.WithLabelValues(stateName(st)).Inc()
	m.duration.Observe(d.Seconds())
}

func (m *Metrics) retry() {
	if m != nil {
		m.retries.Inc()
	}
}

func (m *Metrics) logLines(sent, dropped int) {
	if m == nil {
		return
	}
	m.lines.WithLabelValues("sent").Add(float64(sent))
	m.lines.WithLabelValues("dropped").Add(float64(dropped))
}
