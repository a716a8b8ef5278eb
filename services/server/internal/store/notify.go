package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
)

// The notification channels. The payload is the id of the changed record.
const (
	ChannelHardware = "herd_hardware"
	ChannelWorkflow = "herd_workflow"
	// ChannelBMCJob wakes herd-bmc's waiting NextJob calls and WatchJob
	// streams; "" when several jobs were queued at once.
	ChannelBMCJob = "herd_bmc_job"
)

// hubChannels are the channels a Hub listens on.
var hubChannels = [...]string{ChannelHardware, ChannelWorkflow, ChannelBMCJob}

// notify announces a change to id on channel when tx commits (PostgreSQL
// delivers notifications only for committed transactions). Hardware changes
// use it: they are rare and the inventories must never miss one.
//
// Workflow changes do not: PostgreSQL serializes the commits of all
// transactions that NOTIFY (a global lock held through the WAL flush), which
// capped action reports at a few hundred per second. They go through the
// announcer instead, after commit.
func notify(ctx context.Context, tx *sql.Tx, channel, id string) error {
	if _, err := tx.ExecContext(ctx, "SELECT pg_notify($1, $2)", channel, id); err != nil {
		return fmt.Errorf("notify %s %s: %w", channel, id, err)
	}
	return nil
}

// SubscriberBuffer is how many notifications a subscriber may fall behind
// before it is told to resync.
const SubscriberBuffer = 256

// Hub listens to the store's notifications on one dedicated connection
// and hands them to subscribers. A subscriber receives the id of each
// changed record, or "" when it may have missed changes and must reread
// everything it cares about: after the listener (re)connects, and when
// the subscriber fell SubscriberBuffer notifications behind.
type Hub struct {
	url string
	log *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*subscriber]struct{} // channel -> subscribers
	stopped bool                                // Run has returned
}

type subscriber struct {
	ch     chan string
	closed bool
}

// NewHub returns a Hub for the database at url; it delivers nothing until
// Run runs.
func NewHub(url string, log *slog.Logger) *Hub {
	return &Hub{url: url, log: log, subs: map[string]map[*subscriber]struct{}{}}
}

// Subscribe returns the notifications of channel (ChannelHardware or
// ChannelWorkflow) and a function that ends the subscription and closes
// the channel. The channel is also closed when Run returns. A subscriber
// that subscribes before Run is listening receives "" once it is.
func (h *Hub) Subscribe(channel string) (<-chan string, func()) {
	s := &subscriber{ch: make(chan string, SubscriberBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		close(s.ch)
		return s.ch, func() {}
	}
	if h.subs[channel] == nil {
		h.subs[channel] = map[*subscriber]struct{}{}
	}
	h.subs[channel][s] = struct{}{}
	cancel := func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[channel], s)
		h.closeLocked(s)
	}
	return s.ch, cancel
}

// Run listens until ctx is done (then it returns nil) or LISTEN fails; call
// it once. The connection is re-established after a loss, with growing
// pauses.
func (h *Hub) Run(ctx context.Context) error {
	defer h.stop()
	l := pq.NewListener(h.url, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if ctx.Err() != nil {
			return // shutting down: Close disconnects
		}
		switch ev {
		case pq.ListenerEventDisconnected:
			h.log.Warn("notification listener disconnected", "err", err)
		case pq.ListenerEventConnectionAttemptFailed:
			h.log.Warn("notification listener cannot connect", "err", err)
		case pq.ListenerEventReconnected:
			h.log.Info("notification listener reconnected")
		}
	})
	defer l.Close()

	// Listen blocks until the server acknowledges, however long it takes to
	// connect: do it aside so ctx can still end Run.
	listened := make(chan error, 1)
	go func() {
		for _, ch := range hubChannels {
			if err := l.Listen(ch); err != nil {
				listened <- fmt.Errorf("listen %s: %w", ch, err)
				return
			}
		}
		listened <- nil
	}()

	ping := time.NewTicker(30 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-listened:
			if err != nil {
				return err
			}
			h.log.Debug("listening for notifications", "channels", hubChannels)
			// Subscribers from before now may have missed changes.
			h.broadcast("")
		case n := <-l.Notify:
			if n == nil {
				// Reconnected: notifications sent meanwhile are lost.
				h.broadcast("")
				continue
			}
			h.deliver(n.Channel, n.Extra)
		case <-ping.C:
			// A dead connection is otherwise noticed only by the next
			// query; Ping makes the listener reconnect.
			go func() { _ = l.Ping() }()
		}
	}
}

// deliver hands each id of payload (ids joined by commas, see announcer)
// to the subscribers of channel.
func (h *Hub) deliver(channel, payload string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id := range strings.SplitSeq(payload, ",") {
		for s := range h.subs[channel] {
			h.sendLocked(s, id)
		}
	}
}

// announcer sends workflow change notifications after their transactions
// committed, many ids per NOTIFY: while one NOTIFY commits, the ids of the
// next changes gather, so the notifying commits stay few whatever the
// report rate. A change whose announcement is lost (crash between commit
// and NOTIFY) only delays watchers until the next change or resync.
type announcer struct {
	db      *sql.DB
	log     *slog.Logger
	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// maxPayload keeps a NOTIFY under PostgreSQL's 8000-byte payload limit.
const maxPayload = 7900

func newAnnouncer(db *sql.DB, log *slog.Logger) *announcer {
	a := &announcer{db: db, log: log, pending: map[string]struct{}{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

// workflow queues a change of workflow id; it never blocks.
func (a *announcer) workflow(id string) {
	a.mu.Lock()
	a.pending[id] = struct{}{}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *announcer) run() {
	defer close(a.done)
	for {
		select {
		case <-a.wake:
			a.flush()
		case <-a.stop:
			a.flush()
			return
		}
	}
}

func (a *announcer) flush() {
	a.mu.Lock()
	ids := make([]string, 0, len(a.pending))
	for id := range a.pending {
		ids = append(ids, id)
	}
	clear(a.pending)
	a.mu.Unlock()
	for len(ids) > 0 {
		n, size := 0, 0
		for n < len(ids) && size+len(ids[n])+1 <= maxPayload {
			size += len(ids[n]) + 1
			n++
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := a.db.ExecContext(ctx, "SELECT pg_notify($1, $2)", ChannelWorkflow, strings.Join(ids[:n], ","))
		cancel()
		if err != nil {
			a.log.Warn("workflow change notification lost; watchers catch up at the next change", "err", err)
		}
		ids = ids[n:]
	}
}

// close sends what is pending and stops.
func (a *announcer) close() {
	close(a.stop)
	<-a.done
}

// broadcast hands payload to every subscriber.
func (h *Hub) broadcast(payload string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for s := range subs {
			h.sendLocked(s, payload)
		}
	}
}

// sendLocked never blocks: a subscriber whose buffer is full loses what it
// has not read yet and gets "" (resync) in its place. The hub is the only
// sender and sends under h.mu, so after the drain there is room.
func (h *Hub) sendLocked(s *subscriber, payload string) {
	if s.closed {
		return
	}
	select {
	case s.ch <- payload:
		return
	default:
	}
	h.log.Warn("notification subscriber fell behind; it will resync", "buffer", cap(s.ch))
	for drained := false; !drained; {
		select {
		case <-s.ch:
		default:
			drained = true
		}
	}
	s.ch <- ""
}

func (h *Hub) closeLocked(s *subscriber) {
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}

// stop closes every subscription; later Subscribe calls get a closed
// channel.
func (h *Hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for _, subs := range h.subs {
		for s := range subs {
			h.closeLocked(s)
		}
	}
	h.subs = map[string]map[*subscriber]struct{}{}
}
