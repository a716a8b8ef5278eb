package store

// The hot path: a worker's report on an action.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

// wfStatus is the part of a workflow row a report changes.
type wfStatus struct {
	id        string
	global    time.Duration
	status    engine.Status
	toggle    bool // toggle_netboot
	deletedAt sql.NullTime
}

// readStatus reads a workflow's status.
func readStatus(ctx context.Context, q querier, id string) (*wfStatus, error) {
	id, err := parseID("workflow", id)
	if err != nil {
		return nil, err
	}
	var (
		w                 wfStatus
		global            int64
		state, cur        int32
		started, aStarted sql.NullTime
	)
	err = q.QueryRowContext(ctx, `
		SELECT id, global_timeout, state, current_index, current_state, started_at, action_started_at, toggle_netboot, deleted_at
		FROM workflow WHERE id = $1`, id).
		Scan(&w.id, &global, &state, &w.status.Index, &cur, &started, &aStarted, &w.toggle, &w.deletedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("workflow %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading workflow %s: %w", id, err)
	}
	w.global = time.Duration(global) * time.Second
	w.status.State, w.status.ActionState = engine.State(state), engine.State(cur)
	w.status.Started, w.status.ActionStarted = started.Time, aStarted.Time
	return &w, nil
}

// stepCache keeps the engine steps of recent workflows. A workflow's
// actions never change after creation, so an entry never goes stale; the
// cache only saves decoding the action list on every report.
type stepCache struct {
	mu sync.Mutex
	m  map[string][]engine.Step
}

// statusCache remembers the last status this server read or wrote of each
// recent workflow, as a guess that saves a read per report. It may be stale
// (another server, a timeout, a deletion): ReportAction never trusts it
// without the database confirming.
type statusCache struct {
	mu sync.Mutex
	m  map[string]*wfStatus
}

func (c *statusCache) get(id string) (*wfStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.m[id]
	if !ok {
		return nil, false
	}
	cp := *w
	return &cp, true
}

func (c *statusCache) put(w *wfStatus) {
	cp := *w
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= stepCacheSize {
		c.m = map[string]*wfStatus{}
	}
	c.m[w.id] = &cp
}

func (c *statusCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// stepCacheSize bounds the caches; when full they start over.
const stepCacheSize = 20000

func (c *stepCache) get(ctx context.Context, q querier, id string) ([]engine.Step, error) {
	c.mu.Lock()
	steps, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		return steps, nil
	}
	var raw []byte
	if err := q.QueryRowContext(ctx, `SELECT actions FROM workflow WHERE id = $1`, id).Scan(&raw); err != nil {
		return nil, fmt.Errorf("reading workflow %s actions: %w", id, err)
	}
	actions, err := unmarshalActions(raw)
	if err != nil {
		return nil, fmt.Errorf("workflow %s: %w", id, err)
	}
	steps = engine.Steps(actions)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= stepCacheSize {
		c.m = map[string][]engine.Step{}
	}
	c.m[id] = steps
	c.mu.Unlock()
	return steps, nil
}

// ReportAction applies a worker's report to its workflow. It reads the
// status, asks the engine, then saves the new status and its deadline and
// records the event in one statement that only applies if the status is
// still the one read (compare and swap); if another report won meanwhile,
// it decides again on the new status. So concurrent reports are applied one
// after the other and none is lost, with two statements per report and no
// row held locked across round trips. A resent report (identical to the one
// recorded) changes nothing and returns nil. A report the engine refuses
// returns an error wrapping both ErrPrecondition and the engine's sentinel
// (engine.ErrOutOfOrder, ...).
func (s *Store) ReportAction(ctx context.Context, r *workflow.WorkflowActionStatus) error {
	switch {
	case r.GetWorkflowId() == "":
		return fmt.Errorf("report without a workflow id: %w", ErrInvalid)
	case r.GetTaskName() == "":
		return fmt.Errorf("report for workflow %s without a task name: %w", r.GetWorkflowId(), ErrInvalid)
	case r.GetActionName() == "":
		return fmt.Errorf("report for workflow %s without an action name: %w", r.GetWorkflowId(), ErrInvalid)
	}
	id, err := parseID("workflow", r.GetWorkflowId())
	if err != nil {
		return err
	}
	// The last status this server saw is the first guess: the swap below
	// checks it, and a guess that does not move the workflow is checked
	// against the database before it is believed.
	w, cached := s.statuses.get(id)
	for range maxReportAttempts {
		if !cached {
			if w, err = readStatus(ctx, s.hot, id); err != nil {
				return err
			}
		}
		steps, err := s.steps.get(ctx, s.db, id)
		if err != nil {
			return err
		}
		// A machine that takes no part in the workflow learns nothing of
		// it, not even that it exists.
		if r.GetWorkerId() != "" && !slices.ContainsFunc(steps, func(st engine.Step) bool { return st.Worker == r.GetWorkerId() }) {
			return WorkflowNotFound(id)
		}
		now := clock()
		next, moved, err := engine.Apply(w.status, steps, engine.Report{
			Task: r.GetTaskName(), Action: r.GetActionName(), Worker: r.GetWorkerId(), State: r.GetActionStatus(),
		}, now)
		if cached && (!moved || err != nil || w.deletedAt.Valid) {
			cached = false
			continue
		}
		if w.deletedAt.Valid {
			return fmt.Errorf("workflow %s was deleted: %w", id, ErrPrecondition)
		}
		if err != nil {
			return fmt.Errorf("workflow %s: %w (%w)", id, err, ErrPrecondition)
		}
		if !moved {
			s.statuses.put(w)
			return nil
		}
		var swapped bool
		if _, set := engine.NetbootChange(w.status.State, next.State); set && w.toggle {
			swapped, err = s.advanceNetboot(ctx, id, steps, w.global, w.status, next, now, r.GetWorkerId(), r.GetSeconds(), r.GetMessage())
		} else {
			swapped, err = advance(ctx, s.hot, id, steps, w.global, w.status, next, now, r.GetWorkerId(), r.GetSeconds(), r.GetMessage())
		}
		if err != nil {
			s.statuses.drop(id)
			return err
		}
		if swapped {
			w.status = next
			s.statuses.put(w)
			s.announce.workflow(id)
			return nil
		}
		cached = false
	}
	s.statuses.drop(id)
	return fmt.Errorf("workflow %s: its status kept changing under %d attempts; report again: %w",
		r.GetWorkflowId(), maxReportAttempts, ErrPrecondition)
}

// maxReportAttempts bounds how often a report is decided again because
// another report changed the workflow first. Each retry means some other
// report was applied, so a workflow of n actions needs at most 2n+1.
const maxReportAttempts = 16

// advance saves a new engine status, the deadline that follows and the
// event that records the step, in one statement, provided the workflow is
// live and still at status from (compare and swap). It reports whether it
// applied. The event is inserted under the row lock the update takes, so
// event ids of a workflow grow in the order its status changed.
func advance(ctx context.Context, db execer, id string, steps []engine.Step, global time.Duration,
	from, next engine.Status, now time.Time, worker string, seconds int64, message string) (bool, error) {
	var deadline sql.NullTime
	if d, ok := engine.Deadline(next, steps, global); ok {
		deadline = sql.NullTime{Time: d, Valid: true}
	}
	st := steps[next.Index]
	res, err := db.ExecContext(ctx, advanceSQL,
		id, int32(next.State), next.Index, int32(next.ActionState),
		nullTime(next.Started), nullTime(next.ActionStarted), deadline, now,
		worker, st.Task, st.Name, seconds, message,
		int32(from.State), from.Index, int32(from.ActionState))
	if err != nil {
		return false, fmt.Errorf("saving workflow %s status: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("saving workflow %s status: %w", id, err)
	}
	return n == 1, nil
}

// advanceNetboot is advance for a change that switches the workflow's
// netboot (its end with SUCCESS): the new status, its event and the
// hardware changes commit together, or none does.
func (s *Store) advanceNetboot(ctx context.Context, id string, steps []engine.Step, global time.Duration,
	from, next engine.Status, now time.Time, worker string, seconds int64, message string) (bool, error) {
	var (
		swapped bool
		notes   []netbootNote
	)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		swapped, notes = false, nil
		ok, err := advance(ctx, tx, id, steps, global, from, next, now, worker, seconds, message)
		if err != nil || !ok {
			return err
		}
		swapped = true
		notes, err = netbootAfter(ctx, tx, id, from.State, next.State, now)
		return err
	})
	if err != nil {
		return false, err
	}
	s.logNetboot(ctx, id, notes)
	return swapped, nil
}

// advanceSQL is advance's statement; prepared once per connection (see
// Store.prepared), as reports are the hot path.
const advanceSQL = `
	WITH status AS (
		UPDATE workflow SET state = $2, current_index = $3, current_state = $4,
			started_at = $5, action_started_at = $6, deadline = $7, updated_at = $8
		WHERE id = $1 AND deleted_at IS NULL AND state = $14 AND current_index = $15 AND current_state = $16
		RETURNING id)
	INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, action_index, state, seconds, message, created_at)
	SELECT id, $9, $10, $11, $3, $4, $12, $13, $8 FROM status`

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}
