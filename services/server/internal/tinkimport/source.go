package tinkimport

// Reading a Tinkerbell v0.6 database: its tables as v0.6.0's
// db/migration left them (hardware, template, workflow, workflow_state,
// workflow_event, workflow_data, workflow_worker_map), in one read-only
// snapshot, a page at a time.

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/lib/pq"
)

// v06Columns are the columns the import reads, per table.
var v06Columns = []struct {
	table   string
	columns []string
}{
	{"hardware", []string{"id", "inserted_at", "deleted_at", "data"}},
	{"template", []string{"id", "name", "created_at", "updated_at", "deleted_at", "data"}},
	{"workflow", []string{"id", "template", "devices", "created_at", "updated_at", "deleted_at"}},
	{"workflow_state", []string{"workflow_id", "current_action_state", "action_list", "current_action_index", "total_number_of_actions"}},
	{"workflow_event", []string{"workflow_id", "worker_id", "task_name", "action_name", "execution_time", "message", "status", "created_at"}},
	{"workflow_worker_map", []string{"workflow_id", "worker_id"}},
	{"workflow_data", []string{"workflow_id", "version", "metadata", "data"}},
}

// missingColumns lists, as "table" or "table.column", what the schema
// (table -> its columns) lacks of v06Columns.
func missingColumns(schema map[string]map[string]bool) []string {
	var missing []string
	for _, t := range v06Columns {
		cols, ok := schema[t.table]
		if !ok {
			missing = append(missing, "table "+t.table)
			continue
		}
		for _, c := range t.columns {
			if !cols[c] {
				missing = append(missing, t.table+"."+c)
			}
		}
	}
	return missing
}

// source is one read-only snapshot of the Tinkerbell database.
type source struct {
	tx *sql.Tx
}

// openSource starts the snapshot: everything read comes from one moment,
// whatever tink-server does meanwhile.
func openSource(ctx context.Context, db *sql.DB) (*source, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("tinkerbell database: begin a read-only transaction: %w", err)
	}
	return &source{tx: tx}, nil
}

func (s *source) close() { _ = s.tx.Rollback() }

// checkSchema fails unless the tables and columns of v0.6 are there.
func (s *source) checkSchema(ctx context.Context) error {
	tables := make([]string, len(v06Columns))
	for i, t := range v06Columns {
		tables[i] = t.table
	}
	rows, err := s.tx.QueryContext(ctx, `
		SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = ANY($1)`, pq.Array(tables))
	if err != nil {
		return fmt.Errorf("tinkerbell database: reading its schema: %w", err)
	}
	schema := map[string]map[string]bool{}
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return fmt.Errorf("tinkerbell database: reading its schema: %w", err)
		}
		if schema[t] == nil {
			schema[t] = map[string]bool{}
		}
		schema[t][c] = true
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("tinkerbell database: reading its schema: %w", err)
	}
	if missing := missingColumns(schema); len(missing) > 0 {
		return fmt.Errorf("the --from database is not a Tinkerbell v0.6 database: it lacks %s", strings.Join(missing, ", "))
	}
	return nil
}

// census is how many rows each table holds, live and soft-deleted.
type census struct {
	hardware, templates, workflows                      int
	deletedHardware, deletedTemplates, deletedWorkflows int
	// hardwareWithoutID counts live hardware rows whose id is NULL (v0.6's
	// id column allows it); they cannot be imported.
	hardwareWithoutID int
}

func (s *source) census(ctx context.Context) (census, error) {
	var c census
	err := s.tx.QueryRowContext(ctx, `
		SELECT
			(SELECT count(*) FROM hardware WHERE deleted_at IS NULL AND id IS NOT NULL),
			(SELECT count(*) FROM hardware WHERE deleted_at IS NOT NULL),
			(SELECT count(*) FROM hardware WHERE deleted_at IS NULL AND id IS NULL),
			(SELECT count(*) FROM template WHERE deleted_at IS NULL),
			(SELECT count(*) FROM template WHERE deleted_at IS NOT NULL),
			(SELECT count(*) FROM workflow WHERE deleted_at IS NULL),
			(SELECT count(*) FROM workflow WHERE deleted_at IS NOT NULL)`).
		Scan(&c.hardware, &c.deletedHardware, &c.hardwareWithoutID, &c.templates, &c.deletedTemplates, &c.workflows, &c.deletedWorkflows)
	if err != nil {
		return c, fmt.Errorf("tinkerbell database: counting its rows: %w", err)
	}
	return c, nil
}

// after is the keyset of a page: NULL for the first.
func after(id string) sql.NullString { return sql.NullString{String: id, Valid: id != ""} }

// hardwarePage reads up to n live hardware rows with ids above last, by id.
func (s *source) hardwarePage(ctx context.Context, last string, n int) ([]hardwareRow, error) {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT id::text, inserted_at, data::text FROM hardware
		WHERE deleted_at IS NULL AND id IS NOT NULL AND ($1::uuid IS NULL OR id > $1::uuid)
		ORDER BY id LIMIT $2`, after(last), n)
	if err != nil {
		return nil, fmt.Errorf("tinkerbell database: reading hardware: %w", err)
	}
	var page []hardwareRow
	for rows.Next() {
		var (
			r  hardwareRow
			at sql.NullTime
			d  sql.NullString
		)
		if err := rows.Scan(&r.id, &at, &d); err != nil {
			rows.Close()
			return nil, fmt.Errorf("tinkerbell database: reading hardware: %w", err)
		}
		r.insertedAt, r.data = at.Time, nullable(d)
		page = append(page, r)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("tinkerbell database: reading hardware: %w", err)
	}
	return page, nil
}

const templateColumns = "id::text, name, data, created_at, updated_at, deleted_at"

func scanTemplate(sc interface{ Scan(...any) error }) (templateRow, error) {
	var (
		r                         templateRow
		created, updated, deleted sql.NullTime
	)
	err := sc.Scan(&r.id, &r.name, &r.data, &created, &updated, &deleted)
	r.created, r.updated, r.deleted = created.Time, updated.Time, deleted.Time
	return r, err
}

// templatePage reads up to n live templates with ids above last, by id.
func (s *source) templatePage(ctx context.Context, last string, n int) ([]templateRow, error) {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT `+templateColumns+` FROM template
		WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1::uuid)
		ORDER BY id LIMIT $2`, after(last), n)
	if err != nil {
		return nil, fmt.Errorf("tinkerbell database: reading templates: %w", err)
	}
	var page []templateRow
	for rows.Next() {
		r, err := scanTemplate(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("tinkerbell database: reading templates: %w", err)
		}
		page = append(page, r)
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("tinkerbell database: reading templates: %w", err)
	}
	return page, nil
}

// template reads one template, deleted or not; nil when there is none.
func (s *source) template(ctx context.Context, id string) (*templateRow, error) {
	r, err := scanTemplate(s.tx.QueryRowContext(ctx,
		`SELECT `+templateColumns+` FROM template WHERE id = $1::uuid`, id))
	switch {
	case err == sql.ErrNoRows:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("tinkerbell database: reading template %s: %w", id, err)
	}
	return &r, nil
}

// workflowPage reads up to n live workflows with ids above last, by id,
// each with its state, events, data versions and workers.
func (s *source) workflowPage(ctx context.Context, last string, n int) ([]*workflowRow, error) {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT id::text, template::text, devices::text, created_at, updated_at FROM workflow
		WHERE deleted_at IS NULL AND ($1::uuid IS NULL OR id > $1::uuid)
		ORDER BY id LIMIT $2`, after(last), n)
	if err != nil {
		return nil, fmt.Errorf("tinkerbell database: reading workflows: %w", err)
	}
	var (
		page []*workflowRow
		ids  []string
		byID = map[string]*workflowRow{}
	)
	for rows.Next() {
		var (
			w                workflowRow
			devices          sql.NullString
			created, updated sql.NullTime
		)
		if err := rows.Scan(&w.id, &w.template, &devices, &created, &updated); err != nil {
			rows.Close()
			return nil, fmt.Errorf("tinkerbell database: reading workflows: %w", err)
		}
		w.devices, w.created, w.updated = nullable(devices), created.Time, updated.Time
		page, ids, byID[w.id] = append(page, &w), append(ids, w.id), &w
	}
	if err := closeRows(rows); err != nil {
		return nil, fmt.Errorf("tinkerbell database: reading workflows: %w", err)
	}
	if len(page) == 0 {
		return nil, nil
	}
	for _, part := range []func(context.Context, []string, map[string]*workflowRow) error{s.states, s.events, s.data, s.workers} {
		if err := part(ctx, ids, byID); err != nil {
			return nil, err
		}
	}
	return page, nil
}

func (s *source) states(ctx context.Context, ids []string, byID map[string]*workflowRow) error {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT workflow_id::text, action_list::text, current_action_index, current_action_state, total_number_of_actions
		FROM workflow_state WHERE workflow_id = ANY($1::uuid[])`, pq.Array(ids))
	if err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow states: %w", err)
	}
	for rows.Next() {
		var (
			id                        string
			list                      sql.NullString
			index, actionState, total sql.NullInt64
		)
		if err := rows.Scan(&id, &list, &index, &actionState, &total); err != nil {
			rows.Close()
			return fmt.Errorf("tinkerbell database: reading workflow states: %w", err)
		}
		if w := byID[id]; w != nil {
			w.state = &stateRow{actionList: nullable(list), index: nullInt(index), actionState: nullInt(actionState), total: nullInt(total)}
		}
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow states: %w", err)
	}
	return nil
}

// events reads the events in v0.6's order (created_at; ties in the order
// the rows were written).
func (s *source) events(ctx context.Context, ids []string, byID map[string]*workflowRow) error {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT workflow_id::text, worker_id::text, coalesce(task_name, ''), coalesce(action_name, ''),
			coalesce(execution_time, 0), coalesce(message, ''), coalesce(status, 0), created_at
		FROM workflow_event WHERE workflow_id = ANY($1::uuid[])
		ORDER BY workflow_id, created_at, ctid`, pq.Array(ids))
	if err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow events: %w", err)
	}
	for rows.Next() {
		var (
			id string
			e  eventRow
			at sql.NullTime
		)
		if err := rows.Scan(&id, &e.worker, &e.task, &e.action, &e.seconds, &e.message, &e.status, &at); err != nil {
			rows.Close()
			return fmt.Errorf("tinkerbell database: reading workflow events: %w", err)
		}
		e.at = at.Time
		if w := byID[id]; w != nil {
			w.events = append(w.events, e)
		}
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow events: %w", err)
	}
	return nil
}

func (s *source) data(ctx context.Context, ids []string, byID map[string]*workflowRow) error {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT workflow_id::text, version, metadata::text, data::text
		FROM workflow_data WHERE workflow_id = ANY($1::uuid[]) AND version IS NOT NULL
		ORDER BY workflow_id, version, ctid`, pq.Array(ids))
	if err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow data: %w", err)
	}
	for rows.Next() {
		var (
			id         string
			d          dataRow
			meta, data sql.NullString
		)
		if err := rows.Scan(&id, &d.version, &meta, &data); err != nil {
			rows.Close()
			return fmt.Errorf("tinkerbell database: reading workflow data: %w", err)
		}
		d.metadata, d.data = nullable(meta), nullable(data)
		if w := byID[id]; w != nil {
			w.data = append(w.data, d)
		}
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow data: %w", err)
	}
	return nil
}

func (s *source) workers(ctx context.Context, ids []string, byID map[string]*workflowRow) error {
	rows, err := s.tx.QueryContext(ctx, `
		SELECT DISTINCT workflow_id::text, worker_id::text FROM workflow_worker_map
		WHERE workflow_id = ANY($1::uuid[]) ORDER BY 1, 2`, pq.Array(ids))
	if err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow workers: %w", err)
	}
	for rows.Next() {
		var id, worker string
		if err := rows.Scan(&id, &worker); err != nil {
			rows.Close()
			return fmt.Errorf("tinkerbell database: reading workflow workers: %w", err)
		}
		if w := byID[id]; w != nil && !slices.Contains(w.workers, worker) {
			w.workers = append(w.workers, worker)
		}
	}
	if err := closeRows(rows); err != nil {
		return fmt.Errorf("tinkerbell database: reading workflow workers: %w", err)
	}
	return nil
}

func nullable(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

func nullInt(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	return &n.Int64
}

func closeRows(rows *sql.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}
