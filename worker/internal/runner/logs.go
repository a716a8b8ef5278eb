package runner

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/workflow"
)

// herd-server's limits on ReportActionLogs: lines per call and bytes per
// line (a longer line is refused, so the worker splits it).
const (
	MaxLogBatch     = 500
	MaxLogLineBytes = 4 << 10
)

// Output streams of a container.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// logShipper sends one action's output lines to herd-server while the
// action runs: batches of up to MaxLogBatch lines, sent when batchLines are
// waiting or every flushEvery, one call at a time and in order. add never
// blocks the container's output: lines wait in a bounded buffer, and when
// that is full (the server has been away too long) new lines are dropped
// and counted.
type logShipper struct {
	log        *slog.Logger
	send       func(ctx context.Context, lines []*workflow.LogLine) error
	now        func() time.Time
	batchLines int
	flushEvery time.Duration
	maxBuf     int

	mu      sync.Mutex
	buf     []*workflow.LogLine
	dropped int  // lines lost: buffer full, or a batch the server refused
	off     bool // the server refused for good: count, send no more
	sent    int

	wake   chan struct{} // a batch is ready
	done   chan struct{} // closed by finish
	exited chan struct{} // closed when run returns
}

func newLogShipper(log *slog.Logger, send func(context.Context, []*workflow.LogLine) error, now func() time.Time, batchLines int, every time.Duration, maxBuf int) *logShipper {
	return &logShipper{
		log: log, send: send, now: now,
		batchLines: min(max(batchLines, 1), MaxLogBatch), flushEvery: every, maxBuf: max(maxBuf, 1),
		wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{}),
	}
}

// add queues one line the container wrote; it never blocks on the network.
func (s *logShipper) add(stream, text string) {
	if s == nil {
		return
	}
	at := timestamppb.New(s.now())
	parts := splitLine(text, MaxLogLineBytes)
	s.mu.Lock()
	for _, p := range parts {
		if s.off || len(s.buf) >= s.maxBuf {
			s.dropped++
			continue
		}
		s.buf = append(s.buf, &workflow.LogLine{Time: at, Stream: stream, Text: p})
	}
	ready := len(s.buf) >= s.batchLines
	s.mu.Unlock()
	if ready {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// run sends batches until finish is called; ctx bounds the sending.
func (s *logShipper) run(ctx context.Context) {
	defer close(s.exited)
	t := time.NewTicker(s.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
		s.ship(ctx)
	}
}

// ship sends what is buffered, a batch at a time.
func (s *logShipper) ship(ctx context.Context) {
	for {
		lines := s.take()
		if len(lines) == 0 {
			return
		}
		if err := s.send(ctx, lines); err != nil {
			s.mu.Lock()
			s.dropped += len(lines)
			final := !Retryable(err)
			if final {
				// Refused for good (a server without ReportActionLogs, an
				// action that is not ours): the rest would be refused too.
				s.off = true
				s.dropped += len(s.buf)
				s.buf = nil
			}
			s.mu.Unlock()
			s.log.WarnContext(ctx, "sending the action's output to herd-server failed; lines dropped", "lines", len(lines), "error", err)
			if final || ctx.Err() != nil {
				return
			}
		} else {
			s.mu.Lock()
			s.sent += len(lines)
			s.mu.Unlock()
		}
	}
}

func (s *logShipper) take() []*workflow.LogLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.buf), MaxLogBatch)
	if n == 0 {
		return nil
	}
	lines := s.buf[:n:n]
	s.buf = append([]*workflow.LogLine(nil), s.buf[n:]...)
	return lines
}

// finish stops run and sends what is left with ctx (before the action's
// final report). It returns how many lines reached the server and how many
// were dropped.
func (s *logShipper) finish(ctx context.Context) (sent, dropped int) {
	if s == nil {
		return 0, 0
	}
	close(s.done)
	<-s.exited
	s.ship(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) > 0 { // ctx ended before everything was sent
		s.dropped += len(s.buf)
		s.buf = nil
	}
	return s.sent, s.dropped
}

// splitLine makes text valid for herd-server: valid UTF-8 without NUL
// (PostgreSQL text cannot hold it), in pieces of at most max bytes cut at
// rune boundaries.
func splitLine(text string, max int) []string {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	if strings.IndexByte(text, 0) >= 0 {
		text = strings.ReplaceAll(text, "\x00", "\uFFFD")
	}
	if len(text) <= max {
		return []string{text}
	}
	var parts []string
	for len(text) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		parts = append(parts, text[:cut])
		text = text[cut:]
	}
	if text != "" {
		parts = append(parts, text)
	}
	return parts
}
