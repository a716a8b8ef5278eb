package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// BootEventIndex is the action_index of boot notes in workflow_event: they
// belong to no action.
const BootEventIndex = -1

// RecordBootEvent adds a boot progress note to the events of the newest
// live, unfinished workflow the machine hwID takes part in, and returns that
// workflow's id ("" when there is none: nothing is recorded then).
func (s *Store) RecordBootEvent(ctx context.Context, hwID, message string) (string, error) {
	hwID, err := parseID("hardware", hwID)
	if err != nil {
		return "", err
	}
	var id string
	err = s.db.QueryRowContext(ctx, `
		WITH target AS (
			SELECT w.id FROM workflow w JOIN workflow_worker ww ON ww.workflow_id = w.id
			WHERE ww.worker_id = $1 AND w.deleted_at IS NULL AND w.state IN (0, 1)
			ORDER BY w.created_at DESC, w.id LIMIT 1)
		INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, action_index, state, message)
		SELECT id, $1, 'boot', 'boot', $2, 1, $3 FROM target
		RETURNING workflow_id`, hwID, BootEventIndex, message).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("recording boot event of hardware %s: %w", hwID, err)
	}
	s.announce.workflow(id)
	return id, nil
}
