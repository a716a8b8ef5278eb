package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

// importOne runs one import call in its own import transaction.
func importOne(t *testing.T, s *Store, opt ImportOptions, fn func(im *ImportTx) (ImportResult, error)) (ImportResult, error) {
	t.Helper()
	var (
		r   ImportResult
		err error
	)
	if ierr := s.Import(context.Background(), opt, func(im *ImportTx) error {
		r, err = fn(im)
		if err != nil && !IsRefusal(err) {
			return err
		}
		return nil
	}); ierr != nil {
		t.Fatalf("import: %v", ierr)
	}
	return r, err
}

const importTemplate = `version: "0.1"
name: imported
global_timeout: 600
tasks:
  - name: os
    worker: "{{.device_1}}"
    actions:
      - name: wipe
        image: disk-wipe
        timeout: 60
      - name: install
        image: install
`

func importedWorkflow(hwID, tplID string) ImportedWorkflow {
	at := time.Date(2021, 5, 1, 10, 0, 0, 0, time.UTC)
	ev := func(action string, st workflow.State, sec int) *workflow.WorkflowActionStatus {
		return &workflow.WorkflowActionStatus{WorkerId: hwID, TaskName: "os", ActionName: action, ActionStatus: st,
			CreatedAt: timestamppb.New(at.Add(time.Duration(sec) * time.Second))}
	}
	return ImportedWorkflow{
		ID: uuid.NewString(), TemplateID: tplID, TemplateData: importTemplate,
		Devices: map[string]string{"device_1": mac1},
		Actions: []*workflow.WorkflowAction{
			{TaskName: "os", Name: "wipe", Image: "disk-wipe", Timeout: 60, WorkerId: hwID},
			{TaskName: "os", Name: "install", Image: "install", WorkerId: hwID},
		},
		Status:        engine.Status{State: engine.Running, Index: 0, ActionState: engine.Success, Started: at.Add(time.Second), ActionStarted: at.Add(time.Second)},
		Events:        []*workflow.WorkflowActionStatus{ev("wipe", engine.Running, 1), ev("wipe", engine.Success, 2)},
		Data:          []ImportedData{{Version: 2, Data: `{"a":2}`, Metadata: `{"by":"w"}`}, {Version: 3, Data: `{"a":3}`}},
		LatestVersion: 3, CreatedAt: at, UpdatedAt: at,
	}
}

// Each record is written under a savepoint: a refused one leaves nothing
// behind (not even its address claims) and the others are committed.
func TestImportRefusedRecordLeavesNoTrace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	err := s.Import(ctx, ImportOptions{}, func(im *ImportTx) error {
		if r, err := im.Hardware(ctx, newHW(a, iface{mac1, ip1}), time.Time{}); err != nil || r.Outcome != ImportCreated {
			t.Errorf("a: %v, %v", r, err)
		}
		_, err := im.Hardware(ctx, newHW(b, iface{mac2, ip1}), time.Time{})
		wantErr(t, err, ErrConflict, "ip "+ip1+" already belongs to hardware "+a)
		if r, err := im.Hardware(ctx, newHW(c, iface{"08:00:27:00:01:03", "10.9.0.3"}), time.Time{}); err != nil || r.Outcome != ImportCreated {
			t.Errorf("c after a refusal: %v, %v", r, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.HardwareByMAC(ctx, mac2); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused record's MAC is claimed: %v", err)
	}
	for _, id := range []string{a, c} {
		if h, err := s.HardwareByID(ctx, id); err != nil || h.GetVersion() != 1 {
			t.Errorf("hardware %s: %v, %v", id, h, err)
		}
	}
}

// A dry run and an import whose function fails leave the database as it
// was.
func TestImportDryRunAndAbortWriteNothing(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	before := snapshot(t, s)
	r, err := importOne(t, s, ImportOptions{DryRun: true}, func(im *ImportTx) (ImportResult, error) {
		return im.Hardware(ctx, newHW(uuid.NewString(), iface{mac1, ip1}), time.Time{})
	})
	if err != nil || r.Outcome != ImportCreated {
		t.Errorf("dry run: %v, %v", r, err)
	}
	boom := errors.New("boom")
	err = s.Import(ctx, ImportOptions{}, func(im *ImportTx) error {
		if _, err := im.Hardware(ctx, newHW(uuid.NewString(), iface{mac1, ip1}), time.Time{}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("database changed:\n%s", after)
	}
}

func TestImportHardwareAgain(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()
	at := time.Date(2021, 5, 1, 10, 0, 0, 0, time.UTC)
	hw := newHW(id, iface{mac1, ip1})
	if r, err := importOne(t, s, ImportOptions{}, func(im *ImportTx) (ImportResult, error) { return im.Hardware(ctx, hw, at) }); err != nil || r.Outcome != ImportCreated {
		t.Fatalf("first: %v, %v", r, err)
	}
	var created time.Time
	if err := s.db.QueryRow(`SELECT created_at FROM hardware WHERE id = $1`, id).Scan(&created); err != nil || !created.Equal(at) {
		t.Errorf("created_at = %s, %v; want the source's %s", created, err, at)
	}
	// Upper-case MAC, same record: unchanged.
	same := newHW(strings.ToUpper(id), iface{strings.ToUpper(mac1), ip1})
	if r, _ := importOne(t, s, ImportOptions{}, func(im *ImportTx) (ImportResult, error) { return im.Hardware(ctx, same, at) }); r.Outcome != ImportUnchanged {
		t.Errorf("again: %v", r.Outcome)
	}
	other := newHW(id, iface{mac1, "10.9.0.9"})
	if r, _ := importOne(t, s, ImportOptions{}, func(im *ImportTx) (ImportResult, error) { return im.Hardware(ctx, other, at) }); r.Outcome != ImportKept {
		t.Errorf("differing: %v", r.Outcome)
	}
	if r, _ := importOne(t, s, ImportOptions{Replace: true}, func(im *ImportTx) (ImportResult, error) { return im.Hardware(ctx, other, at) }); r.Outcome != ImportUpdated {
		t.Errorf("differing, --replace: %v", r.Outcome)
	}
	if h, err := s.HardwareByIP(ctx, "10.9.0.9"); err != nil || h.GetVersion() != 2 {
		t.Errorf("replaced: %v, %v", h, err)
	}
	if _, err := s.HardwareByIP(ctx, ip1); !errors.Is(err, ErrNotFound) {
		t.Errorf("the old IP is still claimed: %v", err)
	}
}

func TestImportTemplate(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	owner, err := s.CreateTemplate(ctx, "taken", importTemplate)
	if err != nil {
		t.Fatal(err)
	}
	tpl := func(t ImportedTemplate) func(*ImportTx) (ImportResult, error) {
		return func(im *ImportTx) (ImportResult, error) { return im.Template(ctx, t) }
	}
	_, err = importOne(t, s, ImportOptions{}, tpl(ImportedTemplate{ID: uuid.NewString(), Name: "taken", Data: importTemplate}))
	wantErr(t, err, ErrConflict, `the name "taken" is already used by herd's template `+owner)

	id := uuid.NewString()
	at := time.Date(2021, 5, 1, 10, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		opt  ImportOptions
		t    ImportedTemplate
		want ImportOutcome
	}{
		{ImportOptions{}, ImportedTemplate{ID: id, Name: "imported", Data: importTemplate, CreatedAt: at}, ImportCreated},
		{ImportOptions{}, ImportedTemplate{ID: id, Name: "imported", Data: importTemplate}, ImportUnchanged},
		{ImportOptions{}, ImportedTemplate{ID: id, Name: "renamed", Data: importTemplate}, ImportKept},
		{ImportOptions{Replace: true}, ImportedTemplate{ID: id, Name: "renamed", Data: importTemplate}, ImportUpdated},
	} {
		if r, err := importOne(t, s, step.opt, tpl(step.t)); err != nil || r.Outcome != step.want {
			t.Errorf("%+v: %v, %v; want %v", step.t, r.Outcome, err, step.want)
		}
	}
	got, err := s.GetTemplate(ctx, id, "")
	if err != nil || got.GetName() != "renamed" || !got.GetCreatedAt().AsTime().Equal(at) {
		t.Errorf("template = %v, %v", got, err)
	}
	if err := s.DeleteTemplate(ctx, id); err != nil {
		t.Fatal(err)
	}
	if r, _ := importOne(t, s, ImportOptions{Replace: true}, tpl(ImportedTemplate{ID: id, Name: "renamed", Data: importTemplate})); r.Outcome != ImportKept {
		t.Errorf("deleted in herd: %v", r.Outcome)
	}
	// A template deleted in the source, wanted by its workflows, goes in
	// deleted: its name stays free.
	gone := uuid.NewString()
	if r, err := importOne(t, s, ImportOptions{}, tpl(ImportedTemplate{ID: gone, Name: "taken", Data: importTemplate, DeletedAt: at})); err != nil || r.Outcome != ImportCreated {
		t.Errorf("deleted template: %v, %v", r, err)
	}
	if _, err := s.GetTemplate(ctx, gone, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("the deleted template is live: %v", err)
	}
}

func TestImportWorkflow(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	hw := mustPush(t, s, newHW(uuid.NewString(), iface{mac1, ip1})).GetId()
	tplID, err := s.CreateTemplate(ctx, "imported", importTemplate)
	if err != nil {
		t.Fatal(err)
	}
	wf := func(w ImportedWorkflow) func(*ImportTx) (ImportResult, error) {
		return func(im *ImportTx) (ImportResult, error) { return im.Workflow(ctx, w) }
	}

	w := importedWorkflow(hw, tplID)
	r, err := importOne(t, s, ImportOptions{}, wf(w))
	if err != nil || r.Outcome != ImportCreated || r.Events != 2 || r.DataVersions != 2 {
		t.Fatalf("import: %+v, %v", r, err)
	}
	c, err := s.WorkflowContext(ctx, w.ID)
	if err != nil || c.GetCurrentActionIndex() != 0 || c.GetCurrentActionState() != engine.Success || c.GetCurrentWorker() != hw {
		t.Errorf("context = %v, %v", c, err)
	}
	got, _ := s.GetWorkflow(ctx, w.ID)
	if got.GetState() != engine.Running || got.GetToggleNetboot() || !strings.Contains(got.GetData(), `worker: "`+mac1+`"`) ||
		!got.GetCreatedAt().AsTime().Equal(w.CreatedAt) {
		t.Errorf("workflow = %v", got)
	}
	// Events keep their times; data keeps its numbers, and the next
	// version follows the source's latest.
	_, evs := events(t, s, w.ID, 0)
	if len(evs) != 2 || !evs[1].GetCreatedAt().AsTime().Equal(w.Events[1].GetCreatedAt().AsTime()) {
		t.Errorf("events = %v", evs)
	}
	if m, v, err := s.WorkflowMetadata(ctx, w.ID, 2); err != nil || v != 2 || string(m) != `{"by": "w"}` {
		t.Errorf("metadata v2 = %s, %v", m, err)
	}
	if v, err := s.UpdateWorkflowData(ctx, w.ID, nil, []byte(`{}`)); err != nil || v != 4 {
		t.Errorf("next version %d, %v; want 4", v, err)
	}

	// Again: herd's copy has moved on (the data version just written).
	if r, _ := importOne(t, s, ImportOptions{}, wf(w)); r.Outcome != ImportKept || !strings.Contains(r.Note, "data the source lacks") {
		t.Errorf("again after herd moved on: %+v", r)
	}

	// The refusals.
	for _, tt := range []struct {
		name   string
		change func(w *ImportedWorkflow)
		kind   error
		want   string
	}{
		{"no template in herd", func(w *ImportedWorkflow) { w.TemplateID = uuid.NewString() }, ErrNotFound, "is not in herd"},
		{"does not render", func(w *ImportedWorkflow) { w.Devices = map[string]string{"machine": mac1} }, ErrInvalid, `no value for key "device_1"`},
		{"status past the actions", func(w *ImportedWorkflow) { w.Status.Index = 2 }, ErrInvalid, "names action 2 of 2"},
		{"worker not a UUID", func(w *ImportedWorkflow) { w.Actions[1].WorkerId = mac1 }, ErrInvalid, "not a UUID"},
		{"data too large", func(w *ImportedWorkflow) { w.Data[1].Data = `"` + strings.Repeat("x", DefaultMaxDataBytes) + `"` }, ErrInvalid, "more than --max-data-bytes"},
		{"data the database refuses", func(w *ImportedWorkflow) { w.Data[1].Data = `{"a":` }, ErrInvalid, "data versions"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := importedWorkflow(hw, tplID)
			tt.change(&w)
			_, err := importOne(t, s, ImportOptions{}, wf(w))
			wantErr(t, err, tt.kind, tt.want)
			if _, err := s.GetWorkflow(ctx, w.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("the refused workflow is there: %v", err)
			}
		})
	}
}

// A workflow that moved on in the source catches up when herd's copy is a
// part of the source's; herd's copy unchanged otherwise.
func TestImportWorkflowCatchesUp(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	hw := mustPush(t, s, newHW(uuid.NewString(), iface{mac1, ip1})).GetId()
	tplID, err := s.CreateTemplate(ctx, "imported", importTemplate)
	if err != nil {
		t.Fatal(err)
	}
	w := importedWorkflow(hw, tplID)
	wf := func(w ImportedWorkflow) func(*ImportTx) (ImportResult, error) {
		return func(im *ImportTx) (ImportResult, error) { return im.Workflow(ctx, w) }
	}
	if _, err := importOne(t, s, ImportOptions{}, wf(w)); err != nil {
		t.Fatal(err)
	}
	if r, _ := importOne(t, s, ImportOptions{}, wf(w)); r.Outcome != ImportUnchanged {
		t.Errorf("again: %+v", r)
	}
	at := w.Events[1].GetCreatedAt().AsTime()
	for _, st := range []workflow.State{engine.Running, engine.Success} {
		w.Events = append(w.Events, &workflow.WorkflowActionStatus{WorkerId: hw, TaskName: "os", ActionName: "install",
			ActionStatus: st, CreatedAt: timestamppb.New(at.Add(time.Minute))})
	}
	w.Status = engine.Status{State: engine.Success, Index: 1, ActionState: engine.Success, Started: w.Status.Started, ActionStarted: at.Add(time.Minute)}
	w.Data = append(w.Data[1:], ImportedData{Version: 4, Data: `{"a":4}`}) // the source emptied version 2 meanwhile
	w.LatestVersion = 4
	r, err := importOne(t, s, ImportOptions{}, wf(w))
	if err != nil || r.Outcome != ImportUpdated || r.Events != 2 || r.DataVersions != 1 {
		t.Fatalf("catch up: %+v, %v", r, err)
	}
	if got, _ := s.GetWorkflow(ctx, w.ID); got.GetState() != engine.Success {
		t.Errorf("state after catching up: %v", got.GetState())
	}
	if b, v, err := s.WorkflowData(ctx, w.ID, 0); err != nil || v != 4 || string(b) != `{"a": 4}` {
		t.Errorf("data = %s v%d, %v", b, v, err)
	}
	if r, _ := importOne(t, s, ImportOptions{}, wf(w)); r.Outcome != ImportUnchanged {
		t.Errorf("after catching up, again: %+v", r)
	}
	// Events that differ from herd's: kept.
	w.Events[0].Message = "rewritten"
	if r, _ := importOne(t, s, ImportOptions{}, wf(w)); r.Outcome != ImportKept {
		t.Errorf("events differ: %+v", r)
	}
	if err := s.DeleteWorkflow(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if r, _ := importOne(t, s, ImportOptions{}, wf(w)); r.Outcome != ImportKept || !strings.Contains(r.Note, "deleted in herd") {
		t.Errorf("deleted in herd: %+v", r)
	}
}
