package inventory

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/proto/hardware"
)

// fakeStream is one Watch stream the test feeds: events from evs, then
// the error on end once it is closed over.
type fakeStream struct {
	grpc.ClientStream // nil: only Recv is called
	evs               chan *hardware.WatchEvent
	end               chan error
	ctx               context.Context // the Watch call's, set when handed out
}

func newStream(evs ...*hardware.WatchEvent) *fakeStream {
	s := &fakeStream{evs: make(chan *hardware.WatchEvent, len(evs)), end: make(chan error, 1)}
	for _, ev := range evs {
		s.evs <- ev
	}
	return s
}

func (s *fakeStream) Recv() (*hardware.WatchEvent, error) {
	select {
	case ev := <-s.evs:
		return ev, nil
	case err := <-s.end:
		return nil, err
	case <-s.ctx.Done(): // as a real stream ends with its call's context
		return nil, s.ctx.Err()
	}
}

// fakeWatcher hands out the streams the test offers; with none on offer
// a Watch fails as a call to an unreachable server does.
type fakeWatcher struct{ streams chan *fakeStream }

var errRefused = errors.New("test: connection refused")

func (w *fakeWatcher) Watch(ctx context.Context, _ *hardware.WatchRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[hardware.WatchEvent], error) {
	select {
	case s := <-w.streams:
		s.ctx = ctx
		return s, nil
	default:
		return nil, errRefused
	}
}

// Health follows the watch: not synced before the first snapshot (even
// while attempts fail), nil while current, degraded naming the cause
// while the watch is down after a sync, nil again after a reconnection.
func TestHealth(t *testing.T) {
	inv := New(slog.New(slog.DiscardHandler), nil)
	w := &fakeWatcher{streams: make(chan *fakeStream, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx, w) }()

	// Never synced, attempts failing: nothing to answer from.
	time.Sleep(150 * time.Millisecond)
	if err := inv.Health(ctx); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("before the first snapshot: %v, want ErrNotSynced", err)
	}
	var d *observe.DegradedError
	if err := inv.Health(ctx); errors.As(err, &d) {
		t.Fatalf("before the first snapshot: %v is degraded, want not synced (503)", err)
	}

	added := &hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_ADDED, Hardware: record(id1, "08:00:27:00:00:01", "10.1.0.11")}
	synced := &hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_SYNCED}
	first := newStream(added, synced)
	w.streams <- first
	eventually(t, "healthy after the snapshot", func() bool { return inv.Health(ctx) == nil })

	// The stream breaks and the server stays away: degraded, still
	// answering from memory.
	first.end <- errors.New("test: connection reset")
	eventually(t, "degraded after the break", func() bool { return inv.Health(ctx) != nil })
	err := inv.Health(ctx)
	if !errors.As(err, &d) {
		t.Fatalf("watch down after a sync: %v (%T), want an observe.DegradedError", err, err)
	}
	if errors.Is(err, ErrNotSynced) {
		t.Errorf("watch down after a sync: %v is also ErrNotSynced", err)
	}
	msg := err.Error()
	for _, want := range []string{"herd-server unreachable since", "1 machines"} {
		if !strings.Contains(msg, want) {
			t.Errorf("degraded error %q lacks %q", msg, want)
		}
	}
	// The cause is the latest failure: the break, then the refused calls.
	eventually(t, "cause named", func() bool { err := inv.Health(ctx); return err != nil && errors.Is(err, errRefused) })
	if _, ok := inv.ByID(id1); !ok {
		t.Error("record lost while the watch is down")
	}
	// The outage's start stays put across the failed attempts.
	since := func() string {
		_, after, _ := strings.Cut(inv.Health(ctx).Error(), "since ")
		s, _, _ := strings.Cut(after, " ")
		return s
	}
	s1 := since()
	time.Sleep(600 * time.Millisecond)
	if s2 := since(); s1 != s2 {
		t.Errorf("outage start moved from %s to %s while still down", s1, s2)
	}

	// The server is back: a new stream past its snapshot is healthy again.
	w.streams <- newStream(added, synced)
	eventually(t, "healthy after the reconnection", func() bool { return inv.Health(ctx) == nil })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
