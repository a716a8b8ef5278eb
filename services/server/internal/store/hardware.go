package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// PushHardware stores hw, creating it or replacing the record with its id,
// and returns it as stored: addresses normalized, Version bumped (1 for a
// new record). The record's MACs and IPs are claimed in hardware_address;
// when another record holds one of them the push fails with ErrConflict
// naming the address and its owner, and nothing changes. The caller has
// validated hw (spec.ValidateHardware); its Version is ignored.
func (s *Store) PushHardware(ctx context.Context, hw *hardware.Hardware) (*hardware.Hardware, error) {
	if hw == nil {
		return nil, fmt.Errorf("push hardware: no record: %w", ErrInvalid)
	}
	rec := proto.Clone(hw).(*hardware.Hardware)
	spec.NormalizeHardware(rec)
	id, err := parseID("hardware", rec.GetId())
	if err != nil {
		return nil, err
	}
	rec.Id = id
	rec.Version = 0 // the version lives in its column
	data, err := spec.MarshalHardware(rec)
	if err != nil {
		return nil, fmt.Errorf("push hardware %s: %w: %w", id, ErrInvalid, err)
	}
	macs, ips := spec.HardwareAddresses(rec)
	kinds, values := claims(macs, ips)
	var bmcCredential sql.NullString // NULL: no BMC, nothing to reference
	if c := rec.GetBmc().GetCredential(); c != "" {
		bmcCredential = sql.NullString{String: c, Valid: true}
	}

	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// The upsert locks the row: pushes of one id take turns.
		if err := tx.QueryRowContext(ctx, `
			INSERT INTO hardware (id, data, bmc_credential) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE
			SET data = excluded.data, bmc_credential = excluded.bmc_credential,
				version = hardware.version + 1, updated_at = now()
			RETURNING version`, id, string(data), bmcCredential).Scan(&rec.Version); err != nil {
			if sqlState(err) == codeForeignKeyViolation {
				return fmt.Errorf("hardware %s: bmc.credential %q is not a stored credential; store it first (herd bmc credential set %s): %w",
					id, rec.GetBmc().GetCredential(), rec.GetBmc().GetCredential(), ErrPrecondition)
			}
			return fmt.Errorf("push hardware %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx,
			"DELETE FROM hardware_address WHERE hardware_id = $1", id); err != nil {
			return fmt.Errorf("push hardware %s: release addresses: %w", id, err)
		}
		// DO NOTHING waits for a concurrent claim of the same address to
		// commit or roll back; the query after it then sees the owner. The
		// sorted order keeps two pushes from waiting on each other.
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO hardware_address (kind, value, hardware_id)
			SELECT k, v, $3 FROM unnest($1::text[], $2::text[]) AS a (k, v)
			ORDER BY k, v
			ON CONFLICT (kind, value) DO NOTHING`,
			stringArray(kinds), stringArray(values), id); err != nil {
			return fmt.Errorf("push hardware %s: claim addresses: %w", id, err)
		}
		if err := addressConflicts(ctx, tx, id, kinds, values); err != nil {
			return err
		}
		return notify(ctx, tx, ChannelHardware, id)
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "hardware pushed", "hardware_id", id, "version", rec.Version, "macs", macs, "ips", ips)
	return rec, nil
}

// claims lists the addresses as (kind, value) pairs, sorted the way the
// claims are inserted.
func claims(macs, ips []string) (kinds, values []string) {
	for _, ip := range ips {
		kinds, values = append(kinds, "ip"), append(values, ip)
	}
	for _, m := range macs {
		kinds, values = append(kinds, "mac"), append(values, m)
	}
	return kinds, values
}

// addressConflicts fails with ErrConflict when another record holds one
// of the addresses.
func addressConflicts(ctx context.Context, tx *sql.Tx, id string, kinds, values []string) error {
	rows, err := tx.QueryContext(ctx, `
		SELECT a.kind, a.value, a.hardware_id
		FROM hardware_address a
		JOIN unnest($1::text[], $2::text[]) AS c (k, v) ON a.kind = c.k AND a.value = c.v
		WHERE a.hardware_id <> $3
		ORDER BY a.kind DESC, a.value`, stringArray(kinds), stringArray(values), id)
	if err != nil {
		return fmt.Errorf("push hardware %s: check addresses: %w", id, err)
	}
	defer rows.Close()
	var taken []string
	for rows.Next() {
		var kind, value, owner string
		if err := rows.Scan(&kind, &value, &owner); err != nil {
			return err
		}
		taken = append(taken, fmt.Sprintf("%s %s already belongs to hardware %s", kind, value, owner))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(taken) > 0 {
		return fmt.Errorf("push hardware %s: %s: %w", id, strings.Join(taken, "; "), ErrConflict)
	}
	return nil
}

// hardwareColumns is what scanHardware reads.
const hardwareColumns = "h.data, h.version"

func scanHardware(row interface{ Scan(...any) error }) (*hardware.Hardware, error) {
	var data string
	var version int64
	if err := row.Scan(&data, &version); err != nil {
		return nil, err
	}
	return decodeHardware(data, version)
}

func decodeHardware(data string, version int64) (*hardware.Hardware, error) {
	hw, err := spec.ParseHardware([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("hardware record in the database does not read back: %w", err)
	}
	hw.Version = version
	return hw, nil
}

// HardwareByID returns the record with the id.
func (s *Store) HardwareByID(ctx context.Context, id string) (*hardware.Hardware, error) {
	uid, err := parseID("hardware", id)
	if err != nil {
		return nil, err
	}
	return s.oneHardware(ctx, "hardware "+uid,
		"SELECT "+hardwareColumns+" FROM hardware h WHERE h.id = $1", uid)
}

// HardwareByMAC returns the record with an interface of that MAC, in any
// of the usual spellings.
func (s *Store) HardwareByMAC(ctx context.Context, mac string) (*hardware.Hardware, error) {
	m, err := spec.NormalizeMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	return s.oneHardware(ctx, "hardware with mac "+m, `
		SELECT `+hardwareColumns+` FROM hardware h
		JOIN hardware_address a ON a.hardware_id = h.id
		WHERE a.kind = 'mac' AND a.value = $1`, m)
}

// HardwareByIP returns the record with an interface of that IP address.
func (s *Store) HardwareByIP(ctx context.Context, ip string) (*hardware.Hardware, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IP address: %w", ip, ErrInvalid)
	}
	return s.oneHardware(ctx, "hardware with ip "+a.String(), `
		SELECT `+hardwareColumns+` FROM hardware h
		JOIN hardware_address a ON a.hardware_id = h.id
		WHERE a.kind = 'ip' AND a.value = $1`, a.String())
}

func (s *Store) oneHardware(ctx context.Context, what, query string, arg string) (*hardware.Hardware, error) {
	hw, err := scanHardware(s.db.QueryRowContext(ctx, query, arg))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return hw, nil
}

// hardwarePage is how many records AllHardware reads per query.
const hardwarePage = 500

// AllHardware calls fn for every record, in id order, and stops at fn's
// first error, which it returns. Records are read a page at a time and no
// query is open while fn runs, so fn may be slow or use the store. The
// pages are not one snapshot: a record changed meanwhile may come old or
// new, so a watcher subscribes to ChannelHardware before it starts.
func (s *Store) AllHardware(ctx context.Context, fn func(*hardware.Hardware) error) error {
	return s.AllHardwareWithGeneration(ctx, func(hw *hardware.Hardware, _ int64) error { return fn(hw) })
}

// AllHardwareWithGeneration is AllHardware, with each record's credential
// generation (see HardwareCredentialGeneration).
func (s *Store) AllHardwareWithGeneration(ctx context.Context, fn func(hw *hardware.Hardware, generation int64) error) error {
	after := uuid.Nil.String()
	for {
		page, last, err := s.hardwarePage(ctx, after)
		if err != nil {
			return err
		}
		for _, r := range page {
			if err := fn(r.hw, r.generation); err != nil {
				return err
			}
		}
		if len(page) < hardwarePage {
			return nil
		}
		after = last
	}
}

type hardwareRow struct {
	hw         *hardware.Hardware
	generation int64
}

func (s *Store) hardwarePage(ctx context.Context, after string) (page []hardwareRow, last string, err error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT h.id, `+hardwareColumns+`, h.credential_generation FROM hardware h
		WHERE h.id > $1 ORDER BY h.id LIMIT $2`, after, hardwarePage)
	if err != nil {
		return nil, "", fmt.Errorf("list hardware: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var data string
		var version, gen int64
		if err := rows.Scan(&last, &data, &version, &gen); err != nil {
			return nil, "", fmt.Errorf("list hardware: %w", err)
		}
		hw, err := decodeHardware(data, version)
		if err != nil {
			return nil, "", fmt.Errorf("hardware %s: %w", last, err)
		}
		page = append(page, hardwareRow{hw, gen})
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("list hardware: %w", err)
	}
	return page, last, nil
}

// HardwareWithGeneration is HardwareByID, with the record's credential
// generation.
func (s *Store) HardwareWithGeneration(ctx context.Context, id string) (*hardware.Hardware, int64, error) {
	uid, err := parseID("hardware", id)
	if err != nil {
		return nil, 0, err
	}
	var data string
	var version, gen int64
	err = s.db.QueryRowContext(ctx, "SELECT "+hardwareColumns+", h.credential_generation FROM hardware h WHERE h.id = $1", uid).
		Scan(&data, &version, &gen)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, 0, fmt.Errorf("hardware %s: %w", uid, ErrNotFound)
	case err != nil:
		return nil, 0, fmt.Errorf("hardware %s: %w", uid, err)
	}
	hw, err := decodeHardware(data, version)
	if err != nil {
		return nil, 0, fmt.Errorf("hardware %s: %w", uid, err)
	}
	return hw, gen, nil
}

// HardwareCredentialGeneration returns the credential generation of the
// record with the id, bound into the worker credentials issued for it: new
// for each record created, kept by the pushes that replace it. found is
// false when no record has the id (deleted, or never pushed).
func (s *Store) HardwareCredentialGeneration(ctx context.Context, id string) (gen int64, found bool, err error) {
	uid, err := parseID("hardware", id)
	if err != nil {
		return 0, false, nil // no record has an id that is not a UUID
	}
	err = s.hot.QueryRowContext(ctx, "SELECT credential_generation FROM hardware WHERE id = $1", uid).Scan(&gen)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("hardware %s credential generation: %w", uid, err)
	}
	return gen, true, nil
}

// HardwareIDByIP is the id of the hardware record one of whose interfaces
// holds ip (found false: none does). ip is compared in its canonical form
// (netip.Addr.String), as pushes store it.
func (s *Store) HardwareIDByIP(ctx context.Context, ip string) (id string, found bool, err error) {
	err = s.hot.QueryRowContext(ctx, "SELECT hardware_id::text FROM hardware_address WHERE kind = 'ip' AND value = $1", ip).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("hardware by ip %s: %w", ip, err)
	}
	return id, true, nil
}

// DeleteHardware removes the record and its address claims. It refuses
// with ErrPrecondition while a workflow that is neither finished nor
// deleted runs on the machine.
func (s *Store) DeleteHardware(ctx context.Context, id string) error {
	uid, err := parseID("hardware", id)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// The row lock orders this against CreateWorkflow, which locks the
		// hardware rows it uses FOR SHARE.
		var found string
		err := tx.QueryRowContext(ctx, "SELECT id FROM hardware WHERE id = $1 FOR UPDATE", uid).Scan(&found)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("hardware %s: %w", uid, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete hardware %s: %w", uid, err)
		}
		var wf string
		err = tx.QueryRowContext(ctx, `
			SELECT w.id FROM workflow_worker ww JOIN workflow w ON w.id = ww.workflow_id
			WHERE ww.worker_id = $1 AND w.deleted_at IS NULL AND w.state NOT IN ($2, $3, $4)
			ORDER BY w.created_at LIMIT 1`, uid,
			int32(workflow.State_STATE_FAILED), int32(workflow.State_STATE_TIMEOUT), int32(workflow.State_STATE_SUCCESS),
		).Scan(&wf)
		switch {
		case err == nil:
			return fmt.Errorf("hardware %s is used by workflow %s, which has not finished; delete the workflow first: %w", uid, wf, ErrPrecondition)
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("delete hardware %s: %w", uid, err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM hardware WHERE id = $1", uid); err != nil {
			return fmt.Errorf("delete hardware %s: %w", uid, err)
		}
		return notify(ctx, tx, ChannelHardware, uid)
	})
	if err != nil {
		return err
	}
	s.log.InfoContext(ctx, "hardware deleted", "hardware_id", uid)
	return nil
}

// parseID checks that id is a UUID and returns it in canonical form.
func parseID(what, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("%s id %q is not a UUID: %w", what, id, ErrInvalid)
	}
	return u.String(), nil
}
