package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// BootEventIndex is the action_index of boot notes in workflow_event: they
// belong to no action.
const BootEventIndex = -1

// NotesAfterEnd is how long after its workflow's end a machine's notes
// still go on that workflow: the installed OS's first boot (its DHCP, its
// metadata read) belongs to the provisioning's timeline.
const NotesAfterEnd = time.Hour

// RecordBootEvent adds a progress note to the events of the machine hwID's
// newest live, unfinished workflow; when it has none, to its newest
// workflow that ended less than NotesAfterEnd ago, once per message text
// after the end (a machine rebooting or renewing makes no pile of notes on
// a finished workflow). It returns that workflow's id ("" when there is
// none: nothing is recorded then).
func (s *Store) RecordBootEvent(ctx context.Context, hwID, message string) (string, error) {
	hwID, err := parseID("hardware", hwID)
	if err != nil {
		return "", err
	}
	var id string
	// A finished workflow's updated_at is its end: nothing writes its row
	// after that.
	err = s.db.QueryRowContext(ctx, `
		WITH candidate AS (
			SELECT w.id, w.state IN (0, 1) AS running, w.updated_at AS ended
			FROM workflow w JOIN workflow_worker ww ON ww.workflow_id = w.id
			WHERE ww.worker_id = $1 AND w.deleted_at IS NULL
				AND (w.state IN (0, 1) OR w.updated_at > now() - $4 * interval '1 second')
			ORDER BY running DESC, w.created_at DESC, w.id LIMIT 1),
		target AS (
			SELECT c.id FROM candidate c WHERE c.running OR NOT EXISTS (
				SELECT 1 FROM workflow_event e WHERE e.workflow_id = c.id
				AND e.action_index = $2 AND e.message = $3 AND e.created_at >= c.ended))
		INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, action_index, state, message)
		SELECT id, $1, 'boot', 'boot', $2, 1, $3 FROM target
		RETURNING workflow_id`, hwID, BootEventIndex, message, int64(NotesAfterEnd/time.Second)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("recording boot event of hardware %s: %w", hwID, err)
	}
	s.announce.workflow(id)
	return id, nil
}
