package store

// Imports from another installation (services/server/internal/tinkimport):
// records that keep their ids, times, workflow states, events and data
// versions, which the API's create calls cannot carry. Only herd-server's
// own binary runs them (`herd-server import tink`), with its own database
// settings.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lib/pq"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

// ImportOutcome says what an import did with one record.
type ImportOutcome int

// The outcomes. A refused record is an error instead (see IsRefusal).
const (
	// ImportCreated: herd did not have the record; it is written.
	ImportCreated ImportOutcome = iota + 1
	// ImportUpdated: herd had an older copy, brought up to date (a
	// workflow that moved on in the source; with Replace, hardware and
	// templates that differ).
	ImportUpdated
	// ImportUnchanged: herd already has the record as the source has it.
	ImportUnchanged
	// ImportKept: herd has the record and it differs; herd's copy stays
	// (ImportResult.Note says why).
	ImportKept
)

func (o ImportOutcome) String() string {
	switch o {
	case ImportCreated:
		return "created"
	case ImportUpdated:
		return "updated"
	case ImportUnchanged:
		return "unchanged"
	case ImportKept:
		return "kept"
	}
	return fmt.Sprintf("outcome %d", int(o))
}

// ImportResult is what an import did with one record.
type ImportResult struct {
	Outcome ImportOutcome
	// Note explains a kept record, or what an update changed.
	Note string
	// Events and DataVersions count the workflow events and data versions
	// written.
	Events, DataVersions int
}

// ImportOptions tune an import.
type ImportOptions struct {
	// DryRun rolls everything back at the end: the results are those a
	// real run would get, and nothing is written.
	DryRun bool
	// Replace makes the source's copy of a hardware record or template
	// win over a different copy in herd (default: herd's copy is kept).
	// Workflows are never rewritten: one that moved on in the source only
	// catches up when herd's copy is a part of the source's.
	Replace bool
}

// ImportedTemplate is a template as it comes from the source.
type ImportedTemplate struct {
	ID, Name, Data       string
	CreatedAt, UpdatedAt time.Time
	// DeletedAt is set for a template deleted in the source that a live
	// workflow still uses: it is imported deleted, as herd keeps deleted
	// templates for their workflows.
	DeletedAt time.Time
}

// ImportedWorkflow is a workflow as it comes from the source, with its
// status, events and data.
type ImportedWorkflow struct {
	ID, TemplateID string
	// TemplateData is the source's template YAML, rendered for Devices
	// into the workflow's stored YAML (the source rendered it the same
	// way).
	TemplateData string
	// Devices is the hardware map (device_1 -> MAC or IP).
	Devices map[string]string
	// Actions is the source's action list, which Status indexes.
	Actions []*workflow.WorkflowAction
	// Workers are hardware ids taking part beyond the actions' own.
	Workers []string
	Status  engine.Status
	// Events in the order they happened; WorkflowId is ignored.
	Events []*workflow.WorkflowActionStatus
	// Data versions still held by the source, ascending; LatestVersion is
	// the source's latest version number, held or not.
	Data          []ImportedData
	LatestVersion int32
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// ImportedData is one version of a workflow's data.
type ImportedData struct {
	Version        int32
	Data, Metadata string
}

// ImportedEventIndex is the action_index of an imported event whose task
// and action the workflow's action list lacks.
const ImportedEventIndex = -3

// IsRefusal reports whether err from an ImportTx method refuses the record
// (a kind callers act on: invalid, a conflict, a precondition, a missing
// reference), as opposed to a failure that ends the import.
func IsRefusal(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrConflict) ||
		errors.Is(err, ErrPrecondition) || errors.Is(err, ErrNotFound)
}

// ImportTx is one import: a single transaction in which each record is
// written under a savepoint, so a refused record leaves no trace and the
// others go in, and an import that fails midway (or a dry run) leaves the
// database as it was.
type ImportTx struct {
	s         *Store
	tx        *sql.Tx
	opt       ImportOptions
	workflows []string // created or updated, announced after commit
}

// Import runs fn in one transaction and commits what it wrote, unless
// opt.DryRun or fn fails: then nothing is kept. Hardware changes are
// announced on ChannelHardware at commit, as pushes are; workflow changes
// after it.
func (s *Store) Import(ctx context.Context, opt ImportOptions, fn func(*ImportTx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("import: begin transaction: %w", err)
	}
	im := &ImportTx{s: s, tx: tx, opt: opt}
	if err := fn(im); err != nil {
		_ = tx.Rollback()
		return err
	}
	if opt.DryRun {
		if err := tx.Rollback(); err != nil {
			return fmt.Errorf("import: dry run: roll back: %w", err)
		}
		return nil
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("import: commit: %w", err)
	}
	for _, id := range im.workflows {
		s.announce.workflow(id)
	}
	return nil
}

// record runs write under a savepoint. A refusal (see IsRefusal; the
// database refusing a value counts as ErrInvalid) rolls back to it and is
// returned; any other error is returned for the caller to end the import.
func (im *ImportTx) record(ctx context.Context, write func() (ImportResult, error)) (ImportResult, error) {
	if _, err := im.tx.ExecContext(ctx, "SAVEPOINT herd_import"); err != nil {
		return ImportResult{}, fmt.Errorf("import: savepoint: %w", err)
	}
	r, err := write()
	if err == nil {
		if _, err := im.tx.ExecContext(ctx, "RELEASE SAVEPOINT herd_import"); err != nil {
			return ImportResult{}, fmt.Errorf("import: release savepoint: %w", err)
		}
		return r, nil
	}
	if _, rerr := im.tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT herd_import"); rerr != nil {
		return ImportResult{}, errors.Join(err, fmt.Errorf("import: roll back to savepoint: %w", rerr))
	}
	// Data exceptions (class 22) and integrity violations (23): the
	// database refuses this record's values, not the import.
	if c := sqlState(err); !IsRefusal(err) && (strings.HasPrefix(c, "22") || strings.HasPrefix(c, "23")) {
		err = fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	return ImportResult{}, err
}

// Hardware imports a record the caller has validated (spec.ParseHardware)
// keeping its id; at is when the source last wrote it (zero: now). A new
// record gets version 1 and claims its MACs and IPs; an address another
// record holds refuses it (ErrConflict, naming the owner). A record herd
// has with the same content is unchanged; with other content it is kept,
// or with Replace replaced as a push would (version + 1).
func (im *ImportTx) Hardware(ctx context.Context, hw *hardware.Hardware, at time.Time) (ImportResult, error) {
	return im.record(ctx, func() (ImportResult, error) { return im.hardware(ctx, hw, at) })
}

func (im *ImportTx) hardware(ctx context.Context, hw *hardware.Hardware, at time.Time) (ImportResult, error) {
	if hw == nil {
		return ImportResult{}, fmt.Errorf("import hardware: no record: %w", ErrInvalid)
	}
	rec := proto.Clone(hw).(*hardware.Hardware)
	spec.NormalizeHardware(rec)
	id, err := parseID("hardware", rec.GetId())
	if err != nil {
		return ImportResult{}, err
	}
	rec.Id, rec.Version = id, 0
	data, err := spec.MarshalHardware(rec)
	if err != nil {
		return ImportResult{}, fmt.Errorf("import hardware %s: %w: %w", id, ErrInvalid, err)
	}
	if at.IsZero() {
		at = clock()
	}
	tx := im.tx
	var same bool
	err = tx.QueryRowContext(ctx, `SELECT data = $2::jsonb FROM hardware WHERE id = $1 FOR UPDATE`, id, string(data)).Scan(&same)
	r := ImportResult{Outcome: ImportCreated}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO hardware (id, data, created_at, updated_at) VALUES ($1, $2, $3, $3)`,
			id, string(data), at); err != nil {
			return ImportResult{}, fmt.Errorf("import hardware %s: %w", id, err)
		}
	case err != nil:
		return ImportResult{}, fmt.Errorf("import hardware %s: %w", id, err)
	case same:
		return ImportResult{Outcome: ImportUnchanged}, nil
	case !im.opt.Replace:
		return ImportResult{Outcome: ImportKept, Note: "herd's record differs from the source's; kept herd's (--replace takes the source's)"}, nil
	default:
		if _, err := tx.ExecContext(ctx, `UPDATE hardware SET data = $2, version = version + 1, updated_at = now() WHERE id = $1`,
			id, string(data)); err != nil {
			return ImportResult{}, fmt.Errorf("import hardware %s: %w", id, err)
		}
		r = ImportResult{Outcome: ImportUpdated, Note: "herd's record differed; replaced by the source's"}
	}
	macs, ips := spec.HardwareAddresses(rec)
	kinds, values := claims(macs, ips)
	if _, err := tx.ExecContext(ctx, "DELETE FROM hardware_address WHERE hardware_id = $1", id); err != nil {
		return ImportResult{}, fmt.Errorf("import hardware %s: release addresses: %w", id, err)
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO hardware_address (kind, value, hardware_id)
		SELECT k, v, $3 FROM unnest($1::text[], $2::text[]) AS a (k, v)
		ORDER BY k, v
		ON CONFLICT (kind, value) DO NOTHING`,
		stringArray(kinds), stringArray(values), id); err != nil {
		return ImportResult{}, fmt.Errorf("import hardware %s: claim addresses: %w", id, err)
	}
	if err := importConflicts(ctx, tx, id, kinds, values); err != nil {
		return ImportResult{}, err
	}
	if err := notify(ctx, tx, ChannelHardware, id); err != nil {
		return ImportResult{}, err
	}
	return r, nil
}

// importConflicts is addressConflicts in the importer's words (it names
// the record itself): ErrConflict naming each address another record
// holds and its owner.
func importConflicts(ctx context.Context, tx *sql.Tx, id string, kinds, values []string) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT a.kind, a.value, a.hardware_id
		FROM hardware_address a
		JOIN unnest($1::text[], $2::text[]) AS c (k, v) ON a.kind = c.k AND a.value = c.v
		WHERE a.hardware_id <> $3
		ORDER BY a.kind DESC, a.value`, stringArray(kinds), stringArray(values), id)
	if err != nil {
		return fmt.Errorf("import hardware %s: check addresses: %w", id, err)
	}
	var taken []string
	for rows.Next() {
		var kind, value, owner string
		if err := rows.Scan(&kind, &value, &owner); err != nil {
			rows.Close()
			return fmt.Errorf("import hardware %s: check addresses: %w", id, err)
		}
		taken = append(taken, fmt.Sprintf("%s %s already belongs to hardware %s", kind, value, owner))
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("import hardware %s: check addresses: %w", id, err)
	}
	if len(taken) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(taken, "; "), ErrConflict)
	}
	return nil
}

// Template imports a template the caller has validated
// (spec.ValidateTemplate, spec.ValidateName), keeping its id and times. A
// live template of another id with the same name refuses it
// (ErrConflict). One herd has with the same name and data is unchanged;
// with others it is kept, or with Replace updated. One deleted in herd
// stays deleted.
func (im *ImportTx) Template(ctx context.Context, t ImportedTemplate) (ImportResult, error) {
	return im.record(ctx, func() (ImportResult, error) { return im.template(ctx, t) })
}

func (im *ImportTx) template(ctx context.Context, t ImportedTemplate) (ImportResult, error) {
	id, err := parseID("template", t.ID)
	if err != nil {
		return ImportResult{}, err
	}
	if t.Name == "" {
		return ImportResult{}, fmt.Errorf("template %s: the name is empty: %w", id, ErrInvalid)
	}
	now := clock()
	created, updated := orTime(t.CreatedAt, now), orTime(t.UpdatedAt, now)
	tx := im.tx
	var (
		name, data string
		deleted    bool
	)
	err = tx.QueryRowContext(ctx, `SELECT name, data, deleted_at IS NOT NULL FROM template WHERE id = $1 FOR UPDATE`, id).
		Scan(&name, &data, &deleted)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if !t.DeletedAt.IsZero() {
			if _, err := tx.ExecContext(ctx, `INSERT INTO template (id, name, data, created_at, updated_at, deleted_at)
				VALUES ($1, $2, $3, $4, $5, $6)`, id, t.Name, t.Data, created, updated, t.DeletedAt); err != nil {
				return ImportResult{}, fmt.Errorf("import template %s: %w", id, err)
			}
			return ImportResult{Outcome: ImportCreated, Note: "deleted in the source; imported deleted, for its live workflows"}, nil
		}
		var got string
		err := tx.QueryRowContext(ctx, `
			INSERT INTO template (id, name, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING
			RETURNING id`, id, t.Name, t.Data, created, updated).Scan(&got)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return ImportResult{}, im.nameTaken(ctx, id, t.Name)
		case err != nil:
			return ImportResult{}, fmt.Errorf("import template %s: %w", id, err)
		}
		return ImportResult{Outcome: ImportCreated}, nil
	case err != nil:
		return ImportResult{}, fmt.Errorf("import template %s: %w", id, err)
	case !t.DeletedAt.IsZero():
		// Wanted only for its workflows: herd has it, deleted or not.
		return ImportResult{Outcome: ImportUnchanged}, nil
	case deleted:
		return ImportResult{Outcome: ImportKept, Note: "deleted in herd; left deleted"}, nil
	case name == t.Name && data == t.Data:
		return ImportResult{Outcome: ImportUnchanged}, nil
	case !im.opt.Replace:
		return ImportResult{Outcome: ImportKept, Note: "herd's template differs from the source's; kept herd's (--replace takes the source's)"}, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE template SET name = $2, data = $3, updated_at = now() WHERE id = $1`,
		id, t.Name, t.Data); err != nil {
		if sqlState(err) == codeUniqueViolation {
			return ImportResult{}, im.nameTaken(ctx, id, t.Name)
		}
		return ImportResult{}, fmt.Errorf("import template %s: %w", id, err)
	}
	return ImportResult{Outcome: ImportUpdated, Note: "herd's template differed; replaced by the source's"}, nil
}

// nameTaken is the ErrConflict for a name another live template has.
func (im *ImportTx) nameTaken(ctx context.Context, id, name string) error {
	var owner string
	if err := im.tx.QueryRowContext(ctx,
		"SELECT id FROM template WHERE name = $1 AND deleted_at IS NULL", name).Scan(&owner); err != nil {
		return fmt.Errorf("template %s: the name %q is already used: %w", id, name, ErrConflict)
	}
	return fmt.Errorf("template %s: the name %q is already used by herd's template %s: %w", id, name, owner, ErrConflict)
}

// Workflow imports a workflow with its status, events and data versions
// (the newest MaxDataVersions held), keeping its id and times. Its
// template must be in herd already (ErrNotFound otherwise); the source's
// template YAML is rendered for the hardware map and checked as a
// workflow created in herd is (ErrInvalid). It does not switch netboot
// (toggle_netboot off, as the source's workflows never did) and its
// deadlines are the engine's from the imported times, so an action that
// has been running too long times out at the server's next check.
//
// A workflow herd has is never rewritten: unchanged when herd's copy is
// the source's; brought up to date (the events, data and status it lacks)
// when the source's moved on and herd's is a part of it; else kept.
func (im *ImportTx) Workflow(ctx context.Context, w ImportedWorkflow) (ImportResult, error) {
	return im.record(ctx, func() (ImportResult, error) { return im.workflow(ctx, w) })
}

func (im *ImportTx) workflow(ctx context.Context, w ImportedWorkflow) (ImportResult, error) {
	id, err := parseID("workflow", w.ID)
	if err != nil {
		return ImportResult{}, err
	}
	if err := checkImported(id, w); err != nil {
		return ImportResult{}, err
	}
	for _, d := range w.Data {
		for _, p := range []struct{ what, doc string }{{"data", d.Data}, {"metadata", d.Metadata}} {
			if max := im.s.opts.MaxDataBytes; len(p.doc) > max {
				return ImportResult{}, fmt.Errorf("workflow %s: data version %d: the %s is %d bytes, more than --max-data-bytes (%d): %w",
					id, d.Version, p.what, len(p.doc), max, ErrInvalid)
			}
		}
	}
	have, err := getWorkflow(ctx, im.tx, id, "FOR UPDATE")
	switch {
	case errors.Is(err, ErrNotFound):
		return im.createWorkflow(ctx, id, w)
	case err != nil:
		return ImportResult{}, err
	}
	return im.catchUp(ctx, have, w)
}

// checkImported refuses a workflow whose parts do not fit together.
func checkImported(id string, w ImportedWorkflow) error {
	if len(w.Actions) == 0 {
		return fmt.Errorf("workflow %s has no actions: %w", id, ErrInvalid)
	}
	for i, a := range w.Actions {
		if a.GetTaskName() == "" || a.GetName() == "" {
			return fmt.Errorf("workflow %s: action %d has no task or action name: %w", id, i, ErrInvalid)
		}
		if _, err := parseID("action worker (hardware)", a.GetWorkerId()); err != nil {
			return fmt.Errorf("workflow %s: action %d (%s/%s): %w", id, i, a.GetTaskName(), a.GetName(), err)
		}
	}
	if s := w.Status; s.Index < 0 || s.Index >= len(w.Actions) {
		return fmt.Errorf("workflow %s: its status names action %d of %d: %w", id, s.Index, len(w.Actions), ErrInvalid)
	}
	for i, d := range w.Data {
		if d.Version < 1 || d.Version > w.LatestVersion || (i > 0 && d.Version <= w.Data[i-1].Version) {
			return fmt.Errorf("workflow %s: data version %d out of order (latest %d): %w", id, d.Version, w.LatestVersion, ErrInvalid)
		}
	}
	return nil
}

func (im *ImportTx) createWorkflow(ctx context.Context, id string, w ImportedWorkflow) (ImportResult, error) {
	tplID, err := parseID("template", w.TemplateID)
	if err != nil {
		return ImportResult{}, err
	}
	tx := im.tx
	var found bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM template WHERE id = $1)`, tplID).Scan(&found); err != nil {
		return ImportResult{}, fmt.Errorf("workflow %s: reading template %s: %w", id, tplID, err)
	}
	if !found {
		return ImportResult{}, fmt.Errorf("workflow %s: its template %s is not in herd: %w", id, tplID, ErrNotFound)
	}
	// The records the hardware map names, for templates that read them
	// ({{.hardware.device_1...}}); a machine herd lacks is left out.
	hw := map[string]*hardware.Hardware{}
	for name, addr := range w.Devices {
		if _, _, err := addressKey(addr); err != nil {
			continue
		}
		h, err := hardwareByAddress(ctx, tx, addr, "FOR SHARE OF h")
		switch {
		case err == nil:
			hw[name] = h
		case !errors.Is(err, ErrNotFound):
			return ImportResult{}, fmt.Errorf("workflow %s: device %q: %w", id, name, err)
		}
	}
	tpl, rendered, err := spec.RenderTemplate(w.TemplateData, w.Devices, hw)
	if err != nil {
		return ImportResult{}, fmt.Errorf("workflow %s: template %s does not render for its hardware map: %w (%w)", id, tplID, err, ErrInvalid)
	}
	actionsJSON, err := marshalActions(w.Actions)
	if err != nil {
		return ImportResult{}, err
	}
	devicesJSON, err := json.Marshal(w.Devices)
	if err != nil {
		return ImportResult{}, fmt.Errorf("workflow %s: encoding the hardware map: %w", id, err)
	}
	now := clock()
	global := time.Duration(tpl.GlobalTimeout) * time.Second
	steps := engine.Steps(w.Actions)
	var deadline sql.NullTime
	if d, ok := engine.Deadline(w.Status, steps, global); ok {
		deadline = sql.NullTime{Time: d, Valid: true}
	}
	st := w.Status
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO workflow (id, template_id, hardware_map, rendered, actions, global_timeout,
			state, current_index, current_state, started_at, action_started_at, deadline,
			created_at, updated_at, toggle_netboot, netboot_hardware)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, false, '{}')`,
		id, tplID, string(devicesJSON), rendered, string(actionsJSON), tpl.GlobalTimeout,
		int32(st.State), st.Index, int32(st.ActionState), nullTime(st.Started), nullTime(st.ActionStarted), deadline,
		orTime(w.CreatedAt, now), orTime(w.UpdatedAt, now)); err != nil {
		return ImportResult{}, fmt.Errorf("workflow %s: inserting it: %w", id, err)
	}
	workers := map[string]bool{}
	for _, a := range w.Actions {
		workers[a.GetWorkerId()] = true
	}
	for _, wk := range w.Workers {
		if u, err := parseID("workflow worker", wk); err == nil {
			workers[u] = true
		}
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO workflow_worker (workflow_id, worker_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING`,
		id, stringArray(slices.Sorted(maps.Keys(workers)))); err != nil {
		return ImportResult{}, fmt.Errorf("workflow %s: inserting its workers: %w", id, err)
	}
	events, err := im.insertEvents(ctx, id, w.Actions, w.Events)
	if err != nil {
		return ImportResult{}, err
	}
	data, err := im.insertData(ctx, id, w.Data, 0)
	if err != nil {
		return ImportResult{}, err
	}
	im.workflows = append(im.workflows, id)
	return ImportResult{Outcome: ImportCreated, Events: events, DataVersions: data}, nil
}

// insertEvents appends events to a workflow's, in their order.
func (im *ImportTx) insertEvents(ctx context.Context, id string, actions []*workflow.WorkflowAction, events []*workflow.WorkflowActionStatus) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	var (
		workers, tasks, names, times []string
		indexes, states, seconds     []int64
		messages                     []string
	)
	for _, e := range events {
		workers = append(workers, e.GetWorkerId())
		tasks = append(tasks, e.GetTaskName())
		names = append(names, e.GetActionName())
		indexes = append(indexes, int64(actionIndex(actions, e.GetTaskName(), e.GetActionName())))
		states = append(states, int64(e.GetActionStatus()))
		seconds = append(seconds, e.GetSeconds())
		messages = append(messages, e.GetMessage())
		times = append(times, e.GetCreatedAt().AsTime().UTC().Format(time.RFC3339Nano))
	}
	if _, err := im.tx.ExecContext(ctx, `
		INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, action_index, state, seconds, message, created_at)
		SELECT $1, w, t, a, i, s, sec, m, at FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::smallint[],
			$7::bigint[], $8::text[], $9::timestamptz[]) WITH ORDINALITY AS e (w, t, a, i, s, sec, m, at, n)
		ORDER BY n`,
		id, stringArray(workers), stringArray(tasks), stringArray(names), int64Array(indexes), int64Array(states),
		int64Array(seconds), stringArray(messages), stringArray(times)); err != nil {
		return 0, fmt.Errorf("workflow %s: inserting its events: %w", id, err)
	}
	return len(events), nil
}

// actionIndex is the index of the action task/name in actions, or
// ImportedEventIndex.
func actionIndex(actions []*workflow.WorkflowAction, task, name string) int {
	for i, a := range actions {
		if a.GetTaskName() == task && a.GetName() == name {
			return i
		}
	}
	return ImportedEventIndex
}

// insertData stores the data versions above after, the newest
// MaxDataVersions of them, and drops older versions beyond that bound.
func (im *ImportTx) insertData(ctx context.Context, id string, data []ImportedData, after int32) (int, error) {
	var versions []int64
	var docs, metas []string
	for _, d := range keepNewest(data, im.s.opts.MaxDataVersions) {
		if d.Version <= after {
			continue
		}
		meta := d.Metadata
		if meta == "" {
			meta = "{}"
		}
		versions, docs, metas = append(versions, int64(d.Version)), append(docs, d.Data), append(metas, meta)
	}
	if len(versions) == 0 {
		return 0, nil
	}
	if _, err := im.tx.ExecContext(ctx, `
		INSERT INTO workflow_data (workflow_id, version, data, metadata)
		SELECT $1, v, d::jsonb, m::jsonb FROM unnest($2::int[], $3::text[], $4::text[]) AS x (v, d, m)`,
		id, int64Array(versions), stringArray(docs), stringArray(metas)); err != nil {
		return 0, fmt.Errorf("workflow %s: inserting its data versions: %w", id, err)
	}
	if keep := im.s.opts.MaxDataVersions; keep > 0 {
		if _, err := im.tx.ExecContext(ctx, `DELETE FROM workflow_data WHERE workflow_id = $1 AND version <= $2`,
			id, versions[len(versions)-1]-int64(keep)); err != nil {
			return 0, fmt.Errorf("workflow %s: dropping old data versions: %w", id, err)
		}
	}
	return len(versions), nil
}

// keepNewest returns the last n of data (all when n <= 0).
func keepNewest(data []ImportedData, n int) []ImportedData {
	if n > 0 && len(data) > n {
		return data[len(data)-n:]
	}
	return data
}

// catchUp compares the workflow herd has with the source's.
func (im *ImportTx) catchUp(ctx context.Context, have *wfRow, w ImportedWorkflow) (ImportResult, error) {
	id := have.id
	kept := func(why string) (ImportResult, error) { return ImportResult{Outcome: ImportKept, Note: why}, nil }
	if have.deletedAt.Valid {
		return kept("deleted in herd; left deleted")
	}
	var devices map[string]string
	if err := json.Unmarshal([]byte(have.hardwareMap), &devices); err != nil || !maps.Equal(devices, w.Devices) ||
		have.templateID != w.TemplateID || !slices.EqualFunc(have.actions, w.Actions, func(a, b *workflow.WorkflowAction) bool { return proto.Equal(a, b) }) {
		return kept("herd's workflow has another template, hardware map or action list than the source's; kept herd's")
	}
	events, err := im.eventsOf(ctx, id)
	if err != nil {
		return ImportResult{}, err
	}
	if len(events) > len(w.Events) || !slices.EqualFunc(events, w.Events[:len(events)], sameEvent) {
		return kept("herd's workflow has moved on since it was imported (events the source lacks); kept herd's")
	}
	latest, err := im.dataConflicts(ctx, id, w)
	if err != nil {
		return ImportResult{}, err
	}
	if latest < 0 {
		return kept("herd's workflow has moved on since it was imported (data the source lacks); kept herd's")
	}
	if len(events) == len(w.Events) && latest == newestHeld(w.Data) && have.status.State == w.Status.State &&
		have.status.Index == w.Status.Index && have.status.ActionState == w.Status.ActionState {
		return ImportResult{Outcome: ImportUnchanged}, nil
	}
	added, err := im.insertEvents(ctx, id, w.Actions, w.Events[len(events):])
	if err != nil {
		return ImportResult{}, err
	}
	data, err := im.insertData(ctx, id, w.Data, latest)
	if err != nil {
		return ImportResult{}, err
	}
	var deadline sql.NullTime
	if d, ok := engine.Deadline(w.Status, engine.Steps(w.Actions), have.global); ok {
		deadline = sql.NullTime{Time: d, Valid: true}
	}
	st := w.Status
	if _, err := im.tx.ExecContext(ctx, `
		UPDATE workflow SET state = $2, current_index = $3, current_state = $4, started_at = $5, action_started_at = $6,
			deadline = $7, updated_at = now() WHERE id = $1`,
		id, int32(st.State), st.Index, int32(st.ActionState), nullTime(st.Started), nullTime(st.ActionStarted), deadline); err != nil {
		return ImportResult{}, fmt.Errorf("workflow %s: updating its status: %w", id, err)
	}
	im.workflows = append(im.workflows, id)
	return ImportResult{Outcome: ImportUpdated, Events: added, DataVersions: data,
		Note: fmt.Sprintf("moved on in the source: %d events and %d data versions added, now %s", added, data, engine.StateName(st.State))}, nil
}

// eventsOf reads a workflow's events in order, as imports compare them.
func (im *ImportTx) eventsOf(ctx context.Context, id string) ([]*workflow.WorkflowActionStatus, error) {
	rows, err := im.tx.QueryContext(ctx, `
		SELECT worker_id, task_name, action_name, state, seconds, message, created_at
		FROM workflow_event WHERE workflow_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("workflow %s events: %w", id, err)
	}
	var list []*workflow.WorkflowActionStatus
	for rows.Next() {
		var (
			e     workflow.WorkflowActionStatus
			state int32
			at    time.Time
		)
		if err := rows.Scan(&e.WorkerId, &e.TaskName, &e.ActionName, &state, &e.Seconds, &e.Message, &at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("workflow %s events: %w", id, err)
		}
		e.ActionStatus = workflow.State(state)
		e.CreatedAt = timestamppb.New(at)
		list = append(list, &e)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("workflow %s events: %w", id, err)
	}
	return list, nil
}

// sameEvent compares two events as stored (times to the microsecond).
func sameEvent(a, b *workflow.WorkflowActionStatus) bool {
	return a.GetWorkerId() == b.GetWorkerId() && a.GetTaskName() == b.GetTaskName() &&
		a.GetActionName() == b.GetActionName() && a.GetActionStatus() == b.GetActionStatus() &&
		a.GetSeconds() == b.GetSeconds() && a.GetMessage() == b.GetMessage() &&
		a.GetCreatedAt().AsTime().Truncate(time.Microsecond).Equal(b.GetCreatedAt().AsTime().Truncate(time.Microsecond))
}

// dataConflicts returns herd's latest data version of the workflow (0:
// none), or -1 when herd holds data the source lacks: a version above the
// source's latest, or one the source still holds with other content.
func (im *ImportTx) dataConflicts(ctx context.Context, id string, w ImportedWorkflow) (int32, error) {
	var versions []int64
	var docs, metas []string
	for _, d := range w.Data {
		meta := d.Metadata
		if meta == "" {
			meta = "{}"
		}
		versions, docs, metas = append(versions, int64(d.Version)), append(docs, d.Data), append(metas, meta)
	}
	var latest int32
	var differ bool
	err := im.tx.QueryRowContext(ctx, `
		SELECT coalesce(max(d.version), 0),
			coalesce(bool_or(d.version > $5 OR (s.v IS NOT NULL AND (d.data <> s.d::jsonb OR d.metadata <> s.m::jsonb))), false)
		FROM workflow_data d
		LEFT JOIN unnest($2::int[], $3::text[], $4::text[]) AS s (v, d, m) ON s.v = d.version
		WHERE d.workflow_id = $1`,
		id, int64Array(versions), stringArray(docs), stringArray(metas), w.LatestVersion).Scan(&latest, &differ)
	if err != nil {
		return 0, fmt.Errorf("workflow %s: comparing its data: %w", id, err)
	}
	if differ {
		return -1, nil
	}
	return latest, nil
}

func orTime(t, otherwise time.Time) time.Time {
	if t.IsZero() {
		return otherwise
	}
	return t
}

// newestHeld is the newest version in data, 0 when empty.
func newestHeld(data []ImportedData) int32 {
	if len(data) == 0 {
		return 0
	}
	return data[len(data)-1].Version
}

// int64Array passes a []int64 as an array parameter (never NULL).
func int64Array(v []int64) any {
	if v == nil {
		v = []int64{}
	}
	return pq.Int64Array(v)
}
