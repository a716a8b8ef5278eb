package bootnotes

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"

	"github.com/herd-metal/herd/proto/workflow"
)

// recorder is a fake herd-server (the forwarder's queueing is pure logic;
// the real RPC is covered by cmd/herd-boots' tests).
type recorder struct {
	mu    sync.Mutex
	got   []string
	block chan struct{}
}

func (r *recorder) RecordBootEvent(ctx context.Context, in *workflow.BootEvent, _ ...grpc.CallOption) (*workflow.BootEventResponse, error) {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, in.GetHardwareId()+": "+in.GetMessage())
	if in.GetHardwareId() == "refused" {
		return nil, errors.New("refused")
	}
	return &workflow.BootEventResponse{WorkflowId: "wf"}, nil
}

func TestForwarder(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := New("test", slog.New(slog.DiscardHandler), reg)
	r := &recorder{block: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, r) }()

	// The server is stuck: Record still never blocks; beyond the queue it drops.
	start := time.Now()
	for range queueSize + 10 {
		f.Record("hw", "ipxe script served")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Record blocked while the server was stuck")
	}
	if d := testutil.ToFloat64(f.dropped); d < 9 {
		t.Fatalf("dropped %v, want at least 9", d)
	}
	close(r.block)
	queued := queueSize + 10 - int(testutil.ToFloat64(f.dropped))
	waitRecorded := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); int(testutil.ToFloat64(f.sent.WithLabelValues("recorded"))) < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("recorded %v notes, want %d", testutil.ToFloat64(f.sent.WithLabelValues("recorded")), n)
			}
		}
	}
	waitRecorded(queued)
	// A note the server refuses is counted and dropped; the next one goes.
	f.Record("refused", "x")
	f.Record("hw", "kernel fetched")
	waitRecorded(queued + 1)
	if got := testutil.ToFloat64(f.sent.WithLabelValues("failed")); got != 1 {
		t.Fatalf("failed notes %v, want 1", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
