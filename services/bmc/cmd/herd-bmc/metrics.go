package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/services/bmc/internal/runner"
)

// metrics count what the jobs did, seen from the reports the runner
// sends: labels are the fixed kinds and states, never a machine.
type metrics struct {
	ended    *prometheus.CounterVec
	attempts *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
	taken    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_bmc_jobs_total",
			Help: "BMC jobs ended, by kind and final state."}, []string{"kind", "state"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_bmc_attempts_total",
			Help: "Attempts of BMC jobs started, by kind."}, []string{"kind"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "herd_bmc_job_seconds",
			Help:    "Time from a job's first attempt to its end, by kind.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}, []string{"kind"}),
		taken: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_bmc_jobs_taken_total",
			Help: "BMC jobs taken from herd-server."}),
	}
	reg.MustRegister(m.ended, m.attempts, m.seconds, m.taken)
	return m
}

// observe wraps src so every job taken and report sent is counted.
func (m *metrics) observe(src runner.Source) runner.Source {
	return &observedSource{Source: src, m: m}
}

type observedSource struct {
	runner.Source
	m *metrics
}

func (o *observedSource) Next(ctx context.Context) (runner.Job, error) {
	j, err := o.Source.Next(ctx)
	if err == nil {
		o.m.taken.Inc()
	}
	return j, err
}

func (o *observedSource) Report(ctx context.Context, r runner.Result) error {
	kind := string(r.Kind)
	switch {
	case r.State == runner.StateRunning:
		o.m.attempts.WithLabelValues(kind).Inc()
	case len(r.Attempts) > 0:
		o.m.ended.WithLabelValues(kind, string(r.State)).Inc()
		o.m.seconds.WithLabelValues(kind).Observe(r.Attempts[len(r.Attempts)-1].End.Sub(r.Attempts[0].Start).Seconds())
	default:
		o.m.ended.WithLabelValues(kind, string(r.State)).Inc()
		o.m.seconds.WithLabelValues(kind).Observe(0)
	}
	return o.Source.Report(ctx, r)
}
