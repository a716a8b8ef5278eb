package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

// CreateOptions are a workflow's settings beyond its template and devices.
type CreateOptions struct {
	// ToggleNetboot is the create request's choice of whether the server
	// switches the machines' netboot itself; nil leaves it to the template
	// (engine.ToggleNetboot).
	ToggleNetboot *bool
}

// CreateWorkflow renders a template (by id, or by name) for the machines in
// devices (template variable -> MAC or IP of a known machine) and stores the
// workflow, PENDING, with its action list and its workers, in one
// transaction. When the workflow toggles netboot (engine.ToggleNetboot of
// opt and the template), the same transaction sets allow_pxe on the
// records the devices name, announces them and records it in the
// workflow's events. Unknown template or machine -> ErrNotFound; a template
// that does not render or renders to something invalid -> ErrInvalid
// wrapping the spec error (errors.As finds its *spec.FieldError).
func (s *Store) CreateWorkflow(ctx context.Context, templateRef string, devices map[string]string, opt CreateOptions) (string, error) {
	if len(devices) == 0 {
		return "", fmt.Errorf("the hardware map is empty: name at least one device (e.g. {\"device_1\": \"08:00:27:00:00:01\"}): %w", ErrInvalid)
	}
	id := uuid.NewString()
	// A workflow that may toggle netboot changes the records it reads:
	// lock them for that from the start (upgrading a share lock would
	// deadlock two creations for the same machine).
	lock := "FOR NO KEY UPDATE OF h"
	if opt.ToggleNetboot != nil && !*opt.ToggleNetboot {
		lock = "FOR SHARE OF h"
	}
	var (
		workers []string
		toggle  bool
		notes   []netbootNote
	)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		notes = nil
		tplID, tplName, raw, err := templateForWorkflow(ctx, tx, templateRef)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(devices))
		for name := range devices {
			names = append(names, name)
		}
		sort.Strings(names)
		hw := make(map[string]*hardware.Hardware, len(devices))
		for _, name := range names {
			h, err := hardwareByAddress(ctx, tx, devices[name], lock)
			if err != nil {
				return fmt.Errorf("device %q: %w", name, err)
			}
			hw[name] = h
		}
		tpl, rendered, err := spec.RenderTemplate(raw, devices, hw)
		if err != nil {
			return fmt.Errorf("template %q (%s) does not render for this hardware map: %w (%w)", tplName, tplID, err, ErrInvalid)
		}
		actions, err := tpl.Actions(func(worker string) (string, error) {
			h, err := hardwareByAddress(ctx, tx, worker, "FOR SHARE OF h")
			if err != nil {
				return "", err
			}
			return h.GetId(), nil
		})
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("template %q (%s): a task's worker: %w", tplName, tplID, err)
			}
			return fmt.Errorf("template %q (%s): %w (%w)", tplName, tplID, err, ErrInvalid)
		}
		if len(actions) == 0 {
			return fmt.Errorf("template %q (%s) renders to no actions: %w", tplName, tplID, ErrInvalid)
		}
		actionsJSON, err := marshalActions(actions)
		if err != nil {
			return err
		}
		devicesJSON, err := json.Marshal(devices)
		if err != nil {
			return fmt.Errorf("encoding the hardware map: %w", err)
		}
		toggle = engine.ToggleNetboot(opt.ToggleNetboot, tpl.ToggleNetboot)
		var netbootIDs []string
		if toggle {
			netbootIDs = deviceRecords(hw)
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO workflow (id, template_id, hardware_map, rendered, actions, global_timeout, toggle_netboot, netboot_hardware)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8::uuid[])`,
			id, tplID, string(devicesJSON), rendered, string(actionsJSON), tpl.GlobalTimeout, toggle, stringArray(netbootIDs)); err != nil {
			return fmt.Errorf("inserting workflow: %w", err)
		}
		seen := map[string]bool{}
		for _, a := range actions {
			if seen[a.GetWorkerId()] {
				continue
			}
			seen[a.GetWorkerId()] = true
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO workflow_worker (workflow_id, worker_id) VALUES ($1, $2)`, id, a.GetWorkerId()); err != nil {
				return fmt.Errorf("inserting workflow worker %s: %w", a.GetWorkerId(), err)
			}
		}
		workers = slices.Sorted(maps.Keys(seen))
		if toggle {
			notes, err = switchNetboot(ctx, tx, id, netbootIDs, true, engine.Pending, clock())
		}
		return err
	})
	if err != nil {
		return "", err
	}
	s.announce.workflow(id)
	s.log.InfoContext(ctx, "workflow created", "workflow_id", id, "template", templateRef, "hardware_ids", workers,
		"toggle_netboot", toggle)
	s.logNetboot(ctx, id, notes)
	return id, nil
}

// deviceRecords returns the ids of the records in hw, sorted, each once
// (two devices may name the same machine).
func deviceRecords(hw map[string]*hardware.Hardware) []string {
	ids := make([]string, 0, len(hw))
	for _, h := range hw {
		if !slices.Contains(ids, h.GetId()) {
			ids = append(ids, h.GetId())
		}
	}
	slices.Sort(ids)
	return ids
}

// templateForWorkflow finds a live template by id, else by name, and locks
// it against deletion until the workflow is in.
func templateForWorkflow(ctx context.Context, tx *sql.Tx, ref string) (id, name, data string, err error) {
	if _, perr := uuid.Parse(ref); perr == nil {
		err = tx.QueryRowContext(ctx,
			`SELECT id, name, data FROM template WHERE id = $1 AND deleted_at IS NULL FOR SHARE`, ref).Scan(&id, &name, &data)
		if !errors.Is(err, sql.ErrNoRows) {
			if err != nil {
				return "", "", "", fmt.Errorf("reading template %s: %w", ref, err)
			}
			return id, name, data, nil
		}
	}
	err = tx.QueryRowContext(ctx,
		`SELECT id, name, data FROM template WHERE name = $1 AND deleted_at IS NULL FOR SHARE`, ref).Scan(&id, &name, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", "", fmt.Errorf("template %q: no template with that id or name: %w", ref, ErrNotFound)
	}
	if err != nil {
		return "", "", "", fmt.Errorf("reading template %q: %w", ref, err)
	}
	return id, name, data, nil
}

// hardwareByAddress finds the machine that claims addr (a MAC or an IP) and
// locks its record until the transaction ends: lock is "FOR SHARE OF h"
// (against deletion) or "FOR NO KEY UPDATE OF h" (to change it).
func hardwareByAddress(ctx context.Context, tx *sql.Tx, addr, lock string) (*hardware.Hardware, error) {
	kind, value, err := addressKey(addr)
	if err != nil {
		return nil, err
	}
	hw, err := scanHardware(tx.QueryRowContext(ctx, `
		SELECT `+hardwareColumns+` FROM hardware_address a JOIN hardware h ON h.id = a.hardware_id
		WHERE a.kind = $1 AND a.value = $2 `+lock, kind, value))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("no hardware has %s %s: %w", kind, value, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("hardware with %s %s: %w", kind, value, err)
	}
	return hw, nil
}

// addressKey classifies a device address the way hardware_address stores it.
func addressKey(addr string) (kind, value string, err error) {
	if mac, err := spec.NormalizeMAC(addr); err == nil {
		return "mac", mac, nil
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return "ip", ip.String(), nil
	}
	return "", "", fmt.Errorf("%q is neither a MAC nor an IP address: %w", addr, ErrInvalid)
}

func marshalActions(actions []*workflow.WorkflowAction) ([]byte, error) {
	list := make([]json.RawMessage, len(actions))
	for i, a := range actions {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("encoding action %d: %w", i, err)
		}
		list[i] = b
	}
	return json.Marshal(list)
}

func unmarshalActions(b []byte) ([]*workflow.WorkflowAction, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("decoding stored actions: %w", err)
	}
	actions := make([]*workflow.WorkflowAction, len(list))
	for i, raw := range list {
		a := &workflow.WorkflowAction{}
		if err := protojson.Unmarshal(raw, a); err != nil {
			return nil, fmt.Errorf("decoding stored action %d: %w", i, err)
		}
		actions[i] = a
	}
	return actions, nil
}

// wfRow is one workflow row as the engine and the API need it.
type wfRow struct {
	id, templateID, hardwareMap, rendered string
	actions                               []*workflow.WorkflowAction
	global                                time.Duration
	status                                engine.Status
	toggle                                bool // toggle_netboot
	createdAt, updatedAt                  time.Time
	deletedAt                             sql.NullTime
}

func (w *wfRow) steps() []engine.Step { return engine.Steps(w.actions) }

const wfColumns = `id, template_id, hardware_map, rendered, actions, global_timeout,
	state, current_index, current_state, started_at, action_started_at, toggle_netboot, created_at, updated_at, deleted_at`

type scanner interface{ Scan(dest ...any) error }

func scanWorkflow(sc scanner) (*wfRow, error) {
	var (
		w                 wfRow
		actions           []byte
		global            int64
		state, cur        int32
		index             int
		started, aStarted sql.NullTime
	)
	if err := sc.Scan(&w.id, &w.templateID, &w.hardwareMap, &w.rendered, &actions, &global,
		&state, &index, &cur, &started, &aStarted, &w.toggle, &w.createdAt, &w.updatedAt, &w.deletedAt); err != nil {
		return nil, err
	}
	var err error
	if w.actions, err = unmarshalActions(actions); err != nil {
		return nil, fmt.Errorf("workflow %s: %w", w.id, err)
	}
	w.global = time.Duration(global) * time.Second
	w.status = engine.Status{
		State: engine.State(state), Index: index, ActionState: engine.State(cur),
		Started: started.Time, ActionStarted: aStarted.Time,
	}
	return &w, nil
}

// getWorkflow reads one workflow; lock is "" or a locking clause.
func getWorkflow(ctx context.Context, q querier, id, lock string) (*wfRow, error) {
	id, err := parseID("workflow", id)
	if err != nil {
		return nil, err
	}
	w, err := scanWorkflow(q.QueryRowContext(ctx, `SELECT `+wfColumns+` FROM workflow WHERE id = $1 `+lock, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("workflow %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading workflow %s: %w", id, err)
	}
	return w, nil
}

// workflowExists checks that the workflow exists (deleted or not) and
// returns its id in canonical form.
func workflowExists(ctx context.Context, q querier, id string) (string, error) {
	id, err := parseID("workflow", id)
	if err != nil {
		return "", err
	}
	err = q.QueryRowContext(ctx, `SELECT id FROM workflow WHERE id = $1`, id).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("workflow %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading workflow %s: %w", id, err)
	}
	return id, nil
}

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// viewColumns are what a workflow's API view needs: not the actions,
// whose decoding cost ListWorkflows more than the query (10,000
// workflows: 330 ms with them).
const viewColumns = `id, template_id, hardware_map, rendered, state, toggle_netboot, created_at, updated_at, deleted_at`

// scanView reads viewColumns into the workflow the API returns.
func scanView(sc scanner) (*workflow.Workflow, error) {
	var (
		p                    workflow.Workflow
		state                int32
		createdAt, updatedAt time.Time
		deletedAt            sql.NullTime
	)
	if err := sc.Scan(&p.Id, &p.Template, &p.Hardware, &p.Data, &state, &p.ToggleNetboot, &createdAt, &updatedAt, &deletedAt); err != nil {
		return nil, err
	}
	p.State = workflow.State(state)
	p.CreatedAt, p.UpdatedAt = timestamppb.New(createdAt), timestamppb.New(updatedAt)
	if deletedAt.Valid {
		p.DeletedAt = timestamppb.New(deletedAt.Time)
	}
	return &p, nil
}

// GetWorkflow returns a workflow, deleted or not (DeletedAt says which).
// State is the workflow's state as the engine sees it, Data the rendered
// template, Hardware the hardware map as given at creation.
func (s *Store) GetWorkflow(ctx context.Context, id string) (*workflow.Workflow, error) {
	id, err := parseID("workflow", id)
	if err != nil {
		return nil, err
	}
	w, err := scanView(s.db.QueryRowContext(ctx, `SELECT `+viewColumns+` FROM workflow WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("workflow %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading workflow %s: %w", id, err)
	}
	return w, nil
}

// workflowPage is how many workflows ListWorkflows reads per query.
const workflowPage = 500

// ListWorkflows calls fn for every workflow not deleted, oldest first, and
// stops at fn's first error, which it returns. Workflows are read a page at
// a time and no query is open while fn runs.
func (s *Store) ListWorkflows(ctx context.Context, fn func(*workflow.Workflow) error) error {
	afterTime, afterID := time.Time{}, uuid.Nil.String()
	for {
		page, err := s.workflowPage(ctx, afterTime, afterID)
		if err != nil {
			return err
		}
		for _, w := range page {
			if err := fn(w); err != nil {
				return err
			}
		}
		if len(page) < workflowPage {
			return nil
		}
		last := page[len(page)-1]
		afterTime, afterID = last.GetCreatedAt().AsTime(), last.GetId()
	}
}

func (s *Store) workflowPage(ctx context.Context, afterTime time.Time, afterID string) ([]*workflow.Workflow, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT `+viewColumns+` FROM workflow
		WHERE deleted_at IS NULL AND (created_at, id) > ($1, $2::uuid)
		ORDER BY created_at, id LIMIT $3`, afterTime, afterID, workflowPage)
	if err != nil {
		return nil, fmt.Errorf("list workflows: %w", err)
	}
	var page []*workflow.Workflow
	for rows.Next() {
		w, err := scanView(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("list workflows: %w", err)
		}
		page = append(page, w)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("list workflows: %w", err)
	}
	return page, nil
}

// DeleteWorkflow marks a workflow deleted: it stays readable, no longer
// offered to workers, refuses reports and data, and never times out.
func (s *Store) DeleteWorkflow(ctx context.Context, id string) error {
	id, err := parseID("workflow", id)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
			UPDATE workflow SET deleted_at = now(), updated_at = now(), deadline = NULL
			WHERE id = $1 AND deleted_at IS NULL`, id)
		if err != nil {
			return fmt.Errorf("deleting workflow %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("deleting workflow %s: %w", id, err)
		} else if n == 0 {
			return fmt.Errorf("workflow %s (or it is already deleted): %w", id, ErrNotFound)
		}
		return nil
	})
	if err == nil {
		s.announce.workflow(id)
	}
	return err
}

// WorkflowContext returns where a workflow stands, as Tinkerbell v0.6
// workers expect it.
func (s *Store) WorkflowContext(ctx context.Context, id string) (*workflow.WorkflowContext, error) {
	w, err := getWorkflow(ctx, s.db, id, "")
	if err != nil {
		return nil, err
	}
	return engine.Context(w.id, w.status, w.steps()), nil
}

// WorkflowActions returns a workflow's actions in execution order.
func (s *Store) WorkflowActions(ctx context.Context, id string) (*workflow.WorkflowActionList, error) {
	w, err := getWorkflow(ctx, s.db, id, "")
	if err != nil {
		return nil, err
	}
	return &workflow.WorkflowActionList{ActionList: w.actions}, nil
}

// WorkflowWorkers returns the hardware ids of the machines that run a
// workflow's actions, sorted.
func (s *Store) WorkflowWorkers(ctx context.Context, id string) ([]string, error) {
	id, err := workflowExists(ctx, s.db, id)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT worker_id FROM workflow_worker WHERE workflow_id = $1 ORDER BY worker_id`, id)
	if err != nil {
		return nil, fmt.Errorf("workflow %s workers: %w", id, err)
	}
	var ids []string
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			rows.Close()
			return nil, fmt.Errorf("workflow %s workers: %w", id, err)
		}
		ids = append(ids, w)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("workflow %s workers: %w", id, err)
	}
	return ids, nil
}

// WorkflowNotFound is the error for a workflow that does not exist, and the
// one a machine gets for a workflow it takes no part in (or that was
// deleted): the same words, so that it learns nothing of other machines'
// workflows, not even that they exist.
func WorkflowNotFound(id string) error {
	return fmt.Errorf("workflow %s: %w", id, ErrNotFound)
}

// WorkerTakesPart reports whether the machine workerID runs actions of the
// workflow and the workflow is live: neither deleted nor finished, so a
// machine's credential stops opening a workflow's actions (their
// environment may hold secrets) and data the moment it ends. False too for
// a workflow that does not exist. One indexed query, for the worker calls.
func (s *Store) WorkerTakesPart(ctx context.Context, workflowID, workerID string) (bool, error) {
	id, err := parseID("workflow", workflowID)
	if err != nil {
		return false, err
	}
	wid, err := uuid.Parse(workerID)
	if err != nil {
		return false, nil
	}
	var ok bool
	err = s.db.QueryRowContext(ctx, `
		SELECT EXISTS (SELECT 1 FROM workflow_worker ww JOIN workflow w ON w.id = ww.workflow_id
		WHERE ww.workflow_id = $1 AND ww.worker_id = $2 AND w.deleted_at IS NULL AND w.state NOT IN ($3, $4, $5))`,
		id, wid.String(), int32(workflow.State_STATE_FAILED), int32(workflow.State_STATE_TIMEOUT), int32(workflow.State_STATE_SUCCESS)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("workflow %s workers: %w", id, err)
	}
	return ok, nil
}

// ContextsForWorker returns the contexts of every workflow (not deleted)
// the machine takes part in, finished or not, oldest first: Tinkerbell
// v0.6's GetWorkflowContextList.
func (s *Store) ContextsForWorker(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error) {
	return s.contextsForWorker(ctx, workerID, false)
}

// ApplicableContexts returns the contexts of the workflows in which the
// machine has the next move (engine.Applicable), oldest first: v0.6's
// GetWorkflowContexts stream.
func (s *Store) ApplicableContexts(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error) {
	return s.contextsForWorker(ctx, workerID, true)
}

func (s *Store) contextsForWorker(ctx context.Context, workerID string, applicable bool) ([]*workflow.WorkflowContext, error) {
	workerID, err := parseID("worker (hardware)", workerID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `
		SELECT `+wfColumns+` FROM workflow
		WHERE deleted_at IS NULL AND id IN (SELECT workflow_id FROM workflow_worker WHERE worker_id = $1)
		ORDER BY created_at, id`, workerID)
	if err != nil {
		return nil, fmt.Errorf("workflows of worker %s: %w", workerID, err)
	}
	var list []*workflow.WorkflowContext
	for rows.Next() {
		w, err := scanWorkflow(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("workflows of worker %s: %w", workerID, err)
		}
		steps := w.steps()
		if applicable && !engine.Applicable(w.status, steps, workerID) {
			continue
		}
		list = append(list, engine.Context(w.id, w.status, steps))
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("workflows of worker %s: %w", workerID, err)
	}
	return list, nil
}

// WorkflowEvents calls fn, in order, for each event of a workflow with a
// sequence number above after (0: all). Events of one workflow are inserted
// under the workflow's row lock, so their sequence numbers grow in commit
// order and "after the last one seen" never skips one.
func (s *Store) WorkflowEvents(ctx context.Context, id string, after int64, fn func(seq int64, ev *workflow.WorkflowActionStatus) error) error {
	id, err := workflowExists(ctx, s.db, id)
	if err != nil {
		return err
	}
	rows, err := s.db.QueryContext(ctx, `
		SELECT id, worker_id, task_name, action_name, state, seconds, message, created_at
		FROM workflow_event WHERE workflow_id = $1 AND id > $2 ORDER BY id`, id, after)
	if err != nil {
		return fmt.Errorf("workflow %s events: %w", id, err)
	}
	type event struct {
		seq int64
		ev  *workflow.WorkflowActionStatus
	}
	var list []event
	for rows.Next() {
		var (
			e     event
			state int32
			at    time.Time
		)
		e.ev = &workflow.WorkflowActionStatus{WorkflowId: id}
		if err := rows.Scan(&e.seq, &e.ev.WorkerId, &e.ev.TaskName, &e.ev.ActionName, &state,
			&e.ev.Seconds, &e.ev.Message, &at); err != nil {
			rows.Close()
			return fmt.Errorf("workflow %s events: %w", id, err)
		}
		e.ev.ActionStatus = workflow.State(state)
		e.ev.CreatedAt = timestamppb.New(at)
		list = append(list, e)
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("workflow %s events: %w", id, err)
	}
	for _, e := range list {
		if err := fn(e.seq, e.ev); err != nil {
			return err
		}
	}
	return nil
}

// clock is the time the store records: UTC, at PostgreSQL's precision.
func clock() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func nullTime(t time.Time) sql.NullTime {
	return sql.NullTime{Time: t, Valid: !t.IsZero()}
}

func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}
