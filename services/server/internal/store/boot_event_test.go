package store

import (
	"context"
	"testing"
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
