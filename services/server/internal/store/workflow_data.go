package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// WorkflowData returns a version of a workflow's data (0: the latest) and
// the version returned. A workflow without data yet has empty data at
// version 0, as in Tinkerbell v0.6: its worker then starts the data file
// with {} and sends it as version 1, and herd's versions line up with
// v0.6's. A version dropped from the bounded history, or never written, is
// ErrNotFound.
func (s *Store) WorkflowData(ctx context.Context, id string, version int32) ([]byte, int32, error) {
	return s.workflowData(ctx, id, version, "data")
}

// WorkflowMetadata is WorkflowData for the metadata stored with each
// version (who changed the data); empty too while there is no version.
func (s *Store) WorkflowMetadata(ctx context.Context, id string, version int32) ([]byte, int32, error) {
	return s.workflowData(ctx, id, version, "metadata")
}

func (s *Store) workflowData(ctx context.Context, id string, version int32, column string) ([]byte, int32, error) {
	if version < 0 {
		return nil, 0, fmt.Errorf("workflow %s: data version %d: versions start at 1 (0 means the latest): %w", id, version, ErrInvalid)
	}
	id, err := workflowExists(ctx, s.db, id)
	if err != nil {
		return nil, 0, err
	}
	var (
		b []byte
		v int32
	)
	if version == 0 {
		err = s.db.QueryRowContext(ctx, `SELECT `+column+`, version FROM workflow_data
			WHERE workflow_id = $1 ORDER BY version DESC LIMIT 1`, id).Scan(&b, &v)
		if errors.Is(err, sql.ErrNoRows) {
			return []byte{}, 0, nil
		}
	} else {
		err = s.db.QueryRowContext(ctx, `SELECT `+column+`, version FROM workflow_data
			WHERE workflow_id = $1 AND version = $2`, id, version).Scan(&b, &v)
		if errors.Is(err, sql.ErrNoRows) {
			var latest int32
			if err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM workflow_data
				WHERE workflow_id = $1`, id).Scan(&latest); err != nil {
				return nil, 0, fmt.Errorf("reading workflow %s %s: %w", id, column, err)
			}
			return nil, 0, fmt.Errorf("workflow %s has no data version %d (the latest is %d; the store keeps the last %d): %w",
				id, version, latest, s.opts.MaxDataVersions, ErrNotFound)
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading workflow %s %s: %w", id, column, err)
	}
	return b, v, nil
}

// UpdateWorkflowData stores a new version of a workflow's data with its
// metadata (both JSON; empty metadata is {}), drops versions beyond the
// history bound, and returns the new version number. Data and metadata
// equal to the latest version's store nothing and return that version.
// Not JSON, or larger than the size limit -> ErrInvalid; a deleted
// workflow -> ErrPrecondition.
func (s *Store) UpdateWorkflowData(ctx context.Context, id string, metadata, data []byte) (int32, error) {
	if len(metadata) == 0 {
		metadata = []byte("{}")
	}
	for _, p := range []struct {
		what string
		b    []byte
	}{{"data", data}, {"metadata", metadata}} {
		if max := s.opts.MaxDataBytes; max > 0 && len(p.b) > max {
			return 0, fmt.Errorf("workflow %s: %s is %d bytes, the limit is %d: %w", id, p.what, len(p.b), max, ErrInvalid)
		}
		if !json.Valid(p.b) {
			return 0, fmt.Errorf("workflow %s: %s is not JSON: %w", id, p.what, ErrInvalid)
		}
	}
	var (
		version int32
		resent  bool
	)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		w, err := getWorkflow(ctx, tx, id, "FOR UPDATE")
		if err != nil {
			return err
		}
		id := w.id
		if w.deletedAt.Valid {
			return fmt.Errorf("workflow %s was deleted: %w", id, ErrPrecondition)
		}
		// A worker resends its update when the answer is lost (link down,
		// server restarted); the resend must not add a version, so data and
		// metadata equal to the latest version's (as jsonb, the way they are
		// stored) are that version. Tinkerbell v0.6 added one every time.
		// The workflow row's lock keeps this check and the insert together.
		var latest int32
		resent = false // a retried transaction asks again
		err = tx.QueryRowContext(ctx, `SELECT version, data = $2::jsonb AND metadata = $3::jsonb FROM workflow_data
			WHERE workflow_id = $1 ORDER BY version DESC LIMIT 1`, id, string(data), string(metadata)).Scan(&latest, &resent)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return dataRefused(id, "reading the latest data version", err)
		}
		if resent {
			version = latest
			return nil
		}
		version = latest + 1
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO workflow_data (workflow_id, version, data, metadata) VALUES ($1, $2, $3, $4)`,
			id, version, string(data), string(metadata)); err != nil {
			return dataRefused(id, "storing data", err)
		}
		if keep := s.opts.MaxDataVersions; keep > 0 {
			if _, err := tx.ExecContext(ctx,
				`DELETE FROM workflow_data WHERE workflow_id = $1 AND version <= $2`, id, version-int32(keep)); err != nil {
				return fmt.Errorf("workflow %s: dropping old data versions: %w", id, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !resent {
		s.announce.workflow(id)
	}
	return version, nil
}

// dataRefused wraps an error of a statement given the data and metadata:
// ErrInvalid if PostgreSQL refused them as JSON.
func dataRefused(id, doing string, err error) error {
	if strings.HasPrefix(sqlState(err), "22") { // data exception: JSON PostgreSQL refuses (e.g. \u0000)
		return fmt.Errorf("workflow %s: data or metadata refused by the database: %w: %w", id, ErrInvalid, err)
	}
	return fmt.Errorf("workflow %s: %s: %w", id, doing, err)
}
