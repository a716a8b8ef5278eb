package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// SealedCredential is a BMC credential as the database holds it: sealed
// by the server's keyring; the store never sees the secret.
type SealedCredential struct {
	Name      string
	KeyID     string
	Sealed    []byte
	UpdatedAt time.Time
	// UsedBy lists the hardware records whose bmc.credential names it
	// (filled by ListBMCCredentials only).
	UsedBy []string
}

// PutBMCCredential creates the named credential or replaces its secret.
func (s *Store) PutBMCCredential(ctx context.Context, name, keyID string, sealed []byte) (time.Time, error) {
	var at time.Time
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `
			INSERT INTO bmc_credential (name, key_id, sealed) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE
			SET key_id = excluded.key_id, sealed = excluded.sealed, updated_at = now()
			RETURNING updated_at`, name, keyID, sealed).Scan(&at)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("store bmc credential %s: %w", name, err)
	}
	s.log.InfoContext(ctx, "bmc credential stored", "credential", name, "key_id", keyID)
	return at, nil
}

// BMCCredential returns the named credential, still sealed.
func (s *Store) BMCCredential(ctx context.Context, name string) (SealedCredential, error) {
	c := SealedCredential{Name: name}
	err := s.db.QueryRowContext(ctx,
		"SELECT key_id, sealed, updated_at FROM bmc_credential WHERE name = $1", name).Scan(&c.KeyID, &c.Sealed, &c.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("bmc credential %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("bmc credential %s: %w", name, err)
	}
	return c, nil
}

// ListBMCCredentials returns every credential by name, with the records
// that use it and without its sealed secret.
func (s *Store) ListBMCCredentials(ctx context.Context) ([]SealedCredential, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT c.name, c.key_id, c.updated_at,
			coalesce(array_agg(h.id::text ORDER BY h.id) FILTER (WHERE h.id IS NOT NULL), '{}')
		FROM bmc_credential c LEFT JOIN hardware h ON h.bmc_credential = c.name
		GROUP BY c.name ORDER BY c.name`)
	if err != nil {
		return nil, fmt.Errorf("list bmc credentials: %w", err)
	}
	defer rows.Close()
	var out []SealedCredential
	for rows.Next() {
		var c SealedCredential
		var used pq.StringArray
		if err := rows.Scan(&c.Name, &c.KeyID, &c.UpdatedAt, &used); err != nil {
			return nil, fmt.Errorf("list bmc credentials: %w", err)
		}
		c.UsedBy = used
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list bmc credentials: %w", err)
	}
	return out, nil
}

// DeleteBMCCredential removes a credential no hardware record names.
func (s *Store) DeleteBMCCredential(ctx context.Context, name string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var user string
		err := tx.QueryRowContext(ctx,
			"SELECT id::text FROM hardware WHERE bmc_credential = $1 ORDER BY id LIMIT 1 FOR SHARE", name).Scan(&user)
		switch {
		case err == nil:
			return fmt.Errorf("bmc credential %s is used by hardware %s; point its bmc.credential elsewhere first: %w", name, user, ErrPrecondition)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM bmc_credential WHERE name = $1", name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("bmc credential %s: %w", name, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrPrecondition) {
			return err
		}
		if sqlState(err) == codeForeignKeyViolation {
			// A push naming it committed between the check and the delete.
			return fmt.Errorf("bmc credential %s is in use by a hardware record: %w", name, ErrPrecondition)
		}
		return fmt.Errorf("delete bmc credential %s: %w", name, err)
	}
	s.log.InfoContext(ctx, "bmc credential deleted", "credential", name)
	return nil
}

// ResealBMCCredentials passes every credential not sealed under current
// to reseal and stores what it returns, each in its own transaction: a
// key rotation. Credentials reseal cannot open are skipped and listed in
// the error; the others are resealed anyway.
func (s *Store) ResealBMCCredentials(ctx context.Context, current string,
	reseal func(SealedCredential) (keyID string, sealed []byte, err error)) (int, error) {
	rows, err := s.db.QueryContext(ctx,
		"SELECT name, key_id, sealed FROM bmc_credential WHERE key_id <> $1 ORDER BY name", current)
	if err != nil {
		return 0, fmt.Errorf("reseal bmc credentials: %w", err)
	}
	var old []SealedCredential
	for rows.Next() {
		var c SealedCredential
		if err := rows.Scan(&c.Name, &c.KeyID, &c.Sealed); err != nil {
			rows.Close()
			return 0, fmt.Errorf("reseal bmc credentials: %w", err)
		}
		old = append(old, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("reseal bmc credentials: %w", err)
	}
	done := 0
	var failed []error
	for _, c := range old {
		id, sealed, err := reseal(c)
		if err != nil {
			failed = append(failed, fmt.Errorf("bmc credential %s: %w", c.Name, err))
			continue
		}
		// Only if nobody set it meanwhile (the key id is still the old one).
		res, err := s.db.ExecContext(ctx,
			"UPDATE bmc_credential SET key_id = $2, sealed = $3 WHERE name = $1 AND key_id = $4 AND sealed = $5",
			c.Name, id, sealed, c.KeyID, c.Sealed)
		if err != nil {
			return done, fmt.Errorf("reseal bmc credential %s: %w", c.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			done++
		}
	}
	return done, errors.Join(failed...)
}
