package main

import (
	"context"
	"sync"

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
	return &observedSource{Source: src, m: m, kinds: map[string]runner.Kind{}}
}

type observedSource struct {
	runner.Source
	m *metrics
	// kinds remembers each job's kind between Next and its final report
	// (the Result does not carry it); the runner bounds how many are held.
	kinds map[string]runner.Kind
	mu    sync.Mutex
}

func (o *observedSource) Next(ctx context.Context) (runner.Job, error) {
	j, err := o.Source.Next(ctx)
	if err == nil {
		o.m.taken.Inc()
		o.mu.Lock()
		o.kinds[j.ID] = j.Kind
		o.mu.Unlock()
	}
	return j, err
}

func (o *observedSource) Report(ctx context.Context, r runner.Result) error {
	o.mu.Lock()
	kind := string(o.kinds[r.JobID])
	if r.State != runner.StateRunning {
		delete(o.kinds, r.JobID)
	}
	o.mu.Unlock()
	if r.State == runner.StateRunning {
		o.m.attempts.WithLabelValues(kind).Inc()
	} else {
		o.m.ended.WithLabelValues(kind, string(r.State)).Inc()
		if len(r.Attempts) > 0 {
			a := r.Attempts[len(r.Attempts)-1]
			o.m.seconds.WithLabelValues(kind).Observe(a.End.Sub(r.Attempts[0].Start).Seconds())
		} else {
			o.m.seconds.WithLabelValues(kind).Observe(0)
		}
	}
	return o.Source.Report(ctx, r)
}
