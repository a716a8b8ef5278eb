package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
)

// fakeServer keeps reports and data like herd-server does, with failures
// injected on demand.
type fakeServer struct {
	mu       sync.Mutex
	contexts []*workflow.WorkflowContext
	actions  []*workflow.WorkflowAction
	reports  []*workflow.WorkflowActionStatus // every call that was accepted
	data     []byte
	meta     []byte
	updates  int
	// failReports makes the next n Report calls fail with Unavailable.
	failReports int
	// refuse makes Report refuse the report of this state with FailedPrecondition.
	refuse workflow.State
	// logs are the output lines received, as "action stream text".
	logs []string
	// logsErr, when set, is what ReportLogs answers; failLogs makes the
	// next n calls fail with Unavailable.
	logsErr  error
	failLogs int
	// logsAtReport is len(logs) when each report arrived.
	logsAtReport []int
	// listed, when set, answers ContextList (else: the workflow with its
	// last reported action).
	listed func() []*workflow.WorkflowContext
}

func (f *fakeServer) Contexts(context.Context, string) ([]*workflow.WorkflowContext, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.contexts, nil
}

func (f *fakeServer) Actions(context.Context, string) ([]*workflow.WorkflowAction, error) {
	return f.actions, nil
}

func (f *fakeServer) Report(_ context.Context, r *workflow.WorkflowActionStatus) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failReports > 0 {
		f.failReports--
		return status.Error(codes.Unavailable, "connection refused")
	}
	if f.refuse != 0 && r.GetActionStatus() == f.refuse {
		return status.Error(codes.FailedPrecondition, "workflow already finished")
	}
	f.reports = append(f.reports, r)
	f.logsAtReport = append(f.logsAtReport, len(f.logs))
	return nil
}

func (f *fakeServer) ReportLogs(_ context.Context, l *workflow.ActionLogs) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logsErr != nil {
		return f.logsErr
	}
	if f.failLogs > 0 {
		f.failLogs--
		return status.Error(codes.Unavailable, "connection refused")
	}
	if len(l.GetLines()) > MaxLogBatch {
		return status.Errorf(codes.InvalidArgument, "%d lines", len(l.GetLines()))
	}
	for _, ln := range l.GetLines() {
		if len(ln.GetText()) > MaxLogLineBytes {
			return status.Errorf(codes.InvalidArgument, "line of %d bytes", len(ln.GetText()))
		}
		f.logs = append(f.logs, l.GetActionName()+" "+ln.GetStream()+" "+ln.GetText())
	}
	return nil
}

func (f *fakeServer) loggedLines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.logs...)
}

func (f *fakeServer) ContextList(context.Context, string) ([]*workflow.WorkflowContext, error) {
	f.mu.Lock()
	listed := f.listed
	f.mu.Unlock()
	if listed != nil {
		return listed(), nil
	}
	return nil, status.Error(codes.Unavailable, "not in this test")
}

// Data is nil until an update, as herd-server (and Tinkerbell v0.6) send
// empty data for a workflow without any.
func (f *fakeServer) Data(context.Context, string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data, nil
}

func (f *fakeServer) UpdateData(_ context.Context, _ string, meta, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data, f.meta = data, meta
	f.updates++
	return nil
}

// trail is the reports as "action:STATE" strings.
func (f *fakeServer) trail() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.reports {
		out = append(out, r.GetActionName()+":"+stateName(r.GetActionStatus()))
	}
	return out
}

func (f *fakeServer) last() *workflow.WorkflowActionStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reports[len(f.reports)-1]
}

// script is what a fake container does: it gets the workflow directory on
// the host and returns its output lines and exit code; it must end when
// ctx does (a stopped container).
type script func(ctx context.Context, c Container, dir string) ([]string, int64)

type fakeRuntime struct {
	mu        sync.Mutex
	scripts   map[string]script // by first word of the command
	pullErr   map[string]error  // by image
	createErr error
	waitErr   error
	created   []Container
	removed   []string
	stopped   []string
	running   map[string]*fakeContainer
	n         int
}

type fakeContainer struct {
	c      Container
	cancel context.CancelFunc
	done   chan struct{}
	lines  []string
	code   int64
}

func newFakeRuntime(scripts map[string]script) *fakeRuntime {
	return &fakeRuntime{scripts: scripts, pullErr: map[string]error{}, running: map[string]*fakeContainer{}}
}

func (r *fakeRuntime) Pull(_ context.Context, image string) error { return r.pullErr[image] }

func (r *fakeRuntime) Create(_ context.Context, c Container) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.createErr != nil {
		return "", r.createErr
	}
	r.n++
	id := fmt.Sprintf("c%d", r.n)
	r.created = append(r.created, c)
	r.running[id] = &fakeContainer{c: c, done: make(chan struct{})}
	return id, nil
}

func (r *fakeRuntime) Start(_ context.Context, id string) error {
	r.mu.Lock()
	fc := r.running[id]
	r.mu.Unlock()
	s := r.scripts[fc.c.Command[0]]
	if s == nil {
		return fmt.Errorf("exec: %q: executable file not found in $PATH", fc.c.Command[0])
	}
	var dir string
	for _, b := range fc.c.Binds {
		if host, ok := strings.CutSuffix(b, ":/workflow"); ok {
			dir = host
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	fc.cancel = cancel
	go func() {
		defer close(fc.done)
		fc.lines, fc.code = s(ctx, fc.c, dir)
		if ctx.Err() != nil {
			fc.code = 137
		}
	}()
	return nil
}

func (r *fakeRuntime) Logs(ctx context.Context, id string, line func(stream, text string)) error {
	r.mu.Lock()
	fc := r.running[id]
	r.mu.Unlock()
	select {
	case <-fc.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, l := range fc.lines {
		line(Stdout, l)
	}
	return nil
}

func (r *fakeRuntime) Wait(ctx context.Context, id string) (int64, error) {
	r.mu.Lock()
	fc := r.running[id]
	r.mu.Unlock()
	if r.waitErr != nil {
		return 0, r.waitErr
	}
	select {
	case <-fc.done:
		return fc.code, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (r *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	r.mu.Lock()
	fc := r.running[id]
	r.stopped = append(r.stopped, id)
	r.mu.Unlock()
	if fc.cancel != nil {
		fc.cancel()
		<-fc.done
	}
	return nil
}

func (r *fakeRuntime) Remove(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[id]; !ok {
		return errors.New("no such container")
	}
	delete(r.running, id)
	r.removed = append(r.removed, id)
	return nil
}

func (r *fakeRuntime) commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.created {
		out = append(out, strings.Join(c.Command, " "))
	}
	return out
}

func (r *fakeRuntime) leftovers() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

// Scripts used by the tests.
func exit(code int64, lines ...string) script {
	return func(context.Context, Container, string) ([]string, int64) { return lines, code }
}

func block(ctx context.Context, _ Container, _ string) ([]string, int64) {
	<-ctx.Done()
	return []string{"interrupted"}, 137
}

func writeData(content string) script {
	return func(_ context.Context, _ Container, dir string) ([]string, int64) {
		if err := os.WriteFile(filepath.Join(dir, DataFile), []byte(content), 0o644); err != nil {
			return []string{err.Error()}, 1
		}
		return []string{"wrote data"}, 0
	}
}

func readFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}

func writeFile(name, content string) script {
	return func(_ context.Context, _ Container, dir string) ([]string, int64) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return []string{err.Error()}, 1
		}
		return nil, 0
	}
}
