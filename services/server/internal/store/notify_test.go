package store

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
)

// next reads one notification, failing after a while.
func next(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	return ""
}

func quiet(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected notification %q", v)
	case <-time.After(100 * time.Millisecond):
	}
}

// drain discards notifications until none comes for 300ms.
func drain(ch <-chan string) {
	for {
		select {
		case <-ch:
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

// startHub runs a hub until the test ends and returns a hardware and a
// workflow subscription taken before it listened, after the "" that says
// listening began.
func startHub(t *testing.T, url string) (h *Hub, hw, wf <-chan string) {
	t.Helper()
	h = NewHub(url, testLogger(t))
	hw, cancelHW := h.Subscribe(ChannelHardware)
	wf, cancelWF := h.Subscribe(ChannelWorkflow)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancelHW()
		cancelWF()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if v := next(t, hw); v != "" {
		t.Fatalf("first notification %q, want the resync \"\"", v)
	}
	if v := next(t, wf); v != "" {
		t.Fatalf("first notification %q, want the resync \"\"", v)
	}
	return h, hw, wf
}

func TestHubHardwareChanges(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, url := newStore(t)
	_, hw, wf := startHub(t, url)

	id := uuid.NewString()
	mustPush(t, s, newHW(id, iface{"08:00:27:00:00:01", "10.4.0.1"}))
	if v := next(t, hw); v != id {
		t.Errorf("after push: %q, want %s", v, id)
	}
	if err := s.DeleteHardware(ctx, id); err != nil {
		t.Fatal(err)
	}
	if v := next(t, hw); v != id {
		t.Errorf("after delete: %q, want %s", v, id)
	}
	// A refused push commits nothing, so announces nothing.
	other := uuid.NewString()
	mustPush(t, s, newHW(other, iface{"08:00:27:00:00:02", ""}))
	if v := next(t, hw); v != other {
		t.Errorf("after push: %q, want %s", v, other)
	}
	if _, err := s.PushHardware(ctx, newHW(uuid.NewString(), iface{"08:00:27:00:00:02", ""})); err == nil {
		t.Fatal("conflicting push accepted")
	}
	quiet(t, hw)
	quiet(t, wf) // hardware changes are not workflow changes
}

// After the listener's connection is lost and re-established, subscribers
// are told to resync.
func TestHubReconnectResync(t *testing.T) {
	t.Parallel()
	s, url := newStore(t)
	_, hw, wf := startHub(t, url)

	res, err := s.db.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("terminated %d listener connections, want 1", n)
	}
	if v := next(t, hw); v != "" {
		t.Errorf("after reconnect: %q, want \"\"", v)
	}
	if v := next(t, wf); v != "" {
		t.Errorf("after reconnect: %q, want \"\"", v)
	}
	// And it listens again.
	id := uuid.NewString()
	mustPush(t, s, newHW(id, iface{"08:00:27:00:00:01", ""}))
	if v := next(t, hw); v != id {
		t.Errorf("after reconnect and push: %q, want %s", v, id)
	}
}

// A subscriber that falls behind loses the backlog and gets "" instead.
func TestHubOverflow(t *testing.T) {
	h := NewHub("unused", slog.New(slog.DiscardHandler))
	ch, cancel := h.Subscribe(ChannelHardware)
	for range SubscriberBuffer {
		h.deliver(ChannelHardware, "id")
	}
	if len(ch) != SubscriberBuffer {
		t.Fatalf("%d buffered, want %d", len(ch), SubscriberBuffer)
	}
	h.deliver(ChannelHardware, "one too many")
	if len(ch) != 1 || <-ch != "" {
		t.Fatal("overflow did not leave just a resync")
	}
	h.deliver(ChannelHardware, "later")
	if v := <-ch; v != "later" {
		t.Errorf("after the resync: %q", v)
	}
	h.deliver(ChannelWorkflow, "other channel")
	if len(ch) != 0 {
		t.Error("got another channel's notification")
	}
	cancel()
	cancel() // idempotent
	if _, ok := <-ch; ok {
		t.Error("channel open after cancel")
	}
	h.deliver(ChannelHardware, "after cancel") // no panic
}

func TestHubStopClosesSubscriptions(t *testing.T) {
	t.Parallel()
	_, url := newStore(t)
	h := NewHub(url, testLogger(t))
	ch, cancel := h.Subscribe(ChannelWorkflow)
	defer cancel()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	if v := next(t, ch); v != "" {
		t.Fatalf("first notification %q", v)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if _, ok := <-ch; ok {
		t.Error("subscription open after Run returned")
	}
	late, cancelLate := h.Subscribe(ChannelWorkflow)
	defer cancelLate()
	if _, ok := <-late; ok {
		t.Error("subscription after Run returned is open")
	}
}

// TestAnnouncerBatches: workflow changes announced in a burst reach a
// subscriber, each id at least once, although they travel many per NOTIFY.
func TestAnnouncerBatches(t *testing.T) {
	t.Parallel()
	s, url := newStore(t)
	_, _, wf := startHub(t, url)
	want := map[string]bool{}
	// 250 ids of 37 bytes: two payloads, and fewer than SubscriberBuffer.
	for range 250 {
		id := uuid.NewString()
		want[id] = true
		s.announce.workflow(id)
	}
	for len(want) > 0 {
		delete(want, next(t, wf))
	}
}

func TestDeliverSplitsPayload(t *testing.T) {
	h := NewHub("unused", slog.New(slog.DiscardHandler))
	ch, cancel := h.Subscribe(ChannelWorkflow)
	defer cancel()
	h.deliver(ChannelWorkflow, "a,b,c")
	for _, want := range []string{"a", "b", "c"} {
		if got := next(t, ch); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}
