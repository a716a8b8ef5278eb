package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lib/pq"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

// MaxLogLines is how many output lines the store keeps of one action; it
// counts the rest as dropped.
const MaxLogLines = 10000

// logChunk is how many lines ShowActionLogs puts in one message.
const logChunk = 500

// AppendActionLogs stores output lines of one action of a workflow, once
// per batch id (a batch without one is stored each time it comes). worker,
// when not "", is the machine sending them: it must be the one that runs
// the action (a machine outside the workflow gets ErrNotFound, as for
// reports). Lines beyond MaxLogLines per action are counted, not stored.
func (s *Store) AppendActionLogs(ctx context.Context, l *workflow.ActionLogs, worker string) error {
	id, err := parseID("workflow", l.GetWorkflowId())
	if err != nil {
		return err
	}
	steps, err := s.steps.get(ctx, s.db, id)
	if err != nil {
		if _, e := workflowExists(ctx, s.db, id); e != nil {
			return e
		}
		return err
	}
	step, found := engine.Step{}, false
	for _, st := range steps {
		if st.Task == l.GetTaskName() && st.Name == l.GetActionName() {
			step, found = st, true
			break
		}
	}
	participates := worker == ""
	for _, st := range steps {
		participates = participates || st.Worker == worker
	}
	switch {
	case !participates:
		return WorkflowNotFound(id)
	case !found:
		return fmt.Errorf("workflow %s has no action %q in task %q: %w", id, l.GetActionName(), l.GetTaskName(), ErrNotFound)
	case worker != "" && step.Worker != worker:
		return fmt.Errorf("workflow %s: action %q of task %q runs on another machine: %w", id, step.Name, step.Task, ErrPrecondition)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if b := l.GetBatchId(); b != "" {
			res, err := tx.ExecContext(ctx, `INSERT INTO workflow_log_batch (workflow_id, batch_id) VALUES ($1, $2)
				ON CONFLICT DO NOTHING`, id, b)
			if err != nil {
				return fmt.Errorf("workflow %s logs: %w", id, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("workflow %s logs: %w", id, err)
			} else if n == 0 {
				return nil // a retry of a batch already stored
			}
		}
		var stored int
		err := tx.QueryRowContext(ctx, `
			INSERT INTO workflow_log_count (workflow_id, task_name, action_name) VALUES ($1, $2, $3)
			ON CONFLICT (workflow_id, task_name, action_name) DO UPDATE SET stored = workflow_log_count.stored
			RETURNING stored`, id, step.Task, step.Name).Scan(&stored)
		if err != nil {
			return fmt.Errorf("workflow %s logs: %w", id, err)
		}
		lines := l.GetLines()
		keep := min(len(lines), max(0, MaxLogLines-stored))
		if keep > 0 {
			at, stream, text := make([]string, keep), make([]string, keep), make([]string, keep)
			for i, ln := range lines[:keep] {
				t := time.Now()
				if ln.GetTime() != nil {
					t = ln.GetTime().AsTime()
				}
				at[i], stream[i], text[i] = t.UTC().Format(time.RFC3339Nano), ln.GetStream(), ln.GetText()
			}
			if _, err := tx.ExecContext(ctx, `
				INSERT INTO workflow_log (workflow_id, task_name, action_name, at, stream, line)
				SELECT $1, $2, $3, a, s, t FROM unnest($4::timestamptz[], $5::text[], $6::text[]) AS u(a, s, t)`,
				id, step.Task, step.Name, pq.Array(at), pq.Array(stream), pq.Array(text)); err != nil {
				return fmt.Errorf("workflow %s logs: %w", id, err)
			}
		}
		_, err = tx.ExecContext(ctx, `
			UPDATE workflow_log_count SET stored = stored + $4, dropped = dropped + $5
			WHERE workflow_id = $1 AND task_name = $2 AND action_name = $3`,
			id, step.Task, step.Name, keep, len(lines)-keep)
		if err != nil {
			return fmt.Errorf("workflow %s logs: %w", id, err)
		}
		return nil
	})
}

// ActionLogs calls fn with the stored lines of a workflow's actions, in
// action order, a chunk at a time; task and action ("" = all) narrow it.
// An action whose lines were dropped ends with a line from "herd" saying
// how many.
func (s *Store) ActionLogs(ctx context.Context, workflowID, task, action string, fn func(*workflow.ActionLogs) error) error {
	id, err := workflowExists(ctx, s.db, workflowID)
	if err != nil {
		return err
	}
	steps, err := s.steps.get(ctx, s.db, id)
	if err != nil {
		return err
	}
	for _, st := range steps {
		if (task != "" && st.Task != task) || (action != "" && st.Name != action) {
			continue
		}
		if err := s.actionLogs(ctx, id, st, fn); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) actionLogs(ctx context.Context, id string, st engine.Step, fn func(*workflow.ActionLogs) error) error {
	var dropped int
	err := s.db.QueryRowContext(ctx, `SELECT dropped FROM workflow_log_count
		WHERE workflow_id = $1 AND task_name = $2 AND action_name = $3`, id, st.Task, st.Name).Scan(&dropped)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workflow %s logs: %w", id, err)
	}
	var last int64
	for {
		rows, err := s.db.QueryContext(ctx, `
			SELECT id, at, stream, line FROM workflow_log
			WHERE workflow_id = $1 AND task_name = $2 AND action_name = $3 AND id > $4
			ORDER BY id LIMIT $5`, id, st.Task, st.Name, last, logChunk)
		if err != nil {
			return fmt.Errorf("workflow %s logs: %w", id, err)
		}
		msg := &workflow.ActionLogs{WorkflowId: id, TaskName: st.Task, ActionName: st.Name}
		for rows.Next() {
			var at time.Time
			ln := &workflow.LogLine{}
			if err := rows.Scan(&last, &at, &ln.Stream, &ln.Text); err != nil {
				rows.Close()
				return fmt.Errorf("workflow %s logs: %w", id, err)
			}
			ln.Time = timestamppb.New(at)
			msg.Lines = append(msg.Lines, ln)
		}
		if err := closeRows(rows); err != nil {
			return fmt.Errorf("workflow %s logs: %w", id, err)
		}
		end := len(msg.Lines) < logChunk
		if end && dropped > 0 {
			msg.Lines = append(msg.Lines, &workflow.LogLine{Time: timestamppb.Now(), Stream: "herd",
				Text: fmt.Sprintf("%d more lines dropped: the server keeps %d lines of an action", dropped, MaxLogLines)})
		}
		if len(msg.Lines) > 0 {
			if err := fn(msg); err != nil {
				return err
			}
		}
		if end {
			return nil
		}
	}
}
