package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
)

// Labels put on every container the worker creates.
const (
	LabelWorkflow = "herd.workflow"
	LabelAction   = "herd.action"
)

// outcome is how one action ended, before it is reported.
type outcome struct {
	state   workflow.State
	message string
}

// ErrWorkflowEnded says herd-server ended a workflow while one of its
// actions ran here (its global timeout, an operator deleting it): the
// container was stopped and nothing more reported.
var ErrWorkflowEnded = errors.New("herd-server ended the workflow while its action ran")

// runAction runs one action (the index-th of its workflow) and reports it:
// RUNNING first, then its final state. It returns the reported final state;
// err means the workflow cannot go on here (a report refused, the workflow
// ended on the server, or the worker is stopping).
func (w *Worker) runAction(ctx context.Context, log *slog.Logger, wfID string, index int, a *workflow.WorkflowAction) (workflow.State, error) {
	report := &workflow.WorkflowActionStatus{
		WorkflowId: wfID, TaskName: a.GetTaskName(), ActionName: a.GetName(),
		ActionStatus: workflow.State_STATE_RUNNING, WorkerId: w.cfg.WorkerID,
		Message: "started by worker " + w.cfg.WorkerID,
	}
	data, err := w.fetchData(ctx, wfID)
	if err != nil {
		return 0, err
	}
	if err := w.retry(ctx, "report RUNNING", func(ctx context.Context) error { return w.server.Report(ctx, report) }); err != nil {
		return 0, err
	}
	log.InfoContext(ctx, "action started", "image", a.GetImage())
	start := w.now()
	ship := w.shipper(ctx, log, wfID, a)
	actx, endWatch := w.watch(ctx, log, wfID, index)
	out := w.execute(actx, log, wfID, a, ship)
	endWatch()
	stopping := ctx.Err() != nil
	ended := !stopping && errors.Is(context.Cause(actx), ErrWorkflowEnded)
	if stopping {
		out = outcome{workflow.State_STATE_FAILED, "the worker was stopped while the action ran (" + out.message + ")"}
	}
	rctx := ctx
	if stopping || ended {
		// Deliver the last word even though we are told to stop, briefly.
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FinalReportWithin)
		defer cancel()
	}
	// The output goes first: whoever sees the final state finds it stored.
	if sent, dropped := ship.finish(rctx); dropped > 0 {
		w.metrics.logLines(sent, dropped)
		log.WarnContext(ctx, "output lines of the action did not reach herd-server", "sent", sent, "dropped", dropped)
	} else {
		w.metrics.logLines(sent, 0)
	}
	if ended {
		log.WarnContext(ctx, "herd-server ended the workflow while the action ran; container stopped, nothing more reported",
			"seconds", int64(w.now().Sub(start)/time.Second))
		return out.state, ErrWorkflowEnded
	}
	if out.state == workflow.State_STATE_SUCCESS || out.state == workflow.State_STATE_FAILED || out.state == workflow.State_STATE_TIMEOUT {
		if derr := w.sendData(ctx, log, wfID, a, data); derr != nil {
			if out.state == workflow.State_STATE_SUCCESS {
				out = outcome{workflow.State_STATE_FAILED, derr.Error()}
			} else {
				out.message += "; " + derr.Error()
			}
		}
	}
	secs := int64(w.now().Sub(start).Round(time.Second) / time.Second)
	final := &workflow.WorkflowActionStatus{
		WorkflowId: wfID, TaskName: a.GetTaskName(), ActionName: a.GetName(),
		ActionStatus: out.state, Seconds: secs, Message: clipMessage(out.message), WorkerId: w.cfg.WorkerID,
	}
	w.metrics.action(out.state, w.now().Sub(start))
	log.InfoContext(ctx, "action ended", "state", stateName(out.state), "seconds", secs, "message", out.message)
	if err := w.retry(rctx, "report "+stateName(out.state), func(ctx context.Context) error { return w.server.Report(ctx, final) }); err != nil {
		return out.state, err
	}
	if stopping {
		return out.state, ctx.Err()
	}
	return out.state, nil
}

// shipper starts sending the action's output to the server (nil once the
// server said it cannot store it).
func (w *Worker) shipper(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction) *logShipper {
	if w.noLogs.Load() {
		return nil
	}
	run := rand.Text() // this run of the action; a rerun after a reboot is another
	batch := 0
	send := func(ctx context.Context, lines []*workflow.LogLine) error {
		// The batch id stays the same across retries, so the server stores
		// a batch once even when a reply got lost.
		batch++
		l := &workflow.ActionLogs{WorkflowId: wfID, TaskName: a.GetTaskName(), ActionName: a.GetName(), Lines: lines,
			BatchId: fmt.Sprintf("%s-%d", run, batch)}
		err := w.retry(ctx, "send the action's output", func(ctx context.Context) error { return w.server.ReportLogs(ctx, l) })
		if status.Code(err) == codes.Unimplemented && !w.noLogs.Swap(true) {
			log.InfoContext(ctx, "herd-server does not store action output (no ReportActionLogs); it stays in this log only")
		}
		return err
	}
	s := newLogShipper(log, send, w.now, w.cfg.LogBatchLines, w.cfg.LogFlushEvery, w.cfg.LogBufferLines)
	go s.run(ctx)
	return s
}

// watch returns a context for running the index-th action of a workflow
// that ends (with cause ErrWorkflowEnded) when herd-server no longer has
// that action RUNNING: the workflow hit its global timeout or was deleted.
// Failed checks (the server away) change nothing. stop ends the watching.
func (w *Worker) watch(ctx context.Context, log *slog.Logger, wfID string, index int) (actx context.Context, stop func()) {
	actx, cancel := context.WithCancelCause(ctx)
	if w.cfg.WatchEvery < 0 {
		return actx, func() { cancel(nil) }
	}
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.cfg.WatchEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-actx.Done():
				return
			case <-t.C:
			}
			cctx, ccancel := context.WithTimeout(actx, min(w.cfg.WatchEvery, w.cfg.CallTimeout))
			list, err := w.server.ContextList(cctx, w.cfg.WorkerID)
			ccancel()
			if err != nil {
				log.DebugContext(ctx, "checking the workflow's state failed", "error", err)
				continue
			}
			if why, over := ended(list, wfID, index); over {
				log.WarnContext(ctx, "herd-server ended the workflow; stopping the action", "reason", why)
				cancel(ErrWorkflowEnded)
				return
			}
		}
	}()
	return actx, func() { close(quit); <-done; cancel(nil) }
}

// ended tells whether the contexts say that the index-th action of the
// workflow is no longer running on the server, and why.
func ended(list []*workflow.WorkflowContext, wfID string, index int) (string, bool) {
	for _, c := range list {
		if c.GetWorkflowId() != wfID {
			continue
		}
		if int(c.GetCurrentActionIndex()) == index && c.GetCurrentActionState() == workflow.State_STATE_RUNNING {
			return "", false
		}
		return fmt.Sprintf("action %d (%s) is %s", c.GetCurrentActionIndex(), c.GetCurrentAction(), stateName(c.GetCurrentActionState())), true
	}
	return "the workflow is gone (deleted)", true
}

// execute runs the action's container and, when it fails or times out, its
// on-failure or on-timeout command in a new container of the same image.
func (w *Worker) execute(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction, ship *logShipper) outcome {
	if err := w.runtime.Pull(ctx, a.GetImage()); err != nil {
		return outcome{workflow.State_STATE_FAILED, fmt.Sprintf("pull image %s: %v", a.GetImage(), err)}
	}
	timeout := time.Duration(a.GetTimeout()) * time.Second
	res := w.container(ctx, log, wfID, a, a.GetCommand(), "", timeout, ship)
	out := res.outcome(timeout)
	var reaction []string
	switch out.state {
	case workflow.State_STATE_FAILED:
		reaction = a.GetOnFailure()
	case workflow.State_STATE_TIMEOUT:
		reaction = a.GetOnTimeout()
	default:
		return out
	}
	if len(reaction) == 0 || ctx.Err() != nil {
		return out
	}
	what := "on-failure"
	if out.state == workflow.State_STATE_TIMEOUT {
		what = "on-timeout"
	}
	log.InfoContext(ctx, "running "+what+" command", "command", reaction)
	r := w.container(ctx, log, wfID, a, reaction, what, timeout, ship)
	switch {
	case r.err != nil:
		out.message += fmt.Sprintf("; %s command: %v", what, r.err)
	case r.timedOut:
		out.message += fmt.Sprintf("; %s command timed out after %s", what, timeout)
	default:
		out.message += fmt.Sprintf("; %s command exited with %d", what, r.code)
	}
	return out
}

// result is how one container ended.
type result struct {
	code     int64
	timedOut bool
	err      error // the container could not run, or the engine failed
	tail     []string
}

func (r result) outcome(timeout time.Duration) outcome {
	var m string
	var st workflow.State
	switch {
	case r.err != nil:
		st, m = workflow.State_STATE_FAILED, r.err.Error()
	case r.timedOut:
		st, m = workflow.State_STATE_TIMEOUT, fmt.Sprintf("timed out after %s", timeout)
	case r.code != 0:
		st, m = workflow.State_STATE_FAILED, fmt.Sprintf("exit code %d", r.code)
	default:
		st, m = workflow.State_STATE_SUCCESS, "exit code 0"
	}
	if len(r.tail) > 0 {
		m += "; last output:\n" + strings.Join(r.tail, "\n")
	}
	return outcome{st, m}
}

// container runs one container to its end: create, start, stream its
// output, wait (up to timeout, 0: none), remove.
func (w *Worker) container(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction, cmd []string, suffix string, timeout time.Duration, ship *logShipper) result {
	c := Container{
		Name:       containerName(wfID, a.GetTaskName(), a.GetName(), suffix),
		Image:      a.GetImage(),
		Command:    cmd,
		Env:        a.GetEnvironment(),
		Binds:      append(append([]string{}, a.GetVolumes()...), w.workflowDir(wfID)+":/workflow"),
		PidMode:    a.GetPid(),
		Privileged: w.cfg.Privileged,
		Labels:     map[string]string{LabelWorkflow: wfID, LabelAction: a.GetTaskName() + "/" + a.GetName()},
	}
	id, err := w.runtime.Create(ctx, c)
	if err != nil {
		return result{err: fmt.Errorf("create container: %w", err)}
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.StopGrace+10*time.Second)
		defer cancel()
		if err := w.runtime.Remove(rctx, id); err != nil {
			log.WarnContext(ctx, "removing the container failed", "container", id, "error", err)
		}
	}()
	if err := w.runtime.Start(ctx, id); err != nil {
		return result{err: fmt.Errorf("start container: %w", err)}
	}
	tail := newTail(w.cfg.LogLines)
	logsDone := make(chan struct{})
	lctx, lcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer lcancel()
	go func() {
		defer close(logsDone)
		err := w.runtime.Logs(lctx, id, func(stream, line string) {
			tail.add(line)
			ship.add(stream, line)
			log.InfoContext(ctx, "action output", "stream", stream, "line", line)
		})
		if err != nil && lctx.Err() == nil {
			log.WarnContext(ctx, "reading the container's output failed", "error", err)
		}
	}()
	wctx, wcancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		wctx, wcancel = context.WithTimeout(ctx, timeout)
	}
	code, err := w.runtime.Wait(wctx, id)
	res := result{code: code}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			res.err = errors.New("stopped")
		case wctx.Err() != nil:
			res.timedOut = true
		default: // the engine failed, not a deadline
			res.err = fmt.Errorf("wait for container: %w", err)
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.StopGrace+10*time.Second)
		if serr := w.runtime.Stop(sctx, id, w.cfg.StopGrace); serr != nil {
			log.WarnContext(ctx, "stopping the container failed", "container", id, "error", serr)
		}
		cancel()
	}
	wcancel()
	// The output ends with the container; do not wait long for a stuck stream.
	select {
	case <-logsDone:
	case <-time.After(5 * time.Second):
		lcancel()
		<-logsDone
	}
	res.tail = tail.lines()
	return res
}

func (w *Worker) workflowDir(wfID string) string {
	return strings.TrimRight(w.cfg.DataDir, "/") + "/" + wfID
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// containerName is a readable, valid Docker name for an action's container.
func containerName(wfID, task, action, suffix string) string {
	short := wfID
	if len(short) > 8 {
		short = short[:8]
	}
	parts := []string{"herd", short, task, action}
	if suffix != "" {
		parts = append(parts, suffix)
	}
	n := unsafeName.ReplaceAllString(strings.Join(parts, "-"), "_")
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

// tail keeps the last n lines written to it.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []string
}

func newTail(n int) *tail { return &tail{n: n} }

const maxLine = 512

func (t *tail) add(line string) {
	if len(line) > maxLine {
		line = line[:maxLine] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line)
	if len(t.buf) > t.n {
		t.buf = t.buf[len(t.buf)-t.n:]
	}
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}

// maxMessage stays under herd-server's 64 KiB limit for a report message.
const maxMessage = 16 << 10

func clipMessage(m string) string {
	if len(m) <= maxMessage {
		return m
	}
	return m[:maxMessage-3] + "..."
}

func stateName(s workflow.State) string { return strings.TrimPrefix(s.String(), "STATE_") }
