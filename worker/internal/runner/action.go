package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

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

// runAction runs one action and reports it: RUNNING first, then its final
// state. It returns the reported final state; err means the workflow cannot
// go on here (a report refused, or the worker is stopping).
func (w *Worker) runAction(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction) (workflow.State, error) {
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
	out := w.execute(ctx, log, wfID, a)
	stopping := ctx.Err() != nil
	if stopping {
		out = outcome{workflow.State_STATE_FAILED, "the worker was stopped while the action ran (" + out.message + ")"}
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
	rctx := ctx
	if stopping {
		// Deliver the last word even though we are told to stop, briefly.
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), w.cfg.FinalReportWithin)
		defer cancel()
	}
	log.InfoContext(ctx, "action ended", "state", stateName(out.state), "seconds", secs, "message", out.message)
	if err := w.retry(rctx, "report "+stateName(out.state), func(ctx context.Context) error { return w.server.Report(ctx, final) }); err != nil {
		return out.state, err
	}
	if stopping {
		return out.state, ctx.Err()
	}
	return out.state, nil
}

// execute runs the action's container and, when it fails or times out, its
// on-failure or on-timeout command in a new container of the same image.
func (w *Worker) execute(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction) outcome {
	if err := w.runtime.Pull(ctx, a.GetImage()); err != nil {
		return outcome{workflow.State_STATE_FAILED, fmt.Sprintf("pull image %s: %v", a.GetImage(), err)}
	}
	timeout := time.Duration(a.GetTimeout()) * time.Second
	res := w.container(ctx, log, wfID, a, a.GetCommand(), "", timeout)
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
	r := w.container(ctx, log, wfID, a, reaction, what, timeout)
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
func (w *Worker) container(ctx context.Context, log *slog.Logger, wfID string, a *workflow.WorkflowAction, cmd []string, suffix string, timeout time.Duration) result {
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
		err := w.runtime.Logs(lctx, id, func(line string) {
			tail.add(line)
			log.InfoContext(ctx, "action output", "line", line)
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
