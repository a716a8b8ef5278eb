package store

// The server's own decisions: timeouts enforced when a worker is gone.

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/herd-metal/herd/services/server/internal/engine"
)

// expireBatch bounds the rows one ExpireWorkflows transaction locks.
const expireBatch = 100

// ExpireWorkflows ends with TIMEOUT every running workflow whose action or
// global deadline has passed at now: the server's enforcement when a worker
// is gone. Rows another transaction holds are skipped (they are being
// changed; the next call sees them). It returns how many workflows it
// ended; each gets an event saying which timeout fired.
func (s *Store) ExpireWorkflows(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		n, seen, err := s.expireBatch(ctx, now)
		total += n
		if err != nil || seen < expireBatch {
			return total, err
		}
	}
}

// expiry is one workflow ExpireWorkflows ended, for the log.
type expiry struct {
	id, worker, reason string
	netboot            []netbootNote
}

// expireBatch locks up to expireBatch due workflows (seen) and ends those
// whose deadline really passed (expired).
func (s *Store) expireBatch(ctx context.Context, now time.Time) (expired, seen int, err error) {
	var ended []expiry
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		ended, seen = nil, 0
		rows, err := tx.QueryContext(ctx, `
			SELECT `+wfColumns+` FROM workflow
			WHERE deadline <= $1 AND deleted_at IS NULL
			ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED`, now, expireBatch)
		if err != nil {
			return fmt.Errorf("finding expired workflows: %w", err)
		}
		var due []*wfRow
		for rows.Next() {
			w, err := scanWorkflow(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("finding expired workflows: %w", err)
			}
			due = append(due, w)
		}
		if err := closeRows(rows); err != nil {
			return fmt.Errorf("finding expired workflows: %w", err)
		}
		seen = len(due)
		for _, w := range due {
			steps := w.steps()
			next, ok := engine.Expire(w.status, steps, w.global, now)
			if !ok {
				// The stored deadline was stale: store the right one (or
				// none) so the row is not picked again before it is due.
				var d sql.NullTime
				if t, ok := engine.Deadline(w.status, steps, w.global); ok && t.After(now) {
					d = sql.NullTime{Time: t, Valid: true}
				}
				if _, err := tx.ExecContext(ctx, `UPDATE workflow SET deadline = $2 WHERE id = $1`, w.id, d); err != nil {
					return fmt.Errorf("fixing workflow %s deadline: %w", w.id, err)
				}
				continue
			}
			reason := engine.ExpireReason(w.status, steps, w.global, now)
			var seconds int64
			if next.Index == w.status.Index && w.status.ActionState == engine.Running {
				seconds = int64(now.Sub(w.status.ActionStarted) / time.Second)
			}
			st := steps[next.Index]
			// The row is locked: the swap cannot miss.
			if _, err := advance(ctx, tx, w.id, steps, w.global, w.status, next, now, st.Worker, seconds, reason); err != nil {
				return err
			}
			// TIMEOUT leaves netboot on today; should that change, the
			// switch commits with the state.
			var notes []netbootNote
			if w.toggle {
				if notes, err = netbootAfter(ctx, tx, w.id, w.status.State, next.State, now); err != nil {
					return err
				}
			}
			ended = append(ended, expiry{id: w.id, worker: st.Worker, reason: reason, netboot: notes})
		}
		return nil
	})
	if err != nil {
		return 0, seen, err
	}
	for _, e := range ended {
		s.announce.workflow(e.id)
		s.log.WarnContext(ctx, "workflow timed out", "workflow_id", e.id, "hardware_id", e.worker, "reason", e.reason)
		s.logNetboot(ctx, e.id, e.netboot)
	}
	return len(ended), seen, nil
}
