package store

// The server's netboot switch (Tinkerbell's toggleAllowNetboot): a workflow
// that toggles netboot sets allow_pxe on its machines' records when it is
// created and clears it when it succeeds, in the transaction that creates
// or ends it, so no crash leaves a workflow SUCCESS with its machine still
// netbooting.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

// Netboot notes in workflow_event: task and action NetbootEventName, worker
// the hardware id, state the workflow's when the switch happened (PENDING
// at creation, SUCCESS at the end).
const (
	NetbootEventName = "netboot"
	// NetbootEventIndex is their action_index: they belong to no action.
	NetbootEventIndex = -2
)

// netbootNote is one machine's switch, for the log.
type netbootNote struct {
	hwID    string
	changed bool
	message string
}

// setAllowPXE sets allow_pxe on every interface of hw (adding the netboot
// settings an interface lacks) and reports whether anything changed.
func setAllowPXE(hw *hardware.Hardware, allow bool) bool {
	changed := false
	for _, in := range hw.GetNetwork().GetInterfaces() {
		if in == nil {
			continue
		}
		if in.Netboot == nil {
			in.Netboot = &hardware.Hardware_Netboot{}
		}
		if in.Netboot.AllowPxe != allow {
			in.Netboot.AllowPxe = allow
			changed = true
		}
	}
	return changed
}

// switchNetboot sets allow_pxe to allow on each record of hwIDs for
// workflow wfID, within tx: a changed record gets a new version and is
// announced on ChannelHardware, as a push is, so boots and metadata see it
// on their Watch streams; each machine gets an event on the workflow saying
// what was done. Switching off skips a machine another live toggling
// workflow is still waiting to netboot.
func switchNetboot(ctx context.Context, tx *sql.Tx, wfID string, hwIDs []string, allow bool, state engine.State, now time.Time) ([]netbootNote, error) {
	var notes []netbootNote
	for _, hwID := range hwIDs {
		n, err := switchOne(ctx, tx, wfID, hwID, allow)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, action_index, state, message, created_at)
			VALUES ($1, $2, $3, $3, $4, $5, $6, $7)`,
			wfID, hwID, NetbootEventName, NetbootEventIndex, int32(state), n.message, now); err != nil {
			return nil, fmt.Errorf("workflow %s: recording the netboot switch of hardware %s: %w", wfID, hwID, err)
		}
		notes = append(notes, n)
	}
	return notes, nil
}

func switchOne(ctx context.Context, tx *sql.Tx, wfID, hwID string, allow bool) (netbootNote, error) {
	n := netbootNote{hwID: hwID}
	// The row lock orders this against pushes and the other workflows of
	// the machine: the check below sees those that committed first.
	hw, err := scanHardware(tx.QueryRowContext(ctx,
		`SELECT `+hardwareColumns+` FROM hardware h WHERE h.id = $1 FOR NO KEY UPDATE`, hwID))
	if errors.Is(err, sql.ErrNoRows) {
		n.message = fmt.Sprintf("hardware %s no longer exists: its netboot was not switched %s", hwID, onOff(allow))
		return n, nil
	}
	if err != nil {
		return n, fmt.Errorf("netboot of hardware %s: %w", hwID, err)
	}
	who := describeHardware(hw)
	if !allow {
		var other string
		err := tx.QueryRowContext(ctx, `
			SELECT id FROM workflow
			WHERE toggle_netboot AND $1 = ANY (netboot_hardware) AND id <> $2 AND deleted_at IS NULL AND state IN ($3, $4)
			ORDER BY created_at LIMIT 1`,
			hwID, wfID, int32(engine.Pending), int32(engine.Running)).Scan(&other)
		switch {
		case err == nil:
			n.message = fmt.Sprintf("workflow succeeded; allow_pxe left on for %s: workflow %s still needs it to netboot", who, other)
			return n, nil
		case !errors.Is(err, sql.ErrNoRows):
			return n, fmt.Errorf("netboot of hardware %s: other workflows: %w", hwID, err)
		}
	}
	if n.changed = setAllowPXE(hw, allow); n.changed {
		hw.Version = 0 // the version lives in its column
		data, err := spec.MarshalHardware(hw)
		if err != nil {
			return n, fmt.Errorf("netboot of hardware %s: %w", hwID, err)
		}
		if _, err := tx.ExecContext(ctx, `
			UPDATE hardware SET data = $2, version = version + 1, updated_at = now() WHERE id = $1`,
			hwID, string(data)); err != nil {
			return n, fmt.Errorf("netboot of hardware %s: %w", hwID, err)
		}
		if err := notify(ctx, tx, ChannelHardware, hwID); err != nil {
			return n, err
		}
	}
	switch {
	case allow && n.changed:
		n.message = fmt.Sprintf("allow_pxe switched on for %s: it netboots into this workflow; herd-server switches it off at SUCCESS", who)
	case allow:
		n.message = fmt.Sprintf("allow_pxe already on for %s: it netboots into this workflow; herd-server switches it off at SUCCESS", who)
	case n.changed:
		n.message = fmt.Sprintf("workflow succeeded; allow_pxe switched off for %s: it boots from its disk next", who)
	default:
		n.message = fmt.Sprintf("workflow succeeded; allow_pxe already off for %s", who)
	}
	return n, nil
}

// netbootAfter switches the netboot of a toggling workflow's machines as
// its state change from -> to requires (engine.NetbootChange), within tx,
// which has just made that change.
func netbootAfter(ctx context.Context, tx *sql.Tx, wfID string, from, to engine.State, now time.Time) ([]netbootNote, error) {
	allow, set := engine.NetbootChange(from, to)
	if !set {
		return nil, nil
	}
	var (
		toggle bool
		hwIDs  pq.StringArray
	)
	if err := tx.QueryRowContext(ctx, `SELECT toggle_netboot, netboot_hardware FROM workflow WHERE id = $1`, wfID).
		Scan(&toggle, &hwIDs); err != nil {
		return nil, fmt.Errorf("workflow %s netboot: %w", wfID, err)
	}
	if !toggle {
		return nil, nil
	}
	return switchNetboot(ctx, tx, wfID, hwIDs, allow, to, now)
}

// logNetboot logs the switches of one workflow once they committed.
func (s *Store) logNetboot(ctx context.Context, wfID string, notes []netbootNote) {
	for _, n := range notes {
		s.log.InfoContext(ctx, "workflow netboot toggle", "workflow_id", wfID, "hardware_id", n.hwID,
			"changed", n.changed, "note", n.message)
	}
}

// describeHardware names a machine in events: its id and MACs.
func describeHardware(hw *hardware.Hardware) string {
	macs, _ := spec.HardwareAddresses(hw)
	if len(macs) == 0 {
		return "hardware " + hw.GetId()
	}
	return fmt.Sprintf("hardware %s (%s)", hw.GetId(), strings.Join(macs, ", "))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
