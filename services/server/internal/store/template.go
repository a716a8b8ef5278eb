package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/template"
)

// CreateTemplate stores a new template and returns its id. The caller has
// validated data (spec.ValidateTemplate). A live template with the same
// name is an ErrConflict; the name of a deleted one may be reused.
func (s *Store) CreateTemplate(ctx context.Context, name, data string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("template name is empty: %w", ErrInvalid)
	}
	id := uuid.NewString()
	var got string
	err := s.db.QueryRowContext(ctx, `
		INSERT INTO template (id, name, data) VALUES ($1, $2, $3)
		ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING
		RETURNING id`, id, name, data).Scan(&got)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", s.nameTaken(ctx, name)
	case err != nil:
		return "", fmt.Errorf("create template %q: %w", name, err)
	}
	s.log.InfoContext(ctx, "template created", "template_id", id, "template", name)
	return id, nil
}

// nameTaken is the ErrConflict for a name a live template has.
func (s *Store) nameTaken(ctx context.Context, name string) error {
	var owner string
	err := s.db.QueryRowContext(ctx,
		"SELECT id FROM template WHERE name = $1 AND deleted_at IS NULL", name).Scan(&owner)
	if err != nil {
		// Deleted meanwhile, or the database failed: the conflict stands.
		return fmt.Errorf("template name %q is already used: %w", name, ErrConflict)
	}
	return fmt.Errorf("template name %q is already used by template %s: %w", name, owner, ErrConflict)
}

const templateColumns = "id, name, data, created_at, updated_at"

func scanTemplate(row interface{ Scan(...any) error }) (*template.WorkflowTemplate, error) {
	var t template.WorkflowTemplate
	var created, updated time.Time
	if err := row.Scan(&t.Id, &t.Name, &t.Data, &created, &updated); err != nil {
		return nil, err
	}
	t.CreatedAt, t.UpdatedAt = timestamppb.New(created), timestamppb.New(updated)
	return &t, nil
}

// GetTemplate returns the live template with the id, or with the name
// when id is empty. With both, both must match.
func (s *Store) GetTemplate(ctx context.Context, id, name string) (*template.WorkflowTemplate, error) {
	var (
		what  string
		query = "SELECT " + templateColumns + " FROM template WHERE deleted_at IS NULL"
		args  []any
	)
	switch {
	case id == "" && name == "":
		return nil, fmt.Errorf("get template: give an id or a name: %w", ErrInvalid)
	case id != "":
		uid, err := parseID("template", id)
		if err != nil {
			return nil, err
		}
		what, query, args = "template "+uid, query+" AND id = $1", []any{uid}
		if name != "" {
			what, query, args = fmt.Sprintf("template %s named %q", uid, name), query+" AND name = $2", append(args, name)
		}
	default:
		what, query, args = fmt.Sprintf("template %q", name), query+" AND name = $1", []any{name}
	}
	t, err := scanTemplate(s.db.QueryRowContext(ctx, query, args...))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("get %s: %w", what, err)
	}
	return t, nil
}

// templatePage is how many templates ListTemplates reads per query.
const templatePage = 100

// ListTemplates calls fn for every live template whose name matches
// pattern, in name order, and stops at fn's first error, which it returns.
// The pattern is Tinkerbell v0.6's: an SQL ILIKE pattern (case-insensitive;
// % any run of characters, _ one character, a backslash makes the next
// character literal) in which * also stands for %; "" matches all. As in
// v0.6 the templates come without their data (id, name and times only):
// GetTemplate has the YAML. No query is open while fn runs.
func (s *Store) ListTemplates(ctx context.Context, pattern string, fn func(*template.WorkflowTemplate) error) error {
	like := ilikePattern(pattern)
	afterName, afterID := "", uuid.Nil.String()
	for {
		page, err := s.templatePage(ctx, like, afterName, afterID)
		if err != nil {
			return err
		}
		for _, t := range page {
			if err := fn(t); err != nil {
				return err
			}
		}
		if len(page) < templatePage {
			return nil
		}
		last := page[len(page)-1]
		afterName, afterID = last.Name, last.Id
	}
}

func (s *Store) templatePage(ctx context.Context, like, afterName, afterID string) ([]*template.WorkflowTemplate, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT id, name, created_at, updated_at FROM template
		WHERE deleted_at IS NULL AND name ILIKE $1 ESCAPE '\'
		AND (name, id) > ($2, $3::uuid)
		ORDER BY name, id LIMIT $4`, like, afterName, afterID, templatePage)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var page []*template.WorkflowTemplate
	for rows.Next() {
		var (
			t                template.WorkflowTemplate
			created, updated time.Time
		)
		if err := rows.Scan(&t.Id, &t.Name, &created, &updated); err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		t.CreatedAt, t.UpdatedAt = timestamppb.New(created), timestamppb.New(updated)
		page = append(page, &t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return page, nil
}

// ilikePattern turns a ListTemplates name filter into the ILIKE pattern
// Tinkerbell v0.6 built from it: * becomes %, everything else stays, so %
// and _ are wildcards and a backslash escapes. "" matches every name. One
// case v0.6 failed on is made to work: a pattern ending in a lone
// backslash (PostgreSQL refuses "LIKE pattern must not end with escape
// character") matches a literal backslash there.
func ilikePattern(name string) string {
	if name == "" {
		return "%"
	}
	p := strings.ReplaceAll(name, "*", "%")
	trailing := len(p) - len(strings.TrimRight(p, `\`))
	if trailing%2 == 1 {
		p += `\`
	}
	return p
}

// UpdateTemplate replaces the name and data of the live template with the
// id; an empty name or data keeps the stored one. A name another live
// template has is an ErrConflict; with unchangedSince, a template updated
// at another time is an ErrPrecondition.
func (s *Store) UpdateTemplate(ctx context.Context, id, name, data string, unchangedSince *time.Time) error {
	uid, err := parseID("template", id)
	if err != nil {
		return err
	}
	if name == "" && data == "" {
		return fmt.Errorf("update template %s: nothing to change: %w", uid, ErrInvalid)
	}
	// unchangedSince is the updated_at the caller read: an edit made from
	// a copy someone else has changed since is refused, not saved over
	// theirs. PostgreSQL keeps microseconds.
	var since any
	if unchangedSince != nil {
		since = unchangedSince.UTC().Truncate(time.Microsecond)
	}
	res, err := s.db.ExecContext(ctx, `
		UPDATE template SET
			name = COALESCE(NULLIF($2, ''), name),
			data = COALESCE(NULLIF($3, ''), data),
			updated_at = now()
		WHERE id = $1 AND deleted_at IS NULL AND ($4::timestamptz IS NULL OR updated_at = $4::timestamptz)`, uid, name, data, since)
	switch {
	case sqlState(err) == codeUniqueViolation:
		return s.nameTaken(ctx, name)
	case err != nil:
		return fmt.Errorf("update template %s: %w", uid, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update template %s: %w", uid, err)
	} else if n == 0 {
		return s.whyNotUpdated(ctx, uid, unchangedSince)
	}
	s.log.InfoContext(ctx, "template updated", "template_id", uid, "template", name)
	return nil
}

// whyNotUpdated tells a template that is gone from one changed since the
// caller read it.
func (s *Store) whyNotUpdated(ctx context.Context, uid string, since *time.Time) error {
	var at time.Time
	err := s.db.QueryRowContext(ctx, "SELECT updated_at FROM template WHERE id = $1 AND deleted_at IS NULL", uid).Scan(&at)
	switch {
	case errors.Is(err, sql.ErrNoRows) || since == nil:
		return fmt.Errorf("template %s: %w", uid, ErrNotFound)
	case err != nil:
		return fmt.Errorf("update template %s: %w", uid, err)
	}
	return fmt.Errorf("template %s was changed at %s, after the copy this update was made from (updated_at %s): read it again: %w",
		uid, at.UTC().Format(time.RFC3339Nano), since.UTC().Format(time.RFC3339Nano), ErrPrecondition)
}

// DeleteTemplate marks the live template with the id deleted; its name is
// free again. Workflows made from it keep their rendered copy.
func (s *Store) DeleteTemplate(ctx context.Context, id string) error {
	uid, err := parseID("template", id)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx,
		"UPDATE template SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL", uid)
	if err != nil {
		return fmt.Errorf("delete template %s: %w", uid, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete template %s: %w", uid, err)
	} else if n == 0 {
		return fmt.Errorf("template %s: %w", uid, ErrNotFound)
	}
	s.log.InfoContext(ctx, "template deleted", "template_id", uid)
	return nil
}
