package store

// BMC jobs: created by the API and the power poll, taken and reported by
// herd-bmc, ended TIMEOUT by the server at their deadline.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/herd-metal/herd/proto/hardware"
)

// The job states, as stored.
const (
	JobPending = "PENDING"
	JobRunning = "RUNNING"
	JobSuccess = "SUCCESS"
	JobFailed  = "FAILED"
	JobTimeout = "TIMEOUT"
)

// The job kinds, as stored.
const (
	JobPowerStatus = "power-status"
	JobPower       = "power"
	JobBootDevice  = "bootdev"
	JobNetboot     = "netboot"
)

// JobFinal reports whether a job in state has ended.
func JobFinal(state string) bool {
	return state == JobSuccess || state == JobFailed || state == JobTimeout
}

// BMCJob is one job's record.
type BMCJob struct {
	ID         string
	HardwareID string
	Kind       string
	Action     string
	Persistent bool
	EFI        bool
	Origin     string // operator, workflow, poll
	WorkflowID string
	State      string
	Attempts   []JobAttempt
	Answer     string
	Message    string
	Agent      string
	Taken      bool
	Deadline   time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// JobAttempt is one try of a job, as herd-bmc reports it.
type JobAttempt struct {
	N     int       `json:"n"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
	Error string    `json:"error,omitempty"`
}

const jobColumns = `id, hardware_id, kind, action, persistent, efi, origin,
	coalesce(workflow_id::text, ''), state, attempts, answer, message, agent,
	taken_at IS NOT NULL, deadline, created_at, updated_at`

func scanJob(sc scanner) (BMCJob, error) {
	var j BMCJob
	var attempts []byte
	err := sc.Scan(&j.ID, &j.HardwareID, &j.Kind, &j.Action, &j.Persistent, &j.EFI, &j.Origin,
		&j.WorkflowID, &j.State, &attempts, &j.Answer, &j.Message, &j.Agent,
		&j.Taken, &j.Deadline, &j.CreatedAt, &j.UpdatedAt)
	if err != nil {
		return j, err
	}
	if err := json.Unmarshal(attempts, &j.Attempts); err != nil {
		return j, fmt.Errorf("job %s: stored attempts: %w", j.ID, err)
	}
	return j, nil
}

// CreateBMCJob records a PENDING job for the BMC of j.HardwareID, which
// must exist and have a BMC with a stored credential; j.WorkflowID, when
// set, must be a live workflow that machine takes part in. The job ends
// TIMEOUT if it has not ended by j.Deadline.
func (s *Store) CreateBMCJob(ctx context.Context, j BMCJob) (BMCJob, error) {
	hwID, err := parseID("hardware", j.HardwareID)
	if err != nil {
		return BMCJob{}, err
	}
	var wf sql.NullString
	if j.WorkflowID != "" {
		id, err := parseID("workflow", j.WorkflowID)
		if err != nil {
			return BMCJob{}, err
		}
		wf = sql.NullString{String: id, Valid: true}
	}
	var out BMCJob
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var cred sql.NullString
		err := tx.QueryRowContext(ctx, "SELECT bmc_credential FROM hardware WHERE id = $1 FOR SHARE", hwID).Scan(&cred)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("hardware %s: %w", hwID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("bmc job for hardware %s: %w", hwID, err)
		}
		if !cred.Valid {
			return fmt.Errorf("hardware %s has no BMC: give its record a bmc (address, protocol, credential) first: %w", hwID, ErrPrecondition)
		}
		if wf.Valid {
			var n int
			if err := tx.QueryRowContext(ctx, `
				SELECT count(*) FROM workflow w JOIN workflow_worker ww ON ww.workflow_id = w.id
				WHERE w.id = $1 AND ww.worker_id = $2 AND w.deleted_at IS NULL`, wf.String, hwID).Scan(&n); err != nil {
				return fmt.Errorf("bmc job for workflow %s: %w", wf.String, err)
			}
			if n == 0 {
				return fmt.Errorf("workflow %s is not a live workflow of hardware %s: %w", wf.String, hwID, ErrPrecondition)
			}
		}
		out, err = scanJob(tx.QueryRowContext(ctx, `
			INSERT INTO bmc_job (id, hardware_id, bmc_key, kind, action, persistent, efi, origin, workflow_id, deadline)
			SELECT $1, $2, bmc_key(data), $3, $4, $5, $6, $7, $8, $9 FROM hardware WHERE id = $2
			RETURNING `+jobColumns,
			uuid.NewString(), hwID, j.Kind, j.Action, j.Persistent, j.EFI, j.Origin, wf, j.Deadline))
		if err != nil {
			return fmt.Errorf("bmc job for hardware %s: %w", hwID, err)
		}
		if err := jobEvent(ctx, tx, out, "queued"); err != nil {
			return err
		}
		return notify(ctx, tx, ChannelBMCJob, out.ID)
	})
	return out, err
}

// BMCJob returns one job.
func (s *Store) BMCJob(ctx context.Context, id string) (BMCJob, error) {
	id, err := parseID("job", id)
	if err != nil {
		return BMCJob{}, err
	}
	j, err := scanJob(s.db.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM bmc_job WHERE id = $1", id))
	if errors.Is(err, sql.ErrNoRows) {
		return BMCJob{}, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return BMCJob{}, fmt.Errorf("job %s: %w", id, err)
	}
	return j, nil
}

// ListBMCJobs returns up to limit jobs, newest first, of hwID or of every
// machine when hwID is "".
func (s *Store) ListBMCJobs(ctx context.Context, hwID string, limit int) ([]BMCJob, error) {
	var rows *sql.Rows
	var err error
	if hwID == "" {
		rows, err = s.db.QueryContext(ctx, "SELECT "+jobColumns+" FROM bmc_job ORDER BY created_at DESC, id LIMIT $1", limit)
	} else {
		if hwID, err = parseID("hardware", hwID); err != nil {
			return nil, err
		}
		rows, err = s.db.QueryContext(ctx, "SELECT "+jobColumns+" FROM bmc_job WHERE hardware_id = $1 ORDER BY created_at DESC, id LIMIT $2", hwID, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	defer rows.Close()
	var out []BMCJob
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("listing jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// TakeBMCJob hands agent the oldest job nobody took yet whose BMC has no
// other job taken and unfinished (one job per BMC at a time, whichever
// herd-bmc runs it), with its machine's record (for the BMC's address)
// and the name of the BMC credential to open. found is false when no job
// can start. Jobs whose deadline passed are left to ExpireBMCJobs.
//
// Two takers in the same instant may each take a job of one idle BMC
// (neither sees the other's uncommitted take); herd-bmc's own scheduler
// still runs one per BMC, so only two herd-bmc at once could overlap.
func (s *Store) TakeBMCJob(ctx context.Context, agent string, now time.Time) (j BMCJob, hw *hardware.Hardware, credential string, found bool, err error) {
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		found = false
		j, err = scanJob(tx.QueryRowContext(ctx, `
			UPDATE bmc_job SET taken_at = $2, agent = $1, updated_at = $2
			WHERE id = (
				SELECT j.id FROM bmc_job j
				WHERE j.state = 'PENDING' AND j.taken_at IS NULL AND j.deadline > $2
				AND NOT EXISTS (SELECT 1 FROM bmc_job b WHERE b.bmc_key = j.bmc_key
					AND b.taken_at IS NOT NULL AND b.state IN ('PENDING', 'RUNNING'))
				ORDER BY j.created_at, j.id LIMIT 1 FOR UPDATE SKIP LOCKED)
			RETURNING `+jobColumns, agent, now))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("taking a job: %w", err)
		}
		var data string
		var version int64
		var cred sql.NullString
		if err := tx.QueryRowContext(ctx, "SELECT data, version, bmc_credential FROM hardware WHERE id = $1",
			j.HardwareID).Scan(&data, &version, &cred); err != nil {
			return fmt.Errorf("job %s: its hardware %s: %w", j.ID, j.HardwareID, err)
		}
		if hw, err = decodeHardware(data, version); err != nil {
			return err
		}
		credential, found = cred.String, true
		return jobEvent(ctx, tx, j, "taken by "+agent)
	})
	return j, hw, credential, found, err
}

// JobReport is a job's state as herd-bmc reports it.
type JobReport struct {
	ID       string
	Agent    string
	State    string
	Attempts []JobAttempt
	Answer   string
	Message  string
}

// ReportBMCJob records a state of a job that r.Agent took: RUNNING while
// it is unfinished, or its final state once. A job already ended (the
// server's timeout came first, or a repeated final report) is refused with
// ErrPrecondition, and so is a job another agent took. A status job's
// answer, and the state a power change leaves, become the machine's power
// state.
func (s *Store) ReportBMCJob(ctx context.Context, r JobReport, now time.Time) (BMCJob, error) {
	id, err := parseID("job", r.ID)
	if err != nil {
		return BMCJob{}, err
	}
	attempts, err := json.Marshal(r.Attempts)
	if err != nil {
		return BMCJob{}, err
	}
	var out BMCJob
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		cur, err := scanJob(tx.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM bmc_job WHERE id = $1 FOR UPDATE", id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		switch {
		case !cur.Taken || cur.Agent != r.Agent:
			return fmt.Errorf("job %s was not taken by agent %q: %w", id, r.Agent, ErrPrecondition)
		case JobFinal(cur.State):
			return fmt.Errorf("job %s has already ended %s: %w", id, cur.State, ErrPrecondition)
		case cur.Kind == JobPowerStatus && r.State == JobSuccess && r.Answer != "on" && r.Answer != "off":
			return fmt.Errorf("job %s: a power status answer is on or off, not %q: %w", id, r.Answer, ErrInvalid)
		}
		out, err = scanJob(tx.QueryRowContext(ctx, `
			UPDATE bmc_job SET state = $2, attempts = $3, answer = $4, message = $5, updated_at = $6
			WHERE id = $1 RETURNING `+jobColumns, id, r.State, string(attempts), r.Answer, r.Message, now))
		if err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		if err := jobPower(ctx, tx, out, now); err != nil {
			return err
		}
		if err := jobEvent(ctx, tx, out, ""); err != nil {
			return err
		}
		return notify(ctx, tx, ChannelBMCJob, id)
	})
	return out, err
}

// powerAfter is the power state a successful job leaves the machine in
// ("" when it says nothing of it).
func powerAfter(j BMCJob) string {
	switch {
	case j.State != JobSuccess:
		return ""
	case j.Kind == JobPowerStatus:
		return j.Answer
	case j.Kind == JobNetboot, j.Kind == JobPower && j.Action != "off":
		return "on"
	case j.Kind == JobPower:
		return "off"
	}
	return ""
}

// jobPower records what a finished job says of its machine's power: the
// state it learned or left, or, for a failed status check, why not.
func jobPower(ctx context.Context, tx *sql.Tx, j BMCJob, now time.Time) error {
	var err error
	switch state := powerAfter(j); {
	case state != "":
		_, err = tx.ExecContext(ctx, `UPDATE hardware SET power_state = $2, power_checked_at = $3, power_error = ''
			WHERE id = $1`, j.HardwareID, state, now)
	case j.Kind == JobPowerStatus && JobFinal(j.State):
		_, err = tx.ExecContext(ctx, `UPDATE hardware SET power_checked_at = $2, power_error = $3
			WHERE id = $1`, j.HardwareID, now, j.State+": "+j.Message)
	}
	if err != nil {
		return fmt.Errorf("job %s: recording the power state of hardware %s: %w", j.ID, j.HardwareID, err)
	}
	return nil
}

// jobEventState maps a job's state to the workflow event state it is
// shown with (Tinkerbell v0.6's numbers: 1 running, 2 failed, 3 timeout,
// 4 success).
var jobEventState = map[string]int{JobPending: 1, JobRunning: 1, JobFailed: 2, JobTimeout: 3, JobSuccess: 4}

// jobEvent adds the job's step to the events of the workflow it starts,
// if any: "bmc netboot RUNNING (attempt 1)".
func jobEvent(ctx context.Context, tx *sql.Tx, j BMCJob, note string) error {
	if j.WorkflowID == "" {
		return nil
	}
	msg := "bmc " + j.Kind + " " + j.State
	switch {
	case note != "":
		msg += ": " + note
	case j.Message != "":
		msg += ": " + j.Message
	case j.Answer != "":
		msg += ": " + j.Answer
	}
	if n := len(j.Attempts); n > 0 && !JobFinal(j.State) {
		msg += fmt.Sprintf(" (attempt %d)", j.Attempts[n-1].N)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, action_index, state, message)
		VALUES ($1, $2, 'bmc', $3, $4, $5, $6)`,
		j.WorkflowID, j.HardwareID, j.Kind, BootEventIndex, jobEventState[j.State], msg); err != nil {
		return fmt.Errorf("job %s: event of workflow %s: %w", j.ID, j.WorkflowID, err)
	}
	return notify(ctx, tx, ChannelWorkflow, j.WorkflowID)
}

// ExpireBMCJobs ends TIMEOUT every unfinished job whose deadline passed
// at now, saying why: no herd-bmc took it, or the one that took it never
// finished it. It returns the jobs it ended.
func (s *Store) ExpireBMCJobs(ctx context.Context, now time.Time) ([]BMCJob, error) {
	var ended []BMCJob
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		ended = nil
		rows, err := tx.QueryContext(ctx, `
			UPDATE bmc_job SET state = 'TIMEOUT', updated_at = $1, message = CASE
				WHEN taken_at IS NULL THEN 'no herd-bmc took the job before its deadline: is herd-bmc running and connected to herd-server?'
				ELSE 'herd-bmc ' || agent || ' took the job at ' || to_char(taken_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ' and did not finish it before its deadline'
			END
			WHERE id IN (
				SELECT id FROM bmc_job WHERE state IN ('PENDING', 'RUNNING') AND deadline <= $1
				ORDER BY deadline LIMIT 100 FOR UPDATE SKIP LOCKED)
			RETURNING `+jobColumns, now)
		if err != nil {
			return fmt.Errorf("expiring jobs: %w", err)
		}
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("expiring jobs: %w", err)
			}
			ended = append(ended, j)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("expiring jobs: %w", err)
		}
		for _, j := range ended {
			if err := jobPower(ctx, tx, j, now); err != nil {
				return err
			}
			if err := jobEvent(ctx, tx, j, ""); err != nil {
				return err
			}
			if err := notify(ctx, tx, ChannelBMCJob, j.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return ended, err
}

// powerPollLock is the advisory lock key of QueuePowerPolls ("herdpoll").
const powerPollLock int64 = 0x68657264706f6c6c

// QueuePowerPolls adds a status job, ending TIMEOUT at deadline, for every
// machine with a BMC that has no unfinished status job, and removes the
// poll's finished jobs older than keepSince (the record keeps the state
// they learned). It returns how many jobs it queued.
func (s *Store) QueuePowerPolls(ctx context.Context, deadline, keepSince time.Time) (int, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Replicas poll each on their own clock: the lock makes their
		// rounds take turns, so the second sees the first's jobs and
		// queues none twice.
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", powerPollLock); err != nil {
			return fmt.Errorf("queueing power polls: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM bmc_job WHERE origin = 'poll'
			AND state IN ('SUCCESS', 'FAILED', 'TIMEOUT') AND updated_at < $1`, keepSince); err != nil {
			return fmt.Errorf("pruning poll jobs: %w", err)
		}
		res, err := tx.ExecContext(ctx, `
			INSERT INTO bmc_job (id, hardware_id, bmc_key, kind, origin, deadline)
			SELECT gen_random_uuid(), h.id, bmc_key(h.data), 'power-status', 'poll', $1 FROM hardware h
			WHERE h.bmc_credential IS NOT NULL AND NOT EXISTS (
				SELECT 1 FROM bmc_job j WHERE j.hardware_id = h.id
				AND j.kind = 'power-status' AND j.state IN ('PENDING', 'RUNNING'))`, deadline)
		if err != nil {
			return fmt.Errorf("queueing power polls: %w", err)
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if n > 0 {
			return notify(ctx, tx, ChannelBMCJob, "")
		}
		return nil
	})
	return int(n), err
}

// MachinePower is the power state last learned of a machine with a BMC.
type MachinePower struct {
	HardwareID string
	State      string // on, off, "" (not known yet)
	CheckedAt  time.Time
	Error      string
}

// PowerStates lists every machine with a BMC and its last known power.
func (s *Store) PowerStates(ctx context.Context) ([]MachinePower, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, power_state, power_checked_at, power_error
		FROM hardware WHERE bmc_credential IS NOT NULL ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("listing power states: %w", err)
	}
	defer rows.Close()
	var out []MachinePower
	for rows.Next() {
		var p MachinePower
		var at sql.NullTime
		if err := rows.Scan(&p.HardwareID, &p.State, &at, &p.Error); err != nil {
			return nil, fmt.Errorf("listing power states: %w", err)
		}
		p.CheckedAt = at.Time
		out = append(out, p)
	}
	return out, rows.Err()
}
