package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/herd-metal/herd/proto/workflow"
)

func TestRecordBootEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)

	// No workflow yet: nothing recorded, no error.
	if id, err := f.s.RecordBootEvent(ctx, f.hw1, "ipxe script served"); err != nil || id != "" {
		t.Fatalf("without a workflow: %q %v", id, err)
	}
	older := f.create(t)
	newer := f.create(t)
	id, err := f.s.RecordBootEvent(ctx, f.hw1, "ipxe script served")
	if err != nil || id != newer {
		t.Fatalf("recorded on %q (%v), want the newest workflow %s (not %s)", id, err, newer, older)
	}
	// hw2 takes part too (its task comes later): its boot is noted as well.
	if id, err := f.s.RecordBootEvent(ctx, f.hw2, "kernel fetched"); err != nil || id != newer {
		t.Fatalf("second machine: %q %v", id, err)
	}
	_, evs := events(t, f.s, newer, 0)
	if len(evs) != 2 || evs[0].GetTaskName() != "boot" || evs[0].GetMessage() != "ipxe script served" ||
		evs[1].GetWorkerId() != f.hw2 || evs[1].GetMessage() != "kernel fetched" {
		t.Fatalf("events %v", evs)
	}
	// Boot notes do not move the workflow.
	if c, err := f.s.WorkflowContext(ctx, newer); err != nil || c.GetCurrentActionIndex() != 0 || c.GetCurrentAction() != "" {
		t.Fatalf("context after boot notes: %v %v", c, err)
	}
	// Deleted workflows take no notes; the next newest does.
	if err := f.s.DeleteWorkflow(ctx, newer); err != nil {
		t.Fatal(err)
	}
	if id, err := f.s.RecordBootEvent(ctx, f.hw1, "again"); err != nil || id != older {
		t.Fatalf("after delete: %q %v, want %s", id, err, older)
	}
	_, err = f.s.RecordBootEvent(ctx, "not-an-id", "x")
	wantErr(t, err, ErrInvalid)
}

// TestBootNotesAfterEnd: a machine's notes go on its finished workflow for
// NotesAfterEnd after the end, each message once; a live workflow takes
// them first; past the window nothing is recorded.
func TestBootNotesAfterEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	done := f.create(t)
	f.runAll(t, done)
	note := func(msg, want string) {
		t.Helper()
		if id, err := f.s.RecordBootEvent(ctx, f.hw1, msg); err != nil || id != want {
			t.Fatalf("note %q: recorded on %q (%v), want %q", msg, id, err, want)
		}
	}
	note("metadata read by cloud-init (first: meta-data/instance-id)", done)
	note("metadata read by cloud-init (first: meta-data/instance-id)", "") // once per message after the end
	note("dhcp offer 10.0.5.10: ipxe script", done)
	_, evs := events(t, f.s, done, 0)
	var boot []string
	for _, ev := range evs {
		if ev.GetTaskName() == "boot" {
			boot = append(boot, ev.GetMessage())
		}
	}
	if want := []string{"metadata read by cloud-init (first: meta-data/instance-id)", "dhcp offer 10.0.5.10: ipxe script"}; !slices.Equal(boot, want) {
		t.Fatalf("boot notes on the finished workflow %q, want %q", boot, want)
	}
	if wf, err := f.s.GetWorkflow(ctx, done); err != nil || wf.GetState() != workflow.State_STATE_SUCCESS {
		t.Fatalf("after the notes the finished workflow is %v (%v)", wf.GetState(), err)
	}

	// A new live workflow takes the notes, also the message already
	// noted after the other's end.
	live := f.create(t)
	note("metadata read by cloud-init (first: meta-data/instance-id)", live)
	if err := f.s.DeleteWorkflow(ctx, live); err != nil {
		t.Fatal(err)
	}
	// Past the window: no workflow takes the note.
	if _, err := f.s.db.ExecContext(ctx, `UPDATE workflow SET updated_at = now() - $2 * interval '1 second' WHERE id = $1`,
		done, int64((NotesAfterEnd+time.Minute)/time.Second)); err != nil {
		t.Fatal(err)
	}
	note("kernel fetched", "")
}
