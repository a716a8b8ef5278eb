package runner

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
)

const (
	wfID = "3f2a9c1e-0000-4000-8000-000000000001"
	me   = "hw-me"
)

func act(name string, cmd ...string) *workflow.WorkflowAction {
	return &workflow.WorkflowAction{TaskName: "provision", Name: name, Image: "img/" + name, Command: cmd, WorkerId: me}
}

func pending() *workflow.WorkflowContext {
	return &workflow.WorkflowContext{WorkflowId: wfID, TotalNumberOfActions: 3, CurrentActionState: workflow.State_STATE_PENDING}
}

func at(i int64, st workflow.State) *workflow.WorkflowContext {
	c := pending()
	c.CurrentActionIndex, c.CurrentActionState, c.CurrentAction, c.CurrentWorker = i, st, "a", me
	return c
}

func newWorker(t *testing.T, s Server, r Runtime) *Worker {
	t.Helper()
	w, err := New(Config{WorkerID: me, DataDir: t.TempDir(), RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond,
		StopGrace: time.Second, FinalReportWithin: time.Second, Privileged: true}, s, r, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     *workflow.WorkflowContext
		first int
		ok    bool
	}{
		{"nothing reported", pending(), 0, true},
		{"first done", at(0, workflow.State_STATE_SUCCESS), 1, true},
		{"interrupted while running", at(1, workflow.State_STATE_RUNNING), 1, true},
		{"last done", at(2, workflow.State_STATE_SUCCESS), 0, false},
		{"failed", at(1, workflow.State_STATE_FAILED), 0, false},
		{"timed out", at(0, workflow.State_STATE_TIMEOUT), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, ok := Start(tc.c)
			if first != tc.first || ok != tc.ok {
				t.Errorf("Start = %d, %v; want %d, %v", first, ok, tc.first, tc.ok)
			}
		})
	}
}

func TestRunWorkflow(t *testing.T) {
	ok := exit(0, "fine")
	for _, tc := range []struct {
		name     string
		ctx      *workflow.WorkflowContext
		actions  []*workflow.WorkflowAction
		scripts  map[string]script
		setup    func(*fakeServer, *fakeRuntime)
		trail    []string // accepted reports
		commands []string // containers created
		message  []string // in the last report's message
		wantErr  bool
	}{
		{
			name:     "three actions from the start",
			ctx:      pending(),
			actions:  []*workflow.WorkflowAction{act("a", "ok"), act("b", "ok"), act("c", "ok")},
			scripts:  map[string]script{"ok": ok},
			trail:    []string{"a:RUNNING", "a:SUCCESS", "b:RUNNING", "b:SUCCESS", "c:RUNNING", "c:SUCCESS"},
			commands: []string{"ok", "ok", "ok"},
			message:  []string{"exit code 0", "fine"},
		},
		{
			name:     "resume after a finished action never re-runs it",
			ctx:      at(0, workflow.State_STATE_SUCCESS),
			actions:  []*workflow.WorkflowAction{act("a", "never"), act("b", "ok"), act("c", "ok")},
			scripts:  map[string]script{"ok": ok},
			trail:    []string{"b:RUNNING", "b:SUCCESS", "c:RUNNING", "c:SUCCESS"},
			commands: []string{"ok", "ok"},
		},
		{
			name:     "an action interrupted by a reboot runs again",
			ctx:      at(1, workflow.State_STATE_RUNNING),
			actions:  []*workflow.WorkflowAction{act("a", "never"), act("b", "ok"), act("c", "ok")},
			scripts:  map[string]script{"ok": ok},
			trail:    []string{"b:RUNNING", "b:SUCCESS", "c:RUNNING", "c:SUCCESS"},
			commands: []string{"ok", "ok"},
		},
		{
			name: "failure runs on-failure in the same image and stops",
			ctx:  pending(),
			actions: []*workflow.WorkflowAction{act("a", "ok"), func() *workflow.WorkflowAction {
				a := act("b", "fail")
				a.OnFailure = []string{"cleanup", "--all"}
				return a
			}(), act("c", "ok")},
			scripts:  map[string]script{"ok": ok, "fail": exit(3, "disk /dev/sdz not found"), "cleanup": exit(0)},
			trail:    []string{"a:RUNNING", "a:SUCCESS", "b:RUNNING", "b:FAILED"},
			commands: []string{"ok", "fail", "cleanup --all"},
			message:  []string{"exit code 3", "disk /dev/sdz not found", "on-failure command exited with 0"},
		},
		{
			name: "timeout stops the container and runs on-timeout",
			ctx:  pending(),
			actions: []*workflow.WorkflowAction{func() *workflow.WorkflowAction {
				a := act("a", "block")
				a.Timeout = 1
				a.OnTimeout = []string{"ok"}
				return a
			}(), act("b", "ok")},
			scripts:  map[string]script{"ok": ok, "block": block},
			trail:    []string{"a:RUNNING", "a:TIMEOUT"},
			commands: []string{"block", "ok"},
			message:  []string{"timed out after 1s", "interrupted", "on-timeout command exited with 0"},
		},
		{
			name:    "a missing image fails the action with the pull error",
			ctx:     pending(),
			actions: []*workflow.WorkflowAction{act("a", "ok"), act("b", "ok")},
			scripts: map[string]script{"ok": ok},
			setup: func(_ *fakeServer, r *fakeRuntime) {
				r.pullErr["img/a"] = errors.New("manifest for img/a:latest not found")
			},
			trail:   []string{"a:RUNNING", "a:FAILED"},
			message: []string{"pull image img/a: manifest for img/a:latest not found"},
		},
		{
			name:     "a container that cannot start fails the action",
			ctx:      pending(),
			actions:  []*workflow.WorkflowAction{act("a", "nosuchbinary")},
			trail:    []string{"a:RUNNING", "a:FAILED"},
			commands: []string{"nosuchbinary"},
			message:  []string{"start container: exec: \"nosuchbinary\""},
		},
		{
			name:    "a container that cannot be created fails the action",
			ctx:     pending(),
			actions: []*workflow.WorkflowAction{act("a", "ok")},
			setup:   func(_ *fakeServer, r *fakeRuntime) { r.createErr = errors.New("invalid volume spec") },
			trail:   []string{"a:RUNNING", "a:FAILED"},
			message: []string{"create container: invalid volume spec"},
		},
		{
			name:     "a dead engine fails the action",
			ctx:      pending(),
			actions:  []*workflow.WorkflowAction{act("a", "ok")},
			scripts:  map[string]script{"ok": ok},
			setup:    func(_ *fakeServer, r *fakeRuntime) { r.waitErr = errors.New("Cannot connect to the Docker daemon") },
			trail:    []string{"a:RUNNING", "a:FAILED"},
			commands: []string{"ok"},
			message:  []string{"wait for container: Cannot connect to the Docker daemon"},
		},
		{
			name:     "reports are sent again while the server is away",
			ctx:      pending(),
			actions:  []*workflow.WorkflowAction{act("a", "ok"), act("b", "ok")},
			scripts:  map[string]script{"ok": ok},
			setup:    func(s *fakeServer, _ *fakeRuntime) { s.failReports = 4 },
			trail:    []string{"a:RUNNING", "a:SUCCESS", "b:RUNNING", "b:SUCCESS"},
			commands: []string{"ok", "ok"},
		},
		{
			name:     "a refused report stops the workflow",
			ctx:      pending(),
			actions:  []*workflow.WorkflowAction{act("a", "ok"), act("b", "ok")},
			scripts:  map[string]script{"ok": ok},
			setup:    func(s *fakeServer, _ *fakeRuntime) { s.refuse = workflow.State_STATE_SUCCESS },
			trail:    []string{"a:RUNNING"},
			commands: []string{"ok"},
			wantErr:  true,
		},
		{
			name: "the next action of another worker ends this worker's turn",
			ctx:  pending(),
			actions: []*workflow.WorkflowAction{act("a", "ok"), func() *workflow.WorkflowAction {
				a := act("b", "ok")
				a.WorkerId = "hw-other"
				return a
			}()},
			scripts:  map[string]script{"ok": ok},
			trail:    []string{"a:RUNNING", "a:SUCCESS"},
			commands: []string{"ok"},
		},
		{
			name:     "invalid workflow data fails the action",
			ctx:      pending(),
			actions:  []*workflow.WorkflowAction{act("a", "write"), act("b", "ok")},
			scripts:  map[string]script{"ok": ok, "write": writeData("{not json")},
			trail:    []string{"a:RUNNING", "a:FAILED"},
			commands: []string{"write"},
			message:  []string{"not valid JSON"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &fakeServer{actions: tc.actions}
			r := newFakeRuntime(tc.scripts)
			if tc.setup != nil {
				tc.setup(s, r)
			}
			w := newWorker(t, s, r)
			_, err := w.RunWorkflow(context.Background(), tc.ctx)
			if (err != nil) != tc.wantErr {
				t.Fatalf("RunWorkflow error = %v, want error: %v", err, tc.wantErr)
			}
			if got := s.trail(); !slices.Equal(got, tc.trail) {
				t.Errorf("reports = %q\nwant      %q", got, tc.trail)
			}
			if got := r.commands(); !slices.Equal(got, tc.commands) {
				t.Errorf("containers = %q, want %q", got, tc.commands)
			}
			if r.leftovers() != 0 {
				t.Errorf("%d containers left behind", r.leftovers())
			}
			last := s.last()
			for _, m := range tc.message {
				if !strings.Contains(last.GetMessage(), m) {
					t.Errorf("last report's message %q does not say %q", last.GetMessage(), m)
				}
			}
			for _, rep := range s.reports {
				if rep.GetWorkerId() != me || rep.GetWorkflowId() != wfID {
					t.Errorf("report %v names the wrong worker or workflow", rep)
				}
			}
		})
	}
}

func TestContainerSpec(t *testing.T) {
	a := act("a", "ok", "--flag")
	a.Environment = []string{"A=1", "B=2"}
	a.Volumes = []string{"/dev:/dev", "/lib/firmware:/lib/firmware:ro"}
	a.Pid = "host"
	s := &fakeServer{actions: []*workflow.WorkflowAction{a}}
	r := newFakeRuntime(map[string]script{"ok": exit(0)})
	w := newWorker(t, s, r)
	if _, err := w.RunWorkflow(context.Background(), pending()); err != nil {
		t.Fatal(err)
	}
	c := r.created[0]
	want := Container{
		Name: "herd-3f2a9c1e-provision-a", Image: "img/a", Command: []string{"ok", "--flag"},
		Env: a.Environment, PidMode: "host", Privileged: true,
		Binds:  []string{"/dev:/dev", "/lib/firmware:/lib/firmware:ro", w.cfg.DataDir + "/" + wfID + ":/workflow"},
		Labels: map[string]string{LabelWorkflow: wfID, LabelAction: "provision/a"},
	}
	got, _ := json.Marshal(c)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("container\n%s\nwant\n%s", got, exp)
	}
}

func TestWorkflowDataRoundTrip(t *testing.T) {
	s := &fakeServer{data: []byte(`{"from":"server"}`), actions: []*workflow.WorkflowAction{act("a", "write"), act("b", "check")}}
	var seen string
	r := newFakeRuntime(map[string]script{
		"write": func(ctx context.Context, c Container, dir string) ([]string, int64) {
			b, _ := readFile(dir + "/" + DataFile)
			if b != `{"from":"server"}` {
				return []string{"got " + b}, 1
			}
			return writeData(`{"disk":"/dev/sda"}`)(ctx, c, dir)
		},
		"check": func(_ context.Context, _ Container, dir string) ([]string, int64) {
			seen, _ = readFile(dir + "/" + DataFile)
			return nil, 0
		},
	})
	w := newWorker(t, s, r)
	if _, err := w.RunWorkflow(context.Background(), pending()); err != nil {
		t.Fatal(err)
	}
	if got := s.trail(); !slices.Equal(got, []string{"a:RUNNING", "a:SUCCESS", "b:RUNNING", "b:SUCCESS"}) {
		t.Fatalf("reports %q: %s", got, s.last().GetMessage())
	}
	if s.updates != 1 || string(s.data) != `{"disk":"/dev/sda"}` || seen != `{"disk":"/dev/sda"}` {
		t.Errorf("updates %d, server data %s, second action saw %s", s.updates, s.data, seen)
	}
	var m Metadata
	if err := json.Unmarshal(s.meta, &m); err != nil || m.WorkerID != me || m.Action != "a" || m.Task != "provision" || len(m.SHA256) != 64 {
		t.Errorf("metadata %s (%v)", s.meta, err)
	}
}

// TestEmptyWorkflowData: the server sends empty data for a workflow that
// has none (as Tinkerbell v0.6); the actions find {} in /workflow/data,
// and the first version sent is the first change an action makes.
func TestEmptyWorkflowData(t *testing.T) {
	s := &fakeServer{actions: []*workflow.WorkflowAction{act("a", "check"), act("b", "write"), act("c", "check")}}
	var seen []string
	r := newFakeRuntime(map[string]script{
		"check": func(_ context.Context, _ Container, dir string) ([]string, int64) {
			b, _ := readFile(dir + "/" + DataFile)
			seen = append(seen, b)
			return nil, 0
		},
		"write": writeData(`{"disk":"/dev/sda"}`),
	})
	w := newWorker(t, s, r)
	if _, err := w.RunWorkflow(context.Background(), pending()); err != nil {
		t.Fatal(err)
	}
	if got := s.trail(); !slices.Equal(got, []string{"a:RUNNING", "a:SUCCESS", "b:RUNNING", "b:SUCCESS", "c:RUNNING", "c:SUCCESS"}) {
		t.Fatalf("reports %q: %s", got, s.last().GetMessage())
	}
	if !slices.Equal(seen, []string{`{}`, `{"disk":"/dev/sda"}`}) {
		t.Errorf("the actions saw %q, want {} then the written data", seen)
	}
	if s.updates != 1 || string(s.data) != `{"disk":"/dev/sda"}` {
		t.Errorf("updates %d, server data %s: want one update, b's", s.updates, s.data)
	}
}

func TestStopWhileRunning(t *testing.T) {
	s := &fakeServer{actions: []*workflow.WorkflowAction{act("a", "block"), act("b", "ok")}}
	started := make(chan struct{})
	r := newFakeRuntime(map[string]script{"block": func(ctx context.Context, c Container, d string) ([]string, int64) {
		close(started)
		return block(ctx, c, d)
	}})
	w := newWorker(t, s, r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := w.RunWorkflow(ctx, pending()); done <- err }()
	<-started
	cancel() // SIGTERM
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("RunWorkflow = %v, want context.Canceled", err)
	}
	if got := s.trail(); !slices.Equal(got, []string{"a:RUNNING", "a:FAILED"}) {
		t.Errorf("reports %q", got)
	}
	if m := s.last().GetMessage(); !strings.Contains(m, "worker was stopped") {
		t.Errorf("message %q", m)
	}
	if len(r.stopped) != 1 || r.leftovers() != 0 {
		t.Errorf("stopped %v, %d left behind", r.stopped, r.leftovers())
	}
}

func TestRunRetriesWhileServerAway(t *testing.T) {
	calls := 0
	s := &flakyContexts{fakeServer: &fakeServer{actions: []*workflow.WorkflowAction{act("a", "ok")}}, fail: 3, calls: &calls}
	s.contexts = []*workflow.WorkflowContext{pending()}
	r := newFakeRuntime(map[string]script{"ok": exit(0)})
	w := newWorker(t, s, r)
	w.cfg.Poll = time.Millisecond
	runUntilReported(t, w, s.fakeServer)
	if got := s.trail(); !slices.Equal(got[:2], []string{"a:RUNNING", "a:SUCCESS"}) || calls < 4 {
		t.Errorf("reports %q after %d asks", got, calls)
	}
}

// TestCallsHungOnADeadLinkAreSentAgain: each first call of a kind gets no
// answer (sent into a dead link); the worker gives it up at CallTimeout and
// sends it again with backoff, so the workflow goes on.
func TestCallsHungOnADeadLinkAreSentAgain(t *testing.T) {
	s := &deadLink{fakeServer: &fakeServer{actions: []*workflow.WorkflowAction{act("a", "ok")}}, hung: map[string]int{}}
	s.contexts = []*workflow.WorkflowContext{pending()}
	r := newFakeRuntime(map[string]script{"ok": exit(0)})
	w := newWorker(t, s, r)
	w.cfg.Poll, w.cfg.CallTimeout = time.Millisecond, 20*time.Millisecond
	runUntilReported(t, w, s.fakeServer)
	if got := s.trail(); len(got) < 2 || !slices.Equal(got[:2], []string{"a:RUNNING", "a:SUCCESS"}) {
		t.Errorf("reports %q", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, call := range []string{"contexts", "actions", "data", "report"} {
		if s.hung[call] != 1 {
			t.Errorf("%s: %d calls hung, want 1 (then answered)", call, s.hung[call])
		}
	}
}

// deadLink answers no first call of each kind: it waits for the caller's
// deadline, as a call sent into a link that went down does.
type deadLink struct {
	*fakeServer
	hung map[string]int
}

func (d *deadLink) hang(ctx context.Context, call string) bool {
	d.mu.Lock()
	first := d.hung[call] == 0
	if first {
		d.hung[call]++
	}
	d.mu.Unlock()
	if first {
		<-ctx.Done()
	}
	return first
}

func (d *deadLink) Contexts(ctx context.Context, id string) ([]*workflow.WorkflowContext, error) {
	if d.hang(ctx, "contexts") {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return d.fakeServer.Contexts(ctx, id)
}

func (d *deadLink) Actions(ctx context.Context, id string) ([]*workflow.WorkflowAction, error) {
	if d.hang(ctx, "actions") {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return d.fakeServer.Actions(ctx, id)
}

func (d *deadLink) Data(ctx context.Context, id string) ([]byte, error) {
	if d.hang(ctx, "data") {
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return d.fakeServer.Data(ctx, id)
}

func (d *deadLink) Report(ctx context.Context, r *workflow.WorkflowActionStatus) error {
	if d.hang(ctx, "report") {
		return status.FromContextError(ctx.Err()).Err()
	}
	return d.fakeServer.Report(ctx, r)
}

// runUntilReported runs w until s holds two reports (or 5 s passed),
// then ends the workflow and stops w.
func runUntilReported(t *testing.T, w *Worker, s *fakeServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil && len(s.trail()) < 2 {
			time.Sleep(time.Millisecond)
		}
		s.mu.Lock()
		s.contexts = nil // the workflow ended
		s.mu.Unlock()
		cancel()
	}()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

type flakyContexts struct {
	*fakeServer
	fail  int
	calls *int
}

func (f *flakyContexts) Contexts(ctx context.Context, id string) ([]*workflow.WorkflowContext, error) {
	*f.calls++
	if *f.calls <= f.fail {
		return nil, errors.New("dial tcp 10.1.0.1:42113: connect: connection refused")
	}
	return f.fakeServer.Contexts(ctx, id)
}

func TestPowerRequest(t *testing.T) {
	s := &fakeServer{actions: []*workflow.WorkflowAction{act("a", "ok"), act("reboot", "reboot"), act("c", "ok")}}
	r := newFakeRuntime(map[string]script{"ok": exit(0), "reboot": writeFile(PowerFile, "reboot\n")})
	w := newWorker(t, s, r)
	var asked []string
	w.cfg.Power = func(_ context.Context, mode string) error { asked = append(asked, mode); return nil }
	_, err := w.RunWorkflow(context.Background(), pending())
	if !errors.Is(err, ErrPowerOff) || !slices.Equal(asked, []string{"reboot"}) {
		t.Fatalf("RunWorkflow = %v, power requests %q", err, asked)
	}
	// The request is reported done before the machine goes down, and the
	// worker starts nothing after it.
	if got := s.trail(); !slices.Equal(got, []string{"a:RUNNING", "a:SUCCESS", "reboot:RUNNING", "reboot:SUCCESS"}) {
		t.Errorf("reports %q", got)
	}
}
