package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
)

const (
	mac1, ip1 = "08:00:27:00:01:01", "10.9.0.1"
	mac2, ip2 = "08:00:27:00:01:02", "10.9.0.2"
)

// twoMachines is a template whose first task runs on device_1 (an action
// with a 60 s timeout, then one without) and whose second runs on
// device_2; %d is the global timeout.
const twoMachines = `version: "0.1"
name: two-machines
global_timeout: %d
tasks:
  - name: disk
    worker: "{{.device_1}}"
    environment:
      PEER: "{{.device_2}}"
    actions:
      - name: wipe
        image: disk-wipe
        timeout: 60
      - name: partition
        image: disk-partition
  - name: os
    worker: "{{.device_2}}"
    actions:
      - name: write
        image: quay.io/herd/write:v1
        timeout: 120
        command: ["write", "{{(index .hardware.device_2.network.interfaces 0).dhcp.hostname}}"]
`

// fleet is a store with two machines and the twoMachines template.
type fleet struct {
	s        *Store
	url      string
	hw1, hw2 string // hardware ids
	tpl      string // template id
}

func newFleet(t testing.TB, global int) *fleet {
	t.Helper()
	s, url := newStore(t)
	f := &fleet{s: s, url: url, hw1: uuid.NewString(), hw2: uuid.NewString()}
	mustPush(t, s, newHW(f.hw1, iface{mac1, ip1}))
	mustPush(t, s, newHW(f.hw2, iface{mac2, ip2}))
	var err error
	if f.tpl, err = s.CreateTemplate(context.Background(), "two-machines", fmt.Sprintf(twoMachines, global)); err != nil {
		t.Fatal(err)
	}
	return f
}

// noToggle leaves the machines' netboot alone, so the tests of the engine
// see only action events; netboot_test.go covers the toggle.
var noToggle = CreateOptions{ToggleNetboot: new(false)}

// create makes a workflow of the fleet's template on both machines that
// does not toggle netboot.
func (f *fleet) create(t *testing.T) string {
	t.Helper()
	return f.createWith(t, noToggle)
}

func (f *fleet) createWith(t *testing.T, opt CreateOptions) string {
	t.Helper()
	id, err := f.s.CreateWorkflow(context.Background(), f.tpl, map[string]string{"device_1": mac1, "device_2": mac2}, opt)
	if err != nil {
		t.Fatalf("CreateWorkflow: %v", err)
	}
	return id
}

// report sends a report for action (task, name) of workflow id.
func (f *fleet) report(id, worker, task, action string, st workflow.State) error {
	return f.s.ReportAction(context.Background(), &workflow.WorkflowActionStatus{
		WorkflowId: id, WorkerId: worker, TaskName: task, ActionName: action, ActionStatus: st,
		Seconds: 3, Message: "from " + worker,
	})
}

func (f *fleet) mustReport(t *testing.T, id, worker, task, action string, st workflow.State) {
	t.Helper()
	if err := f.report(id, worker, task, action, st); err != nil {
		t.Fatalf("report %s %s/%s: %v", st, task, action, err)
	}
}

func events(t *testing.T, s *Store, id string, after int64) (seqs []int64, evs []*workflow.WorkflowActionStatus) {
	t.Helper()
	err := s.WorkflowEvents(context.Background(), id, after, func(seq int64, ev *workflow.WorkflowActionStatus) error {
		seqs, evs = append(seqs, seq), append(evs, ev)
		return nil
	})
	if err != nil {
		t.Fatalf("WorkflowEvents: %v", err)
	}
	return seqs, evs
}

// workflowTables is the content of the workflow tables as text, to show
// that a refused change changed nothing.
func workflowTables(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT id::text || ' ' || state || ' ' || current_index || ' ' || current_state || ' ' ||
			coalesce(deadline::text, '-') || ' ' || updated_at::text FROM workflow ORDER BY id`,
		`SELECT workflow_id::text || ' ' || worker_id::text FROM workflow_worker ORDER BY 1`,
		`SELECT id::text || ' ' || workflow_id::text || ' ' || state FROM workflow_event ORDER BY id`,
		`SELECT workflow_id::text || ' ' || version FROM workflow_data ORDER BY 1`,
	} {
		rows, err := s.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			b.WriteString(line + "\n")
		}
		if err := closeRows(rows); err != nil {
			t.Fatal(err)
		}
		b.WriteString("--\n")
	}
	return b.String()
}

func TestCreateWorkflowRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	f.create(t) // something in the tables to keep unchanged
	deleted, err := f.s.CreateTemplate(ctx, "deleted", fmt.Sprintf(twoMachines, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteTemplate(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	missingKey, err := f.s.CreateTemplate(ctx, "missing-key", strings.Replace(fmt.Sprintf(twoMachines, 0), "{{.device_2}}\"\n    actions", "{{.device_3}}\"\n    actions", 1))
	if err != nil {
		t.Fatal(err)
	}
	strangerWorker, err := f.s.CreateTemplate(ctx, "stranger", strings.Replace(fmt.Sprintf(twoMachines, 0), `worker: "{{.device_2}}"`, `worker: "08:00:27:ff:ff:ff"`, 1))
	if err != nil {
		t.Fatal(err)
	}
	badImage, err := f.s.CreateTemplate(ctx, "bad-image", strings.Replace(fmt.Sprintf(twoMachines, 0), "image: disk-wipe", "image: \"{{.device_1}}\"", 1))
	if err != nil {
		t.Fatal(err)
	}
	both := map[string]string{"device_1": mac1, "device_2": mac2}
	before := workflowTables(t, f.s)

	tests := []struct {
		name     string
		tpl      string
		devices  map[string]string
		kind     error
		contains []string
		field    string // a *spec.FieldError with this field is in the chain
	}{
		{"unknown template name", "nope", both, ErrNotFound, []string{`"nope"`}, ""},
		{"unknown template id", "9b0e5f4e-0000-4000-8000-000000000000", both, ErrNotFound, []string{"9b0e5f4e"}, ""},
		{"deleted template by id", deleted, both, ErrNotFound, []string{deleted}, ""},
		{"deleted template by name", "deleted", both, ErrNotFound, nil, ""},
		{"no devices", f.tpl, map[string]string{}, ErrInvalid, []string{"hardware map is empty"}, ""},
		{"unknown MAC", f.tpl, map[string]string{"device_1": mac1, "device_2": "08:00:27:00:01:99"}, ErrNotFound,
			[]string{`device "device_2"`, "mac 08:00:27:00:01:99"}, ""},
		{"unknown IP", f.tpl, map[string]string{"device_1": "10.9.0.77", "device_2": mac2}, ErrNotFound,
			[]string{`device "device_1"`, "ip 10.9.0.77"}, ""},
		{"not an address", f.tpl, map[string]string{"device_1": mac1, "device_2": "zz"}, ErrInvalid,
			[]string{`device "device_2"`, `"zz" is neither a MAC nor an IP`}, ""},
		{"missing template key", missingKey, both, ErrInvalid, []string{`no value for key "device_3"`}, "template"},
		{"device called hardware", f.tpl, map[string]string{"device_1": mac1, "device_2": mac2, "hardware": mac1}, ErrInvalid, nil, "devices"},
		{"worker not in the inventory", strangerWorker, both, ErrNotFound, []string{`task "os"`, "mac 08:00:27:ff:ff:ff"}, ""},
		{"rendered value invalid", badImage, both, ErrInvalid, []string{"tasks[0].actions[0].image"}, "tasks[0].actions[0].image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.s.CreateWorkflow(ctx, tt.tpl, tt.devices, CreateOptions{})
			if err == nil {
				t.Fatalf("created %s", id)
			}
			wantErr(t, err, tt.kind, tt.contains...)
			if tt.field != "" {
				var fe *spec.FieldError
				if !errors.As(err, &fe) || fe.Field != tt.field {
					t.Errorf("err %v: want a spec.FieldError for %s, got %#v", err, tt.field, fe)
				}
			}
		})
	}
	if after := workflowTables(t, f.s); after != before {
		t.Errorf("refused creations changed the tables:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestCreateWorkflow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 600)
	devices := map[string]string{"device_1": mac1, "device_2": ip2}       // an IP works too
	id, err := f.s.CreateWorkflow(ctx, "two-machines", devices, noToggle) // by name
	if err != nil {
		t.Fatal(err)
	}
	wf, err := f.s.GetWorkflow(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var gotDevices map[string]string
	if err := json.Unmarshal([]byte(wf.GetHardware()), &gotDevices); err != nil || gotDevices["device_2"] != ip2 || len(gotDevices) != 2 {
		t.Errorf("hardware = %q (%v)", wf.GetHardware(), err)
	}
	if wf.GetId() != id || wf.GetTemplate() != f.tpl || wf.GetState() != workflow.State_STATE_PENDING ||
		wf.GetCreatedAt() == nil || wf.GetDeletedAt() != nil {
		t.Errorf("workflow = %v", wf)
	}
	if !strings.Contains(wf.GetData(), `worker: "`+mac1+`"`) || !strings.Contains(wf.GetData(), `PEER: "`+ip2+`"`) {
		t.Errorf("data is not the rendered template:\n%s", wf.GetData())
	}

	actions, err := f.s.WorkflowActions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range actions.GetActionList() {
		got = append(got, fmt.Sprintf("%s/%s@%s %ds %v %v", a.GetTaskName(), a.GetName(), a.GetWorkerId(), a.GetTimeout(), a.GetEnvironment(), a.GetCommand()))
	}
	want := []string{
		fmt.Sprintf("disk/wipe@%s 60s [PEER=%s] []", f.hw1, ip2),
		fmt.Sprintf("disk/partition@%s 0s [PEER=%s] []", f.hw1, ip2),
		fmt.Sprintf("os/write@%s 120s [] [write node]", f.hw2),
	}
	if !slices.Equal(got, want) {
		t.Errorf("actions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	workers, err := f.s.WorkflowWorkers(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	wantWorkers := []string{f.hw1, f.hw2}
	slices.Sort(wantWorkers)
	if !slices.Equal(workers, wantWorkers) {
		t.Errorf("workers = %v, want %v", workers, wantWorkers)
	}

	c, err := f.s.WorkflowContext(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetWorkflowId() != id || c.GetCurrentAction() != "" || c.GetCurrentActionState() != workflow.State_STATE_PENDING ||
		c.GetTotalNumberOfActions() != 3 {
		t.Errorf("context = %v", c)
	}

	// By id, a second workflow for the same machines.
	id2, err := f.s.CreateWorkflow(ctx, f.tpl, devices, noToggle)
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	if err := f.s.ListWorkflows(ctx, func(w *workflow.Workflow) error { listed = append(listed, w.GetId()); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, []string{id, id2}) {
		t.Errorf("ListWorkflows = %v, want %v", listed, []string{id, id2})
	}
	for _, tt := range []struct {
		worker     string
		all, ready int
	}{{f.hw1, 2, 2}, {f.hw2, 2, 0}, {uuid.NewString(), 0, 0}} {
		all, err := f.s.ContextsForWorker(ctx, tt.worker)
		if err != nil {
			t.Fatal(err)
		}
		ready, err := f.s.ApplicableContexts(ctx, tt.worker)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != tt.all || len(ready) != tt.ready {
			t.Errorf("worker %s: %d contexts, %d applicable; want %d, %d", tt.worker, len(all), len(ready), tt.all, tt.ready)
		}
	}
	_, err = f.s.ContextsForWorker(ctx, "not-a-uuid")
	wantErr(t, err, ErrInvalid)
	_, err = f.s.GetWorkflow(ctx, uuid.NewString())
	wantErr(t, err, ErrNotFound)
	_, err = f.s.GetWorkflow(ctx, "nope")
	wantErr(t, err, ErrInvalid, `workflow id "nope" is not a UUID`)
}

func TestReportActionRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	id := f.create(t)
	other := f.create(t) // untouched by the reports to id
	_, _, wfCh := startHub(t, f.url)
	// Workflow changes are announced after commit, asynchronously: the
	// creations above may still arrive.
	drain(wfCh)

	const (
		running = workflow.State_STATE_RUNNING
		success = workflow.State_STATE_SUCCESS
	)
	type step struct {
		worker, task, action string
		state                workflow.State
		err                  error // engine sentinel; nil: accepted
		event                bool  // a new event is recorded
		ready1, ready2       bool  // ApplicableContexts after the step
	}
	run := []step{
		{f.hw1, "disk", "partition", running, engine.ErrOutOfOrder, false, true, false},
		{f.hw2, "disk", "wipe", running, engine.ErrWrongWorker, false, true, false},
		{f.hw1, "disk", "wipe", success, engine.ErrOutOfOrder, false, true, false},
		{f.hw1, "disk", "nope", running, engine.ErrWrongAction, false, true, false},
		{f.hw1, "disk", "wipe", running, nil, true, true, false},
		{f.hw1, "disk", "wipe", running, nil, false, true, false}, // resend
		{f.hw1, "disk", "wipe", success, nil, true, true, false},
		{f.hw1, "disk", "wipe", success, nil, false, true, false}, // resend
		{f.hw1, "disk", "partition", running, nil, true, true, false},
		{f.hw1, "disk", "partition", success, nil, true, false, true},
		{f.hw1, "os", "write", running, engine.ErrWrongWorker, false, false, true},
		{f.hw2, "os", "write", running, nil, true, false, true},
		{f.hw2, "os", "write", success, nil, true, false, false},
		{f.hw2, "os", "write", success, nil, false, false, false}, // resend after the end
		{f.hw1, "disk", "wipe", running, engine.ErrFinished, false, false, false},
	}
	nEvents := 0
	for i, st := range run {
		before := workflowTables(t, f.s)
		err := f.report(id, st.worker, st.task, st.action, st.state)
		if st.err != nil {
			if !errors.Is(err, ErrPrecondition) || !errors.Is(err, st.err) {
				t.Fatalf("step %d: err = %v, want ErrPrecondition and %v", i, err, st.err)
			}
			if after := workflowTables(t, f.s); after != before {
				t.Fatalf("step %d: refused report changed the tables", i)
			}
		} else if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if st.event {
			nEvents++
			if v := next(t, wfCh); v != id {
				t.Errorf("step %d: notification %q, want %s", i, v, id)
			}
		}
		if _, evs := events(t, f.s, id, 0); len(evs) != nEvents {
			t.Fatalf("step %d: %d events, want %d", i, len(evs), nEvents)
		}
		for w, want := range map[string]bool{f.hw1: st.ready1, f.hw2: st.ready2} {
			cs, err := f.s.ApplicableContexts(ctx, w)
			if err != nil {
				t.Fatal(err)
			}
			// other (never started) always waits on hw1.
			n := 0
			for _, c := range cs {
				if c.GetWorkflowId() == id {
					n++
				}
			}
			if (n == 1) != want {
				t.Errorf("step %d: workflow applicable to %s = %v, want %v", i, w, n == 1, want)
			}
		}
	}
	quiet(t, wfCh)

	wf, err := f.s.GetWorkflow(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if wf.GetState() != success {
		t.Errorf("state %v, want SUCCESS", wf.GetState())
	}
	c, err := f.s.WorkflowContext(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetCurrentWorker() != f.hw2 || c.GetCurrentTask() != "os" || c.GetCurrentAction() != "write" ||
		c.GetCurrentActionIndex() != 2 || c.GetCurrentActionState() != success {
		t.Errorf("context %v", c)
	}
	var deadline sql.NullTime
	if err := f.s.db.QueryRow("SELECT deadline FROM workflow WHERE id = $1", id).Scan(&deadline); err != nil || deadline.Valid {
		t.Errorf("finished workflow has deadline %v (%v)", deadline, err)
	}

	seqs, evs := events(t, f.s, id, 0)
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%s %s/%s %s %ds %q", e.GetWorkerId(), e.GetTaskName(), e.GetActionName(),
			e.GetActionStatus(), e.GetSeconds(), e.GetMessage()))
		if e.GetWorkflowId() != id || e.GetCreatedAt() == nil {
			t.Errorf("event %v", e)
		}
	}
	ev := func(w, a string, s workflow.State) string {
		return fmt.Sprintf("%s %s %s 3s %q", w, a, s, "from "+w)
	}
	want := []string{
		ev(f.hw1, "disk/wipe", running), ev(f.hw1, "disk/wipe", success),
		ev(f.hw1, "disk/partition", running), ev(f.hw1, "disk/partition", success),
		ev(f.hw2, "os/write", running), ev(f.hw2, "os/write", success),
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, tail := events(t, f.s, id, seqs[3]); len(tail) != 2 || tail[0].GetActionName() != "write" {
		t.Errorf("events after %d: %v", seqs[3], tail)
	}
	if wf, err := f.s.GetWorkflow(ctx, other); err != nil || wf.GetState() != workflow.State_STATE_PENDING {
		t.Errorf("other workflow: %v %v", wf, err)
	}
	if _, evs := events(t, f.s, other, 0); len(evs) != 0 {
		t.Errorf("other workflow has events %v", evs)
	}

	for _, bad := range []*workflow.WorkflowActionStatus{
		{TaskName: "disk", ActionName: "wipe"},
		{WorkflowId: id, ActionName: "wipe"},
		{WorkflowId: id, TaskName: "disk"},
	} {
		wantErr(t, f.s.ReportAction(ctx, bad), ErrInvalid)
	}
	wantErr(t, f.report(uuid.NewString(), f.hw1, "disk", "wipe", running), ErrNotFound)
}

// TestReportActionRace has many goroutines report at once: each change is
// applied exactly once and none is lost.
func TestReportActionRace(t *testing.T) {
	t.Parallel()
	const n = 50
	f := newFleet(t, 0)
	id := f.create(t)

	race := func(states func(i int) workflow.State) []error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = f.report(id, f.hw1, "disk", "wipe", states(i))
			})
		}
		close(start)
		wg.Wait()
		return errs
	}

	// The same report 50 times: all succeed, one transition.
	for i, err := range race(func(int) workflow.State { return workflow.State_STATE_RUNNING }) {
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	if _, evs := events(t, f.s, id, 0); len(evs) != 1 {
		t.Fatalf("%d events after 50 identical RUNNING reports, want 1", len(evs))
	}

	// SUCCESS and FAILED race: exactly one of them wins; the reports that
	// agree with the winner are resends, the others are refused.
	errs := race(func(i int) workflow.State {
		if i%2 == 0 {
			return workflow.State_STATE_SUCCESS
		}
		return workflow.State_STATE_FAILED
	})
	_, evs := events(t, f.s, id, 0)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	winner := evs[1].GetActionStatus()
	for i, err := range errs {
		mine := workflow.State_STATE_SUCCESS
		if i%2 == 1 {
			mine = workflow.State_STATE_FAILED
		}
		switch {
		case mine == winner && err != nil:
			t.Errorf("report %d (%s, the winner's state): %v", i, mine, err)
		case mine != winner && !errors.Is(err, ErrPrecondition):
			t.Errorf("report %d (%s, lost to %s): err = %v, want ErrPrecondition", i, mine, winner, err)
		}
	}
	c, err := f.s.WorkflowContext(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetCurrentActionState() != winner || c.GetCurrentActionIndex() != 0 {
		t.Errorf("context %v, want action 0 in %s", c, winner)
	}
}

func TestExpireWorkflows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 600) // global timeout 10 minutes
	start := time.Now()

	// a: wipe (60 s timeout) starts; its worker disappears.
	a := f.create(t)
	f.mustReport(t, a, f.hw1, "disk", "wipe", workflow.State_STATE_RUNNING)
	// b: device_1's task succeeds, device_2 never shows up.
	b := f.create(t)
	for _, act := range []string{"wipe", "partition"} {
		f.mustReport(t, b, f.hw1, "disk", act, workflow.State_STATE_RUNNING)
		f.mustReport(t, b, f.hw1, "disk", act, workflow.State_STATE_SUCCESS)
	}
	// c never starts; d is deleted while running.
	c := f.create(t)
	d := f.create(t)
	f.mustReport(t, d, f.hw1, "disk", "wipe", workflow.State_STATE_RUNNING)
	if err := f.s.DeleteWorkflow(ctx, d); err != nil {
		t.Fatal(err)
	}

	expire := func(at time.Duration, want int) {
		t.Helper()
		n, err := f.s.ExpireWorkflows(ctx, start.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("ExpireWorkflows(+%s) = %d, want %d", at, n, want)
		}
	}
	state := func(id string) workflow.State {
		t.Helper()
		wf, err := f.s.GetWorkflow(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return wf.GetState()
	}
	expire(30*time.Second, 0)

	// A row being changed elsewhere is skipped, not waited for.
	tx, err := f.s.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("SELECT 1 FROM workflow WHERE id = $1 FOR UPDATE", a); err != nil {
		t.Fatal(err)
	}
	expire(2*time.Minute, 0)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}

	expire(2*time.Minute, 1)
	if state(a) != workflow.State_STATE_TIMEOUT || state(b) != workflow.State_STATE_RUNNING {
		t.Fatalf("after the action timeout: a %s, b %s", state(a), state(b))
	}
	_, evs := events(t, f.s, a, 0)
	last := evs[len(evs)-1]
	if last.GetActionStatus() != workflow.State_STATE_TIMEOUT || last.GetActionName() != "wipe" || last.GetWorkerId() != f.hw1 ||
		!strings.Contains(last.GetMessage(), `action 0 (task "disk", action "wipe") exceeded its timeout of 1m0s`) {
		t.Errorf("timeout event %v", last)
	}
	expire(2*time.Minute, 0) // done once

	// The worker comes back: its own TIMEOUT is a resend, SUCCESS is refused.
	f.mustReport(t, a, f.hw1, "disk", "wipe", workflow.State_STATE_TIMEOUT)
	err = f.report(a, f.hw1, "disk", "wipe", workflow.State_STATE_SUCCESS)
	if !errors.Is(err, ErrPrecondition) || !errors.Is(err, engine.ErrFinished) {
		t.Errorf("late SUCCESS: %v", err)
	}

	expire(11*time.Minute, 1) // the global timeout ends b
	if state(b) != workflow.State_STATE_TIMEOUT {
		t.Fatalf("b %s", state(b))
	}
	_, evs = events(t, f.s, b, 0)
	last = evs[len(evs)-1]
	if last.GetActionName() != "write" || last.GetWorkerId() != f.hw2 || last.GetActionStatus() != workflow.State_STATE_TIMEOUT ||
		!strings.Contains(last.GetMessage(), "global timeout of 10m0s") {
		t.Errorf("global timeout event %v", last)
	}
	if cs, err := f.s.ApplicableContexts(ctx, f.hw2); err != nil || len(cs) != 0 {
		t.Errorf("hw2 still has work: %v %v", cs, err)
	}

	expire(1000*time.Hour, 0) // c never started, d is deleted
	if state(c) != workflow.State_STATE_PENDING || state(d) != workflow.State_STATE_RUNNING {
		t.Errorf("c %s, d %s", state(c), state(d))
	}
}

// TestWorkflowDataBeforeAnyVersion: a workflow without data has empty
// data and metadata at version 0, as in Tinkerbell v0.6, so v0.6's worker
// writes {} as version 1 before its actions' data and the versions are
// those a v0.6 server would give.
func TestWorkflowDataBeforeAnyVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	id := f.create(t)
	for name, get := range map[string]func(context.Context, string, int32) ([]byte, int32, error){
		"data": f.s.WorkflowData, "metadata": f.s.WorkflowMetadata,
	} {
		b, v, err := get(ctx, id, 0)
		if err != nil || len(b) != 0 || v != 0 {
			t.Errorf("%s before any version: %q version %d, %v; want empty at version 0", name, b, v, err)
		}
	}
	// v0.6's worker: nothing came, so it starts the file with {} and sends
	// it after its first action; the next action's change is version 2.
	for i, data := range []string{`{}`, `{"disk":"/dev/sda"}`} {
		v, err := f.s.UpdateWorkflowData(ctx, id, []byte(`{"workerID":"w"}`), []byte(data))
		if err != nil || v != int32(i+1) {
			t.Fatalf("update %s: version %d, %v; want %d", data, v, err, i+1)
		}
	}
	for v, want := range map[int32]string{0: `{"disk": "/dev/sda"}`, 1: `{}`, 2: `{"disk": "/dev/sda"}`} {
		if b, _, err := f.s.WorkflowData(ctx, id, v); err != nil || string(b) != want {
			t.Errorf("version %d: %q %v, want %s", v, b, err, want)
		}
	}
}

func TestWorkflowData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	s, err := Open(ctx, f.url, Options{MaxDataVersions: 3, MaxDataBytes: 64, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	id := f.create(t)

	data, v, err := s.WorkflowData(ctx, id, 0)
	if err != nil || len(data) != 0 || v != 0 {
		t.Fatalf("no data yet: %q %d %v", data, v, err)
	}
	for i := 1; i <= 5; i++ {
		got, err := s.UpdateWorkflowData(ctx, id, fmt.Appendf(nil, `{"by":"worker","n":%d}`, i), fmt.Appendf(nil, `{"step":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		if got != int32(i) {
			t.Fatalf("update %d gave version %d", i, got)
		}
	}
	data, v, err = s.WorkflowData(ctx, id, 0)
	if err != nil || string(data) != `{"step": 5}` || v != 5 {
		t.Errorf("latest: %q %d %v", data, v, err)
	}
	data, v, err = s.WorkflowData(ctx, id, 3)
	if err != nil || string(data) != `{"step": 3}` || v != 3 {
		t.Errorf("version 3: %q %d %v", data, v, err)
	}
	meta, v, err := s.WorkflowMetadata(ctx, id, 4)
	if err != nil || string(meta) != `{"n": 4, "by": "worker"}` || v != 4 {
		t.Errorf("metadata 4: %q %d %v", meta, v, err)
	}
	for _, old := range []int32{1, 2, 6} {
		_, _, err := s.WorkflowData(ctx, id, old)
		wantErr(t, err, ErrNotFound, fmt.Sprintf("version %d", old))
	}
	var kept int
	if err := s.db.QueryRow("SELECT count(*) FROM workflow_data WHERE workflow_id = $1", id).Scan(&kept); err != nil || kept != 3 {
		t.Errorf("%d versions kept (%v), want 3", kept, err)
	}

	before := workflowTables(t, s)
	for _, bad := range []struct {
		meta, data string
		contains   string
	}{
		{`{}`, `{"a":`, "data is not JSON"},
		{`{}`, ``, "data is not JSON"},
		{`nope`, `{}`, "metadata is not JSON"},
		{`{}`, `{"x":"` + strings.Repeat("y", 60) + `"}`, "data is 68 bytes, the limit is 64"},
		{`{}`, `{"x":"\u0000"}`, "refused by the database"},
	} {
		_, err := s.UpdateWorkflowData(ctx, id, []byte(bad.meta), []byte(bad.data))
		wantErr(t, err, ErrInvalid, bad.contains)
	}
	_, err = s.UpdateWorkflowData(ctx, uuid.NewString(), nil, []byte(`{}`))
	wantErr(t, err, ErrNotFound)
	_, _, err = s.WorkflowData(ctx, uuid.NewString(), 0)
	wantErr(t, err, ErrNotFound)
	_, _, err = s.WorkflowData(ctx, id, -1)
	wantErr(t, err, ErrInvalid)
	if after := workflowTables(t, s); after != before {
		t.Errorf("refused updates changed the tables:\n%s\n%s", before, after)
	}

	// Concurrent updates get distinct versions; none is lost.
	other := f.create(t)
	const n = 20
	versions := make([]int32, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			v, err := s.UpdateWorkflowData(ctx, other, nil, fmt.Appendf(nil, `{"i":%d}`, i))
			if err != nil {
				t.Error(err)
			}
			versions[i] = v
		})
	}
	wg.Wait()
	slices.Sort(versions)
	for i, v := range versions {
		if v != int32(i+1) {
			t.Fatalf("versions %v, want 1..%d", versions, n)
		}
	}
	if meta, v, err := s.WorkflowMetadata(ctx, other, 0); err != nil || string(meta) != "{}" || v != n {
		t.Errorf("metadata %q %d %v", meta, v, err)
	}

	if err := s.DeleteWorkflow(ctx, other); err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateWorkflowData(ctx, other, nil, []byte(`{}`))
	wantErr(t, err, ErrPrecondition, "deleted")
}

func TestDeleteWorkflow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	id := f.create(t)
	if err := f.s.DeleteWorkflow(ctx, id); err != nil {
		t.Fatal(err)
	}
	wf, err := f.s.GetWorkflow(ctx, id)
	if err != nil || wf.GetDeletedAt() == nil {
		t.Fatalf("deleted workflow: %v %v", wf, err)
	}
	_ = f.s.ListWorkflows(ctx, func(w *workflow.Workflow) error {
		t.Errorf("listed %s", w.GetId())
		return nil
	})
	if cs, err := f.s.ContextsForWorker(ctx, f.hw1); err != nil || len(cs) != 0 {
		t.Errorf("contexts %v %v", cs, err)
	}
	wantErr(t, f.report(id, f.hw1, "disk", "wipe", workflow.State_STATE_RUNNING), ErrPrecondition, "deleted")
	wantErr(t, f.s.DeleteWorkflow(ctx, id), ErrNotFound)
	wantErr(t, f.s.DeleteWorkflow(ctx, "nope"), ErrInvalid)
	// The machine is free to go.
	if err := f.s.DeleteHardware(ctx, f.hw1); err != nil {
		t.Errorf("DeleteHardware: %v", err)
	}
}

func TestListWorkflowsPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFleet(t, 0)
	// One workflow made the usual way, copied into more than a page.
	first := f.create(t)
	if _, err := f.s.db.Exec(`
		INSERT INTO workflow (id, template_id, hardware_map, rendered, actions, created_at)
		SELECT gen_random_uuid(), template_id, hardware_map, rendered, actions, created_at + g * interval '1 second'
		FROM workflow, generate_series(1, $2) AS g WHERE id = $1`, first, workflowPage+6); err != nil {
		t.Fatal(err)
	}
	want := []string{first}
	rows, err := f.s.db.Query("SELECT id FROM workflow WHERE id <> $1 ORDER BY created_at", first)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if err := closeRows(rows); err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteWorkflow(ctx, want[3]); err != nil {
		t.Fatal(err)
	}
	want = slices.Delete(want, 3, 4)
	var got []string
	if err := f.s.ListWorkflows(ctx, func(w *workflow.Workflow) error { got = append(got, w.GetId()); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("listed %d workflows, want %d in creation order", len(got), len(want))
	}
	stop := errors.New("stop")
	calls := 0
	err = f.s.ListWorkflows(ctx, func(*workflow.Workflow) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ListWorkflows = %v after %d calls, want the callback's error after 1", err, calls)
	}
}
