// Package engine is the workflow state machine: pure functions that decide
// what an action report, or the passing of time, does to a workflow's
// status. It performs no I/O; the store loads a status, asks the engine and
// saves the answer in the same transaction.
//
// A workflow is an ordered list of actions (Steps), each run by one worker.
// The engine accepts, in this order and nothing else:
//
//	RUNNING of action 0
//	SUCCESS, FAILED or TIMEOUT of action 0
//	RUNNING of action 1 (only after SUCCESS of action 0)
//	...
//
// FAILED and TIMEOUT end the workflow with that state; SUCCESS of the last
// action ends it with SUCCESS. A report identical to the one recorded last
// (a worker resending after a lost reply) is accepted and changes nothing.
//
// Action numbers in messages are the 0-based indexes the workflow context
// shows as current_action_index.
package engine

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/herd-metal/herd/proto/workflow"
)

// State is the proto's workflow and action state.
type State = workflow.State

// The states, named for readability inside this package's users.
const (
	Pending = workflow.State_STATE_PENDING
	Running = workflow.State_STATE_RUNNING
	Failed  = workflow.State_STATE_FAILED
	Timeout = workflow.State_STATE_TIMEOUT
	Success = workflow.State_STATE_SUCCESS
)

// Report rejections. Apply's errors wrap exactly one of these and say in
// words what the engine expected instead.
var (
	// ErrWrongAction: the reported task/action pair is not in the workflow,
	// or the state is not one a worker may report.
	ErrWrongAction = errors.New("no such action in the workflow")
	// ErrOutOfOrder: the action exists but it is not its turn, or the state
	// does not follow the recorded one (e.g. SUCCESS before RUNNING).
	ErrOutOfOrder = errors.New("report out of order")
	// ErrFinished: the workflow already ended (FAILED, TIMEOUT or SUCCESS).
	ErrFinished = errors.New("workflow already finished")
	// ErrWrongWorker: the action belongs to another worker.
	ErrWrongWorker = errors.New("action belongs to another worker")
)

// Step is one action of a workflow, as far as the engine cares.
type Step struct {
	Task, Name string
	// Worker is the hardware id of the machine that runs the action.
	Worker string
	// Timeout is the action's own limit; 0 means none.
	Timeout time.Duration
}

// Steps converts the stored action list.
func Steps(actions []*workflow.WorkflowAction) []Step {
	steps := make([]Step, len(actions))
	for i, a := range actions {
		steps[i] = Step{
			Task:    a.GetTaskName(),
			Name:    a.GetName(),
			Worker:  a.GetWorkerId(),
			Timeout: time.Duration(a.GetTimeout()) * time.Second,
		}
	}
	return steps
}

// Status is where a workflow stands. The zero value is a new workflow:
// PENDING, nothing reported yet.
type Status struct {
	// State of the workflow: PENDING until the first RUNNING report, then
	// RUNNING until a final state.
	State State
	// Index of the action last reported (or timed out), and its state.
	Index       int
	ActionState State
	// Started is the time of the first RUNNING report (global timeout
	// origin); ActionStarted the time of the current action's RUNNING.
	Started, ActionStarted time.Time
}

// Report is one worker's report about one action.
type Report struct {
	Task, Action, Worker string
	State                State
}

// Final reports whether st ends a workflow (FAILED, TIMEOUT, SUCCESS).
func Final(st State) bool {
	return st == Failed || st == Timeout || st == Success
}

// StateName is st without the proto's STATE_ prefix ("RUNNING").
func StateName(st State) string {
	return strings.TrimPrefix(st.String(), "STATE_")
}

// Apply applies report r, received at now, to status s of a workflow with
// the given steps. changed is false (and err nil) when r repeats the
// recorded report. err wraps ErrWrongAction, ErrOutOfOrder, ErrFinished or
// ErrWrongWorker when r is refused; s is then returned unchanged.
func Apply(s Status, steps []Step, r Report, now time.Time) (next Status, changed bool, err error) {
	if err := check(s, steps); err != nil {
		return s, false, err
	}
	if s.State != Pending && r.State == s.ActionState && matches(steps[s.Index], r) && steps[s.Index].Worker == r.Worker {
		return s, false, nil // resend
	}
	if Final(s.State) {
		return s, false, fmt.Errorf("%s: workflow ended with %s at action %d (%s): %w",
			describe(r), StateName(s.State), s.Index, name(steps[s.Index]), ErrFinished)
	}
	if r.State != Running && !Final(r.State) {
		return s, false, fmt.Errorf("%s: a worker can report only RUNNING, SUCCESS, FAILED or TIMEOUT; %s: %w",
			describe(r), expectation(s, steps), ErrWrongAction)
	}

	e, wantRunning := expected(s)
	at := e
	if !matches(steps[e], r) {
		at = find(steps, r)
	}
	switch {
	case at < 0:
		return s, false, fmt.Errorf("%s: the workflow has no action %q in task %q; %s: %w",
			describe(r), r.Action, r.Task, expectation(s, steps), ErrWrongAction)
	case at != e:
		return s, false, fmt.Errorf("%s: that is action %d, %s: %w",
			describe(r), at, expectation(s, steps), ErrOutOfOrder)
	case steps[e].Worker != r.Worker:
		return s, false, fmt.Errorf("%s: action %d (%s) runs on worker %q: %w",
			describe(r), e, name(steps[e]), steps[e].Worker, ErrWrongWorker)
	case wantRunning != (r.State == Running):
		return s, false, fmt.Errorf("%s: %s: %w", describe(r), expectation(s, steps), ErrOutOfOrder)
	}

	next = s
	next.Index = e
	next.ActionState = r.State
	switch {
	case r.State == Running:
		if s.State == Pending {
			next.Started = now
		}
		next.State = Running
		next.ActionStarted = now
	case r.State == Success && e == len(steps)-1:
		next.State = Success
	case r.State == Success:
		// The workflow stays RUNNING, waiting for the next action.
	default: // FAILED, TIMEOUT
		next.State = r.State
	}
	return next, true, nil
}

// Deadline returns the earliest time at which the server must end the
// workflow with TIMEOUT: the running action's start plus its timeout, or
// the workflow's first RUNNING plus the global timeout. ok is false when no
// deadline applies (not running, or no timeouts set; 0 means none).
func Deadline(s Status, steps []Step, global time.Duration) (time.Time, bool) {
	a, aok := actionDeadline(s, steps)
	g, gok := globalDeadline(s, global)
	switch {
	case aok && gok:
		if g.Before(a) {
			return g, true
		}
		return a, true
	case aok:
		return a, true
	case gok:
		return g, true
	}
	return time.Time{}, false
}

// Expire ends the workflow with TIMEOUT when a deadline has passed at now.
// The timed-out action is the running one, or, between actions, the one
// the workflow was waiting for. ok is false when nothing expired.
func Expire(s Status, steps []Step, global time.Duration, now time.Time) (Status, bool) {
	d, ok := Deadline(s, steps, global)
	if !ok || now.Before(d) || check(s, steps) != nil {
		return s, false
	}
	next := s
	next.State = Timeout
	if s.ActionState == Success {
		next.Index = s.Index + 1
	}
	next.ActionState = Timeout
	return next, true
}

// ExpireReason says in words which timeout Expire would apply at now, or ""
// when none has passed. The store records it in the workflow's events.
func ExpireReason(s Status, steps []Step, global time.Duration, now time.Time) string {
	if check(s, steps) != nil {
		return ""
	}
	if a, ok := actionDeadline(s, steps); ok && !now.Before(a) {
		st := steps[s.Index]
		return fmt.Sprintf("action %d (%s) exceeded its timeout of %s (running since %s); ended by the server",
			s.Index, name(st), st.Timeout, s.ActionStarted.UTC().Format(time.RFC3339))
	}
	if g, ok := globalDeadline(s, global); ok && !now.Before(g) {
		return fmt.Sprintf("workflow exceeded its global timeout of %s (running since %s); ended by the server",
			global, s.Started.UTC().Format(time.RFC3339))
	}
	return ""
}

// ToggleNetboot decides whether the server switches netboot itself for a
// new workflow's machines (Tinkerbell's toggleAllowNetboot): the create
// request's choice when it made one, else the template's toggle_netboot
// key when it has one, else yes, so machines provision hands-free.
func ToggleNetboot(request, template *bool) bool {
	switch {
	case request != nil:
		return *request
	case template != nil:
		return *template
	}
	return true
}

// NetbootChange says what a workflow that toggles netboot does to its
// machines' allow_pxe when its state goes from from to to: SUCCESS switches
// it off (set is true, allowPXE false), so the machine boots its disk from
// then on. Nothing else changes it: creation switched it on, and after
// FAILED or TIMEOUT it stays on, so the machine netboots into a retry.
func NetbootChange(from, to State) (allowPXE, set bool) {
	if to == Success && from != Success {
		return false, true
	}
	return false, false
}

// Applicable reports whether worker has the workflow's next move: it must
// start the next action, or it is running the current one (and should pick
// it up again after a restart).
func Applicable(s Status, steps []Step, worker string) bool {
	if check(s, steps) != nil || Final(s.State) {
		return false
	}
	e, _ := expected(s)
	return steps[e].Worker == worker
}

// Context is the workflow context the workers see, as Tinkerbell v0.6
// defines it: the last reported action and its state, or empty names, index
// 0 and PENDING when nothing was reported yet.
func Context(id string, s Status, steps []Step) *workflow.WorkflowContext {
	c := &workflow.WorkflowContext{
		WorkflowId:           id,
		TotalNumberOfActions: int64(len(steps)),
		CurrentActionState:   Pending,
	}
	if s.State == Pending || s.Index < 0 || s.Index >= len(steps) {
		return c
	}
	st := steps[s.Index]
	c.CurrentWorker = st.Worker
	c.CurrentTask = st.Task
	c.CurrentAction = st.Name
	c.CurrentActionIndex = int64(s.Index)
	c.CurrentActionState = s.ActionState
	return c
}

// check rejects a status that cannot belong to steps (a bug or a corrupt
// row, never a worker's fault).
func check(s Status, steps []Step) error {
	if len(steps) == 0 {
		return errors.New("engine: the workflow has no actions")
	}
	if s.Index < 0 || s.Index >= len(steps) {
		return fmt.Errorf("engine: status names action %d of a workflow with %d actions", s.Index, len(steps))
	}
	if s.State == Running && s.ActionState == Success && s.Index == len(steps)-1 {
		return fmt.Errorf("engine: status says RUNNING after the last action (%d) succeeded", s.Index)
	}
	return nil
}

// expected returns the index of the action whose report comes next and
// whether that report must be RUNNING (else a final state). Only for a
// workflow that has not ended.
func expected(s Status) (int, bool) {
	switch {
	case s.State == Pending:
		return 0, true
	case s.ActionState == Success:
		return s.Index + 1, true
	default: // RUNNING
		return s.Index, false
	}
}

func expectation(s Status, steps []Step) string {
	e, running := expected(s)
	if running {
		return fmt.Sprintf("expected RUNNING of action %d (%s) from worker %q", e, name(steps[e]), steps[e].Worker)
	}
	return fmt.Sprintf("expected SUCCESS, FAILED or TIMEOUT of action %d (%s) from worker %q", e, name(steps[e]), steps[e].Worker)
}

func actionDeadline(s Status, steps []Step) (time.Time, bool) {
	if s.State != Running || s.ActionState != Running || s.Index < 0 || s.Index >= len(steps) {
		return time.Time{}, false
	}
	t := steps[s.Index].Timeout
	if t <= 0 {
		return time.Time{}, false
	}
	return s.ActionStarted.Add(t), true
}

func globalDeadline(s Status, global time.Duration) (time.Time, bool) {
	if s.State != Running || global <= 0 {
		return time.Time{}, false
	}
	return s.Started.Add(global), true
}

func find(steps []Step, r Report) int {
	for i, st := range steps {
		if matches(st, r) {
			return i
		}
	}
	return -1
}

func matches(st Step, r Report) bool { return st.Task == r.Task && st.Name == r.Action }

func name(st Step) string { return fmt.Sprintf("task %q, action %q", st.Task, st.Name) }

func describe(r Report) string {
	return fmt.Sprintf("report %s of task %q, action %q by worker %q", StateName(r.State), r.Task, r.Action, r.Worker)
}
