package main

// The power poll and its metric: herd-server asks every BMC's power state
// at an interval (status jobs herd-bmc runs) and exports the counts.

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/services/server/internal/store"
)

// pollPower queues a power status job for every machine with a BMC each
// interval (one at a time per machine: a check still unfinished is not
// doubled), due within the interval, and keeps an hour of finished ones.
func pollPower(ctx context.Context, st *store.Store, every time.Duration, log *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := st.QueuePowerPolls(ctx, time.Now().Add(every), time.Now().Add(-time.Hour))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("queueing power checks failed", "error", err)
		case n > 0:
			log.Debug("power checks queued", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

var powerDesc = prometheus.NewDesc("herd_machines_power",
	"Machines with a BMC, by the power state last learned from it (unknown: not learned yet).",
	[]string{"state"}, nil)

// powerCollector counts machines by power state at each scrape, from the
// records (one small query); its labels are the fixed states, never a
// machine, so a fleet of any size is three series.
type powerCollector struct {
	st  *store.Store
	log *slog.Logger
}

func (c powerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- powerDesc }

func (c powerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	all, err := c.st.PowerStates(ctx)
	if err != nil {
		c.log.Warn("counting power states for /metrics failed", "error", err)
		return
	}
	n := map[string]int{"on": 0, "off": 0, "unknown": 0}
	for _, p := range all {
		if p.State == "on" || p.State == "off" {
			n[p.State]++
		} else {
			n["unknown"]++
		}
	}
	for state, v := range n {
		ch <- prometheus.MustNewConstMetric(powerDesc, prometheus.GaugeValue, float64(v), state)
	}
}
