// Package runner is herd-worker's run loop: which workflows this machine
// has the next move in, which action to start with (after a reboot too),
// and for each action the sequence RUNNING -> run -> SUCCESS / FAILED /
// TIMEOUT that herd-server's engine accepts. It talks to the server and to
// the container engine only through the two small interfaces below, so the
// sequencing is tested without either.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/herd-metal/herd/proto/workflow"
)

// Server is what the worker asks herd-server (Tinkerbell v0.6's
// worker-facing calls; see Client for the gRPC implementation).
type Server interface {
	// Contexts returns the workflows in which this worker has the next
	// move (GetWorkflowContexts).
	Contexts(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error)
	Actions(ctx context.Context, workflowID string) ([]*workflow.WorkflowAction, error)
	Report(ctx context.Context, r *workflow.WorkflowActionStatus) error
	// Data returns the latest workflow data ("{}" when there is none).
	Data(ctx context.Context, workflowID string) ([]byte, error)
	UpdateData(ctx context.Context, workflowID string, metadata, data []byte) error
	// ReportLogs stores output lines of an action (herd's ReportActionLogs;
	// a plain v0.6 server answers Unimplemented and the worker stops
	// sending).
	ReportLogs(ctx context.Context, l *workflow.ActionLogs) error
	// ContextList returns the contexts of every workflow this worker takes
	// part in, whoever has the next move (GetWorkflowContextList): the
	// worker checks with it that the workflow of a running action has not
	// ended meanwhile.
	ContextList(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error)
}

// Container is what the worker asks the container engine to run.
type Container struct {
	Name       string
	Image      string
	Command    []string
	Env        []string
	Binds      []string // host:container[:ro]
	PidMode    string
	Privileged bool
	Labels     map[string]string
}

// Runtime runs containers (see package docker for the Docker Engine one).
type Runtime interface {
	// Pull makes image available locally.
	Pull(ctx context.Context, image string) error
	Create(ctx context.Context, c Container) (id string, err error)
	Start(ctx context.Context, id string) error
	// Logs calls line for each line the container writes, with its
	// stream (Stdout or Stderr), until the container ends (or ctx does).
	// line must not block.
	Logs(ctx context.Context, id string, line func(stream, text string)) error
	// Wait returns the exit code once the container has stopped.
	Wait(ctx context.Context, id string) (int64, error)
	// Stop asks the container to stop, killing it after grace.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Remove deletes the container (and its anonymous volumes).
	Remove(ctx context.Context, id string) error
}

// Config is the worker's behaviour.
type Config struct {
	// WorkerID is this machine's hardware id.
	WorkerID string
	// DataDir holds one directory per workflow, bound at /workflow in each
	// action container; the workflow data is the file "data" in it.
	DataDir string
	// MaxDataBytes bounds the workflow data an action may leave behind
	// (herd-server's default limit is 1 MiB).
	MaxDataBytes int
	// Poll is the pause between two asks for work.
	Poll time.Duration
	// RetryMin and RetryMax bound the backoff between attempts of a call
	// the server could not answer.
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds each attempt of a call to herd-server: a call
	// sent into a dead link ends DeadlineExceeded and is retried with the
	// backoff, instead of waiting for TCP to give up. 0: 15s.
	CallTimeout time.Duration
	// StopGrace is how long a container gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// FinalReportWithin bounds the attempts to deliver the last report
	// once the worker is told to stop.
	FinalReportWithin time.Duration
	// Privileged runs the actions as privileged containers, as Tinkerbell
	// does (they partition disks and write images). Off only where the
	// engine cannot (a worker inside an unprivileged container, tests).
	Privileged bool
	// Power, when set, reboots or powers off the machine ("reboot",
	// "poweroff") when an action asked for it in /workflow/power (the
	// reboot action does), after that action's SUCCESS is reported.
	Power func(ctx context.Context, mode string) error
	// LogLines is how many of an action's last output lines its report's
	// message carries.
	LogLines int
	// LogBatchLines and LogFlushEvery say when an action's output goes to
	// herd-server: once that many lines wait, or that often. LogBufferLines
	// bounds the lines waiting while the server is away; more are dropped
	// (and counted).
	LogBatchLines  int
	LogFlushEvery  time.Duration
	LogBufferLines int
	// WatchEvery is how often, while an action runs, the worker checks that
	// herd-server has not ended the workflow meanwhile (its global timeout,
	// an operator deleting it); when it has, the container is stopped and
	// nothing more is reported. 0: 5s; negative: never.
	WatchEvery time.Duration
}

func (c *Config) defaults() {
	if c.MaxDataBytes <= 0 {
		c.MaxDataBytes = 1 << 20
	}
	if c.Poll <= 0 {
		c.Poll = 5 * time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 500 * time.Millisecond
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(30*time.Second, c.RetryMin)
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 15 * time.Second
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	if c.FinalReportWithin <= 0 {
		c.FinalReportWithin = 15 * time.Second
	}
	if c.LogLines <= 0 {
		c.LogLines = 20
	}
	if c.LogBatchLines <= 0 {
		c.LogBatchLines = 200
	}
	if c.LogFlushEvery <= 0 {
		c.LogFlushEvery = 500 * time.Millisecond
	}
	if c.LogBufferLines <= 0 {
		c.LogBufferLines = 10000
	}
	if c.WatchEvery == 0 {
		c.WatchEvery = 5 * time.Second
	}
}

// Worker runs this machine's share of its workflows.
type Worker struct {
	cfg     Config
	server  Server
	runtime Runtime
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
	// noLogs is set once the server said it has no ReportActionLogs.
	noLogs atomic.Bool
}

// New returns a Worker. metrics may be nil.
func New(cfg Config, s Server, r Runtime, log *slog.Logger, m *Metrics) (*Worker, error) {
	if cfg.WorkerID == "" {
		return nil, errors.New("no worker id: give this machine's hardware id")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("no data directory for the workflow data")
	}
	cfg.defaults()
	return &Worker{cfg: cfg, server: s, runtime: r, log: log.With("hardware_id", cfg.WorkerID), metrics: m, now: time.Now}, nil
}

// Run asks for work every Poll and runs it, until ctx ends (then it
// returns nil). While the server is away it retries with backoff.
func (w *Worker) Run(ctx context.Context) error {
	b := w.backoff()
	for {
		_, err := w.RunOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := w.cfg.Poll
		if err != nil {
			wait = b.next()
			w.log.WarnContext(ctx, "asking herd-server for work failed; retrying", "error", err, "retry_in", wait)
		} else {
			b.reset()
		}
		if sleep(ctx, wait) != nil {
			return nil
		}
	}
}

// RunOnce asks once for the workflows in which this worker has the next
// move and runs each as far as this worker's actions go. It returns how
// many actions it ran. A workflow that cannot go on (the server refused a
// report) is logged and left; the error is about asking for work.
func (w *Worker) RunOnce(ctx context.Context) (int, error) {
	var wctxs []*workflow.WorkflowContext
	err := w.attempt(ctx, func(ctx context.Context) error {
		var err error
		wctxs, err = w.server.Contexts(ctx, w.cfg.WorkerID)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("workflow contexts of worker %s: %w", w.cfg.WorkerID, err)
	}
	ran := 0
	for _, c := range wctxs {
		n, err := w.RunWorkflow(ctx, c)
		ran += n
		if ctx.Err() != nil || errors.Is(err, ErrPowerOff) {
			return ran, nil
		}
		if errors.Is(err, ErrWorkflowEnded) {
			continue // logged where it happened
		}
		if err != nil {
			w.log.ErrorContext(ctx, "workflow stopped", "workflow_id", c.GetWorkflowId(), "error", err)
		}
	}
	return ran, nil
}

// Start returns the index of the first action of a workflow not yet
// reported done, given its context, and false when the workflow has ended.
// A RUNNING action was interrupted (the machine rebooted, the worker died)
// and is run again; a SUCCESS one is never run again.
func Start(c *workflow.WorkflowContext) (int, bool) {
	i := int(c.GetCurrentActionIndex())
	switch c.GetCurrentActionState() {
	case workflow.State_STATE_PENDING:
		if c.GetCurrentAction() == "" {
			return 0, true
		}
		return i, true
	case workflow.State_STATE_RUNNING:
		return i, true
	case workflow.State_STATE_SUCCESS:
		if i+1 >= int(c.GetTotalNumberOfActions()) {
			return 0, false
		}
		return i + 1, true
	}
	return 0, false // FAILED, TIMEOUT
}

// RunWorkflow runs the workflow's actions from the first one not yet done,
// while they belong to this worker and succeed. It returns how many it ran.
func (w *Worker) RunWorkflow(ctx context.Context, c *workflow.WorkflowContext) (int, error) {
	id := c.GetWorkflowId()
	first, ok := Start(c)
	if !ok {
		return 0, nil
	}
	var actions []*workflow.WorkflowAction
	err := w.retry(ctx, "get the workflow's actions", func(ctx context.Context) error {
		var err error
		actions, err = w.server.Actions(ctx, id)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("workflow %s: %w", id, err)
	}
	log := w.log.With("workflow_id", id)
	ran := 0
	for i := first; i < len(actions); i++ {
		a := actions[i]
		if a.GetWorkerId() != w.cfg.WorkerID {
			log.InfoContext(ctx, "next action belongs to another worker", "index", i, "action", a.GetName(), "worker", a.GetWorkerId())
			return ran, nil
		}
		ran++
		st, err := w.runAction(ctx, log.With("task", a.GetTaskName(), "action", a.GetName(), "index", i), id, i, a)
		if err != nil {
			return ran, err
		}
		if st != workflow.State_STATE_SUCCESS {
			return ran, nil
		}
		if w.power(ctx, log, id) {
			return ran, ErrPowerOff
		}
	}
	return ran, nil
}
