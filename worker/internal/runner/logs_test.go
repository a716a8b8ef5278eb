package runner

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
)

func TestSplitLine(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     []string
	}{
		{"short", "hello", 8, []string{"hello"}},
		{"empty", "", 8, []string{""}},
		{"exact", "12345678", 8, []string{"12345678"}},
		{"long", "123456789abcdefghij", 8, []string{"12345678", "9abcdefg", "hij"}},
		{"rune boundary", "aaaaaaé" + "bbbb", 8, []string{"aaaaaaé", "bbbb"}}, // é is 2 bytes: 6+2
		{"rune not cut", "aaaaaaaé", 8, []string{"aaaaaaa", "é"}},
		{"invalid utf-8", "a\xffb", 8, []string{"a\uFFFDb"}},
		{"nul", "a\x00b", 8, []string{"a\uFFFDb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := splitLine(tc.in, tc.max)
			if !slices.Equal(got, tc.want) {
				t.Errorf("splitLine(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			for _, p := range got {
				if len(p) > tc.max || !utf8.ValidString(p) {
					t.Errorf("piece %q: %d bytes, valid UTF-8 %v", p, len(p), utf8.ValidString(p))
				}
			}
		})
	}
	long := strings.Repeat("€", 5000) // 15000 bytes
	parts := splitLine(long, MaxLogLineBytes)
	if strings.Join(parts, "") != long || len(parts) != 4 {
		t.Errorf("a 15000-byte line split into %d parts", len(parts))
	}
}

// sink records the batches a shipper sends; gate, when not nil, holds
// each call until a value arrives (the server is slow or away).
type sink struct {
	mu      sync.Mutex
	batches [][]string
	gate    chan struct{}
	err     error
}

func (s *sink) send(ctx context.Context, lines []*workflow.LogLine) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	var b []string
	for _, l := range lines {
		if l.GetTime() == nil {
			return fmt.Errorf("line %q without time", l.GetText())
		}
		b = append(b, l.GetStream()+":"+l.GetText())
	}
	s.batches = append(s.batches, b)
	return nil
}

func (s *sink) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n []int
	for _, b := range s.batches {
		n = append(n, len(b))
	}
	return n
}

func (s *sink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []string
	for _, b := range s.batches {
		all = append(all, b...)
	}
	return all
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startShipper(s *sink, batch int, every time.Duration, buf int) *logShipper {
	sh := newLogShipper(discard(), s.send, time.Now, batch, every, buf)
	go sh.run(context.Background())
	return sh
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func numbered(n int) []string {
	l := make([]string, n)
	for i := range l {
		l[i] = fmt.Sprintf("stdout:line %d", i)
	}
	return l
}

// TestShipperBatchesByCount: lines go out as soon as a batch is full,
// without waiting for the timer, in order.
func TestShipperBatchesByCount(t *testing.T) {
	s := &sink{}
	sh := startShipper(s, 3, time.Hour, 100)
	for i := range 7 {
		sh.add(Stdout, fmt.Sprintf("line %d", i))
	}
	eventually(t, "two batches sent by count", func() bool { return len(s.all()) >= 6 })
	sent, dropped := sh.finish(context.Background())
	if sent != 7 || dropped != 0 {
		t.Errorf("sent %d, dropped %d", sent, dropped)
	}
	if got := s.all(); !slices.Equal(got, numbered(7)) {
		t.Errorf("lines %q", got)
	}
}

// TestShipperBatchesByTime: a few lines do not wait for a full batch.
func TestShipperBatchesByTime(t *testing.T) {
	s := &sink{}
	sh := startShipper(s, 200, 10*time.Millisecond, 100)
	sh.add(Stdout, "line 0")
	sh.add(Stderr, "oops")
	eventually(t, "the lines sent by the timer", func() bool { return len(s.all()) == 2 })
	if got := s.all(); !slices.Equal(got, []string{"stdout:line 0", "stderr:oops"}) {
		t.Errorf("lines %q", got)
	}
	if sent, dropped := sh.finish(context.Background()); sent != 2 || dropped != 0 {
		t.Errorf("sent %d, dropped %d", sent, dropped)
	}
}

// TestShipperServerLimit: a backlog goes out in calls of at most 500 lines.
func TestShipperServerLimit(t *testing.T) {
	s := &sink{}
	sh := newLogShipper(discard(), s.send, time.Now, 200, time.Hour, 5000)
	for i := range 1201 {
		sh.add(Stdout, fmt.Sprintf("line %d", i))
	}
	go sh.run(context.Background())
	if sent, dropped := sh.finish(context.Background()); sent != 1201 || dropped != 0 {
		t.Errorf("sent %d, dropped %d", sent, dropped)
	}
	for _, n := range s.sizes() {
		if n > MaxLogBatch {
			t.Errorf("a call carried %d lines", n)
		}
	}
	if got := s.all(); !slices.Equal(got, numbered(1201)) {
		t.Errorf("%d lines, out of order or lost", len(got))
	}
}

// TestShipperNeverBlocks: while the server does not answer, the
// container's output is not held up; lines beyond the buffer are dropped
// and counted, and what was kept goes out once the server answers.
func TestShipperNeverBlocks(t *testing.T) {
	s := &sink{gate: make(chan struct{})}
	sh := startShipper(s, 5, time.Millisecond, 50)
	start := time.Now()
	for i := range 10000 {
		sh.add(Stdout, fmt.Sprintf("line %d", i))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("adding 10000 lines took %s with the server away", d)
	}
	close(s.gate) // the server is back
	sent, dropped := sh.finish(context.Background())
	if sent+dropped != 10000 || dropped < 10000-50-MaxLogBatch || sent < 50 {
		t.Errorf("sent %d, dropped %d", sent, dropped)
	}
	got := s.all()
	if len(got) != sent || got[0] != "stdout:line 0" {
		t.Errorf("%d lines arrived, first %q", len(got), got[0])
	}
}

// TestShipperGivesUp: a refusal for good stops the sending; the lines
// count as dropped. A context that ends does too.
func TestShipperGivesUp(t *testing.T) {
	s := &sink{err: status.Error(codes.Unimplemented, "unknown method ReportActionLogs")}
	sh := startShipper(s, 2, time.Hour, 100)
	for i := range 5 {
		sh.add(Stdout, fmt.Sprintf("line %d", i))
	}
	if sent, dropped := sh.finish(context.Background()); sent != 0 || dropped != 5 {
		t.Errorf("refused: sent %d, dropped %d", sent, dropped)
	}

	s = &sink{gate: make(chan struct{})}
	sh = newLogShipper(discard(), s.send, time.Now, 200, time.Hour, 100)
	go sh.run(context.Background())
	sh.add(Stdout, "never sent")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if sent, dropped := sh.finish(ctx); sent != 0 || dropped != 1 {
		t.Errorf("ctx ended: sent %d, dropped %d", sent, dropped)
	}
}

// TestActionOutputReachesServer: the worker sends an action's output
// (on-failure's too), through the server's failures, before its final
// report; a server without ReportActionLogs is asked once only.
func TestActionOutputReachesServer(t *testing.T) {
	long := strings.Repeat("x", MaxLogLineBytes+10)
	a := act("a", "fail")
	a.OnFailure = []string{"cleanup"}
	s := &fakeServer{actions: []*workflow.WorkflowAction{a}, failLogs: 2}
	r := newFakeRuntime(map[string]script{"fail": exit(3, "first", long), "cleanup": exit(0, "cleaned")})
	w := newWorker(t, s, r)
	if _, err := w.RunWorkflow(context.Background(), pending()); err != nil {
		t.Fatal(err)
	}
	want := []string{"a stdout first", "a stdout " + long[:MaxLogLineBytes], "a stdout xxxxxxxxxx", "a stdout cleaned"}
	if got := s.loggedLines(); !slices.Equal(got, want) {
		t.Errorf("server has %d lines %.200q", len(got), got)
	}
	if !slices.Equal(s.logsAtReport, []int{0, 4}) || !slices.Equal(s.trail(), []string{"a:RUNNING", "a:FAILED"}) {
		t.Errorf("lines stored at each report %v (reports %q)", s.logsAtReport, s.trail())
	}

	s = &fakeServer{actions: []*workflow.WorkflowAction{act("a", "ok"), act("b", "ok")}, logsErr: status.Error(codes.Unimplemented, "no")}
	calls := 0
	s.logsErr = status.Error(codes.Unimplemented, "unknown method")
	r = newFakeRuntime(map[string]script{"ok": exit(0, "hi")})
	counting := &countingServer{fakeServer: s, calls: &calls}
	w = newWorker(t, counting, r)
	if _, err := w.RunWorkflow(context.Background(), pending()); err != nil {
		t.Fatal(err)
	}
	if calls != 1 || !slices.Equal(s.trail(), []string{"a:RUNNING", "a:SUCCESS", "b:RUNNING", "b:SUCCESS"}) {
		t.Errorf("ReportLogs called %d times against an old server; reports %q", calls, s.trail())
	}
}

type countingServer struct {
	*fakeServer
	calls *int
}

func (c *countingServer) ReportLogs(ctx context.Context, l *workflow.ActionLogs) error {
	*c.calls++
	return c.fakeServer.ReportLogs(ctx, l)
}

// TestWorkflowEndedWhileRunning: when herd-server ends the workflow (its
// global timeout) while an action runs, the container is stopped and
// removed and nothing more is reported; checks that fail change nothing.
func TestWorkflowEndedWhileRunning(t *testing.T) {
	s := &fakeServer{actions: []*workflow.WorkflowAction{act("a", "block"), act("b", "ok")}}
	r := newFakeRuntime(map[string]script{"block": block, "ok": exit(0)})
	var mu sync.Mutex
	checks := 0
	s.listed = func() []*workflow.WorkflowContext {
		mu.Lock()
		defer mu.Unlock()
		checks++
		if checks < 3 {
			return []*workflow.WorkflowContext{at(0, workflow.State_STATE_RUNNING)}
		}
		c := at(0, workflow.State_STATE_TIMEOUT)
		return []*workflow.WorkflowContext{c}
	}
	w, err := New(Config{WorkerID: me, DataDir: t.TempDir(), RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond,
		StopGrace: time.Second, FinalReportWithin: time.Second, WatchEvery: 5 * time.Millisecond}, s, r, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := pending()
	c.WorkflowId = wfID
	n, err := w.RunWorkflow(context.Background(), c)
	if n != 1 || err != ErrWorkflowEnded {
		t.Fatalf("RunWorkflow ran %d actions: %v", n, err)
	}
	if got := s.trail(); !slices.Equal(got, []string{"a:RUNNING"}) {
		t.Errorf("reports %q", got)
	}
	if len(r.stopped) != 1 || r.leftovers() != 0 {
		t.Errorf("stopped %v, %d left", r.stopped, r.leftovers())
	}
	if got := s.loggedLines(); !slices.Equal(got, []string{"a stdout interrupted"}) {
		t.Errorf("output kept: %q", got)
	}
}

func TestEnded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		list  []*workflow.WorkflowContext
		index int
		over  bool
	}{
		{"running", []*workflow.WorkflowContext{at(1, workflow.State_STATE_RUNNING)}, 1, false},
		{"timed out", []*workflow.WorkflowContext{at(1, workflow.State_STATE_TIMEOUT)}, 1, true},
		{"failed", []*workflow.WorkflowContext{at(1, workflow.State_STATE_FAILED)}, 1, true},
		{"another action", []*workflow.WorkflowContext{at(2, workflow.State_STATE_RUNNING)}, 1, true},
		{"deleted", nil, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if why, over := ended(tc.list, wfID, tc.index); over != tc.over || (over && why == "") {
				t.Errorf("ended = %q, %v", why, over)
			}
		})
	}
}
