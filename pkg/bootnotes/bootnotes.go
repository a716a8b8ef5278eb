// Package bootnotes forwards a machine's progress as its own services see
// it (boots: "dhcp offer ...", "ipxe script served", "kernel fetched";
// metadata: "metadata read ...") to herd-server, which notes it on the
// machine's workflow (RecordBootEvent). Recording only queues a note: no
// request of a booting machine waits on the server.
package bootnotes

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/herd-metal/herd/proto/workflow"
)

// Recorder is what herd-server offers for boot notes.
type Recorder interface {
	RecordBootEvent(ctx context.Context, in *workflow.BootEvent, opts ...grpc.CallOption) (*workflow.BootEventResponse, error)
}

type note struct{ hwID, message string }

// Forwarder queues notes and sends them one by one.
type Forwarder struct {
	queue   chan note
	log     *slog.Logger
	dropped prometheus.Counter
	sent    *prometheus.CounterVec
}

// queueSize bounds the notes waiting for the server.
const queueSize = 1024

// New returns a Forwarder; reg receives its metrics, named for the service
// ("boots": herd_boots_event_notes_total, ...).
func New(service string, log *slog.Logger, reg prometheus.Registerer) *Forwarder {
	f := &Forwarder{queue: make(chan note, queueSize), log: log,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_" + service + "_event_notes_dropped_total",
			Help: "Boot notes dropped because herd-server was too slow or away."}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_" + service + "_event_notes_total",
			Help: "Boot notes sent to herd-server, by outcome (recorded, no_workflow, failed)."}, []string{"outcome"}),
	}
	reg.MustRegister(f.dropped, f.sent)
	return f
}

// Record queues a note for the machine hwID; it never blocks.
func (f *Forwarder) Record(hwID, message string) {
	select {
	case f.queue <- note{hwID, message}:
	default:
		f.dropped.Inc()
	}
}

// Run sends queued notes until ctx ends. A note the server refuses or
// cannot take now is logged and dropped: boot notes are informative.
func (f *Forwarder) Run(ctx context.Context, r Recorder) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-f.queue:
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := r.RecordBootEvent(cctx, &workflow.BootEvent{HardwareId: n.hwID, Message: n.message})
			cancel()
			switch {
			case err != nil:
				f.sent.WithLabelValues("failed").Inc()
				f.log.Warn("boot note not recorded", "hardware_id", n.hwID, "message", n.message, "err", err)
			case res.GetWorkflowId() == "":
				f.sent.WithLabelValues("no_workflow").Inc()
			default:
				f.sent.WithLabelValues("recorded").Inc()
			}
		}
	}
}
