package store

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// TestCredentialGeneration: a record keeps its generation through pushes,
// loses it with its deletion, and the same id pushed again gets a new one;
// every read the Watch uses returns it.
func TestCredentialGeneration(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()
	gen := func() int64 {
		t.Helper()
		g, found, err := s.HardwareCredentialGeneration(ctx, id)
		if err != nil || !found {
			t.Fatalf("generation of %s: %d %v %v", id, g, found, err)
		}
		return g
	}
	if _, found, err := s.HardwareCredentialGeneration(ctx, id); found || err != nil {
		t.Fatalf("record not pushed yet: found %v, %v", found, err)
	}
	mustPush(t, s, newHW(id, iface{mac1, ip1}))
	first := gen()
	mustPush(t, s, newHW(id, iface{mac1, "10.9.0.99"}))
	if g := gen(); g != first {
		t.Fatalf("a push replacing the record changed its generation %d -> %d", first, g)
	}
	_, g, err := s.HardwareWithGeneration(ctx, id)
	if err != nil || g != first {
		t.Fatalf("HardwareWithGeneration: %d %v, want %d", g, err, first)
	}
	var listed int64
	if err := s.AllHardwareWithGeneration(ctx, func(hw *hardware.Hardware, g int64) error {
		if hw.GetId() == id {
			listed = g
		}
		return nil
	}); err != nil || listed != first {
		t.Fatalf("AllHardwareWithGeneration: %d %v, want %d", listed, err, first)
	}

	if err := s.DeleteHardware(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.HardwareCredentialGeneration(ctx, id); found || err != nil {
		t.Fatalf("deleted record: found %v, %v", found, err)
	}
	_, _, err = s.HardwareWithGeneration(ctx, id)
	wantErr(t, err, ErrNotFound, id)
	mustPush(t, s, newHW(id, iface{mac1, ip1}))
	if g := gen(); g == first {
		t.Fatal("the id pushed again got the old generation back")
	}
	if _, found, err := s.HardwareCredentialGeneration(ctx, "not-a-uuid"); found || err != nil {
		t.Fatalf("not a UUID: found %v, %v", found, err)
	}
}

// TestWorkerTakesPart: only the machines a live workflow runs on take part
// in it; once it has finished (or is deleted) none does.
func TestWorkerTakesPart(t *testing.T) {
	f := newFleet(t, 0)
	ctx := context.Background()
	id := f.create(t)
	stranger := uuid.NewString()
	for _, c := range []struct {
		workflow, worker string
		want             bool
	}{
		{id, f.hw1, true}, {id, f.hw2, true}, {id, stranger, false}, {id, "not-a-uuid", false},
		{uuid.NewString(), f.hw1, false},
	} {
		if got, err := f.s.WorkerTakesPart(ctx, c.workflow, c.worker); err != nil || got != c.want {
			t.Errorf("WorkerTakesPart(%s, %s) = %v, %v; want %v", c.workflow, c.worker, got, err, c.want)
		}
	}
	if err := f.s.DeleteWorkflow(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := f.s.WorkerTakesPart(ctx, id, f.hw1); err != nil || got {
		t.Errorf("deleted workflow: %v, %v; want false", got, err)
	}

	done := f.create(t)
	f.mustReport(t, done, f.hw1, "disk", "wipe", workflow.State_STATE_RUNNING)
	f.mustReport(t, done, f.hw1, "disk", "wipe", workflow.State_STATE_FAILED)
	for _, w := range []string{f.hw1, f.hw2} {
		if got, err := f.s.WorkerTakesPart(ctx, done, w); err != nil || got {
			t.Errorf("finished (FAILED) workflow, worker %s: %v, %v; want false", w, got, err)
		}
	}
	ok := f.create(t)
	f.runAll(t, ok)
	if got, err := f.s.WorkerTakesPart(ctx, ok, f.hw2); err != nil || got {
		t.Errorf("finished (SUCCESS) workflow: %v, %v; want false", got, err)
	}
}
