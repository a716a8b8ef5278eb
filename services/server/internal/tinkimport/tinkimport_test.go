package tinkimport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/pgtest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
	"github.com/herd-metal/herd/services/server/internal/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var base = time.Date(2021, 5, 1, 10, 0, 0, 0, time.UTC)

// The fixture's shape.
const (
	liveHardware    = 300
	deletedHardware = 12
	liveTemplates   = 18 // 17 good, the 18th with v0.6's relative sample volume
	liveWorkflows   = 155
	deletedWfs      = 10
)

var states = []string{"pending", "running", "between", "failed", "timeout", "success"}

// wantWorkflow is what a good workflow of the fixture must become.
type wantWorkflow struct {
	id, worker, mac string
	state           string
	versions        int // v0.6's latest data version
}

// fill writes the fixture: a few hundred records with every workflow
// state, soft-deleted rows of each table and the records herd refuses.
func fill(d *tinkDB) map[string]wantWorkflow {
	// Hardware: 7 repeats 6's IP, 8 names a time server with a name that
	// is no host name, 9's data names another id; 10 names its time
	// servers by host name, as v0.6's example does (imported, names kept:
	// issue 15 item 1). The deleted ones reuse the live ones' addresses,
	// as v0.6 allowed: skipping them must not make conflicts.
	for i := 1; i <= liveHardware; i++ {
		data := hardwareJSON(hwID(i), mac(i), ip(i))
		switch i {
		case 7:
			data = hardwareJSON(hwID(i), mac(i), ip(6))
		case 8:
			data = hardwareJSON(hwID(i), mac(i), ip(i), "ntp server 1")
		case 9:
			data = hardwareJSON(hwID(9999), mac(i), ip(i))
		case 10:
			data = hardwareJSON(hwID(i), mac(i), ip(i), "0.pool.ntp.org", "NTP.Example.org", "10.10.0.123")
		}
		d.hardware(hwID(i), data, base.Add(time.Duration(i)*time.Minute), false)
	}
	for i := 1; i <= deletedHardware; i++ {
		d.hardware(hwID(1000+i), hardwareJSON(hwID(1000+i), mac(i), ip(i)), base, true)
	}
	// Templates 1-17 good, 18 refused; 19 deleted but used, 20 deleted
	// with live template 1's name, 21 deleted and unused.
	for i := 1; i <= liveTemplates; i++ {
		vol := "/dev:/dev"
		if i == 18 {
			vol = "./host-path:/container-path"
		}
		d.template(tplID(i), fmt.Sprintf("tpl-%d", i), templateYAML(fmt.Sprintf("tpl-%d", i), vol), base, false)
	}
	d.template(tplID(19), "retired", templateYAML("retired", "/dev:/dev"), base, true)
	d.template(tplID(20), "tpl-1", templateYAML("tpl-1", "/dev:/dev"), base.Add(-time.Hour), true)
	d.template(tplID(21), "gone", templateYAML("gone", "/dev:/dev"), base, true)

	want := map[string]wantWorkflow{}
	for i := 1; i <= 150; i++ {
		hw := 20 + i
		st := states[i%len(states)]
		versions := i % 6
		d.workflow(wfID(i), tplID(i%17+1), hwID(hw), mac(hw), base.Add(time.Duration(i)*time.Minute), runTo(st), versions, 3, false)
		want[wfID(i)] = wantWorkflow{id: wfID(i), worker: hwID(hw), mac: mac(hw), state: st, versions: versions}
	}
	d.workflow(wfID(151), tplID(18), hwID(171), mac(171), base, runTo("success"), 1, 3, false) // refused template
	d.workflow(wfID(152), tplID(19), hwID(200), mac(200), base, runTo("success"), 2, 3, false) // deleted template
	want[wfID(152)] = wantWorkflow{id: wfID(152), worker: hwID(200), mac: mac(200), state: "success", versions: 2}
	d.workflow(wfID(153), tplID(1), hwID(201), mac(201), base, runTo("running"), 0, 3, false)
	d.exec(`DELETE FROM workflow_state WHERE workflow_id = $1`, wfID(153))                     // no state
	d.workflow(wfID(154), tplID(99), hwID(202), mac(202), base, runTo("pending"), 0, 3, false) // no such template
	d.workflow(wfID(155), tplID(2), hwID(7), mac(7), base, runTo("failed"), 1, 3, false)       // its machine is refused
	want[wfID(155)] = wantWorkflow{id: wfID(155), worker: hwID(7), mac: mac(7), state: "failed", versions: 1}
	for i := 156; i < 156+deletedWfs; i++ {
		d.workflow(wfID(i), tplID(1), hwID(203), mac(203), base, runTo("success"), 2, 3, true)
	}
	return want
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), pgtest.NewDatabase(t), store.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func importTink(t *testing.T, url string, st *store.Store, opt Options) (*Report, string) {
	t.Helper()
	var out bytes.Buffer
	opt.Out = &out
	rep, err := Run(context.Background(), url, st, opt)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out.String())
	}
	t.Logf("import (dry run %v, replace %v):\n%s", opt.DryRun, opt.Replace, out.String())
	return rep, out.String()
}

func tally(created, updated, unchanged, kept, refused, deleted int) Tally {
	return Tally{Created: created, Updated: updated, Unchanged: unchanged, Kept: kept, Refused: refused, Deleted: deleted}
}

func checkTally(t *testing.T, what string, got, want Tally) {
	t.Helper()
	if got != want {
		t.Errorf("%s: %+v, want %+v", what, got, want)
	}
}

func countHerd(t *testing.T, st *store.Store) (hw, tpl, wf, events int) {
	t.Helper()
	ctx := context.Background()
	if err := st.AllHardware(ctx, func(*hardware.Hardware) error { hw++; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.ListTemplates(ctx, "", func(*template.WorkflowTemplate) error { tpl++; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.ListWorkflows(ctx, func(w *workflow.Workflow) error {
		wf++
		return st.WorkflowEvents(ctx, w.GetId(), 0, func(int64, *workflow.WorkflowActionStatus) error { events++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return hw, tpl, wf, events
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	tink := newTinkDB(t)
	want := fill(tink)
	st := openStore(t)

	// A dry run reports what the import will do and writes nothing.
	dry, out := importTink(t, tink.url, st, Options{DryRun: true, Every: 100})
	if hw, tpl, wf, _ := countHerd(t, st); hw+tpl+wf != 0 {
		t.Fatalf("the dry run wrote %d hardware records, %d templates, %d workflows", hw, tpl, wf)
	}
	for _, s := range []string{"dry run: nothing is written", "summary (would import)", "dry run: nothing was written"} {
		if !strings.Contains(out, s) {
			t.Errorf("dry-run output lacks %q", s)
		}
	}

	rep, out := importTink(t, tink.url, st, Options{Every: 100})
	checkTally(t, "hardware", rep.Hardware, tally(liveHardware-3, 0, 0, 0, 3, deletedHardware))
	checkTally(t, "templates", rep.Templates, Tally{Created: 17, Refused: 1, Deleted: 3, DeletedImported: 1})
	checkTally(t, "workflows", rep.Workflows, tally(liveWorkflows-3, 0, 0, 0, 3, deletedWfs))
	dry.DryRun = false
	if fmt.Sprint(*dry) != fmt.Sprint(*rep) {
		t.Errorf("the dry run reported\n%+v\nthe import\n%+v", *dry, *rep)
	}
	if n := strings.Count(out, "\nprogress: "); n != 4 { // 473 records, a line per 100
		t.Errorf("%d progress lines, want 4", n)
	}
	if !strings.Contains(out, "committed: 467 records written") { // 297 hardware, 17 + 1 deleted templates, 152 workflows
		t.Errorf("no commit line, or the wrong count, in the output")
	}

	// The refused records, each with its reason.
	refused := map[string]string{
		hwID(7):   "ip 10.10.0.7 already belongs to hardware " + hwID(6),
		hwID(8):   `time_servers[0]: "ntp server 1" is neither an IPv4 or IPv6 address nor a host name`,
		hwID(9):   "not the row's id",
		tplID(18): "the source must be an absolute host path or a volume name",
		wfID(151): "its template " + tplID(18) + " was refused",
		wfID(153): "no workflow_state row",
		wfID(154): "its template " + tplID(99) + " is not in the Tinkerbell database",
	}
	if len(rep.Refused) != len(refused) {
		t.Errorf("%d refused, want %d: %v", len(rep.Refused), len(refused), rep.Refused)
	}
	for _, p := range rep.Refused {
		if w, ok := refused[p.ID]; !ok || !strings.Contains(p.Reason, w) {
			t.Errorf("refused %s, want the reason to mention %q", p, w)
		}
		if !strings.Contains(out, p.String()) {
			t.Errorf("the output does not list %s", p)
		}
	}

	// Hardware: every good record, as Tinkerbell had it.
	hw, tpl, wf, events := countHerd(t, st)
	if hw != liveHardware-3 || tpl != 17 || wf != liveWorkflows-3 {
		t.Errorf("herd has %d hardware records, %d templates, %d workflows", hw, tpl, wf)
	}
	got, err := st.HardwareByMAC(ctx, mac(300))
	if err != nil {
		t.Fatal(err)
	}
	d := got.GetNetwork().GetInterfaces()[0].GetDhcp()
	if got.GetId() != hwID(300) || got.GetVersion() != 1 || d.GetIp().GetAddress() != ip(300) || d.GetLeaseTime() != 86400 ||
		!strings.Contains(got.GetMetadata(), `"facility_code":"onprem"`) || !got.GetNetwork().GetInterfaces()[0].GetNetboot().GetAllowPxe() {
		t.Errorf("hardware %s = %v", hwID(300), got)
	}
	// Time servers by host name go in as Tinkerbell had them (issue 15
	// item 1; herd-boots resolves them).
	if got, err := st.HardwareByID(ctx, hwID(10)); err != nil {
		t.Errorf("hardware %s (time servers by name) not imported: %v", hwID(10), err)
	} else if ts := got.GetNetwork().GetInterfaces()[0].GetDhcp().GetTimeServers(); strings.Join(ts, ",") != "0.pool.ntp.org,NTP.Example.org,10.10.0.123" {
		t.Errorf("hardware %s time servers = %q", hwID(10), ts)
	}
	if _, err := st.HardwareByID(ctx, hwID(1001)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a soft-deleted record was imported: %v", err)
	}

	// Templates: live ones by id and name; the deleted one a workflow uses
	// is there, deleted.
	tp, err := st.GetTemplate(ctx, tplID(5), "")
	if err != nil || tp.GetName() != "tpl-5" || tp.GetData() != templateYAML("tpl-5", "/dev:/dev") || !tp.GetCreatedAt().AsTime().Equal(base) {
		t.Errorf("template 5 = %v, %v", tp, err)
	}
	if _, err := st.GetTemplate(ctx, tplID(19), ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the deleted template 19 is live in herd: %v", err)
	}
	if tp, err := st.GetTemplate(ctx, "", "tpl-1"); err != nil || tp.GetId() != tplID(1) {
		t.Errorf("tpl-1 = %v, %v (the deleted template of that name must not take it)", tp, err)
	}

	// Workflows: state, context, events, data and workers as v0.6 had them.
	wantEvents := 0
	for _, w := range want {
		wantEvents += len(runTo(w.state))
		checkWorkflow(t, st, w)
	}
	if events != wantEvents {
		t.Errorf("herd has %d events, want %d", events, wantEvents)
	}
	if rep.Events != wantEvents {
		t.Errorf("report: %d events, want %d", rep.Events, wantEvents)
	}
	if w, err := st.GetWorkflow(ctx, wfID(152)); err != nil || w.GetTemplate() != tplID(19) || !strings.Contains(w.GetData(), "name: retired") {
		t.Errorf("workflow 152 (deleted template) = %v, %v", w, err)
	}

	// Running it again changes nothing.
	again, out := importTink(t, tink.url, st, Options{})
	checkTally(t, "hardware again", again.Hardware, tally(0, 0, liveHardware-3, 0, 3, deletedHardware))
	// 17 live templates and the deleted one workflow 152 uses, which herd has.
	checkTally(t, "templates again", again.Templates, tally(0, 0, 18, 0, 1, 3))
	checkTally(t, "workflows again", again.Workflows, tally(0, 0, liveWorkflows-3, 0, 3, deletedWfs))
	if again.Events != 0 || again.DataVersions != 0 || !strings.Contains(out, "nothing written: herd already has every record it takes (unchanged)") {
		t.Errorf("second run wrote %d events, %d data versions:\n%s", again.Events, again.DataVersions, out)
	}
	if h2, t2, w2, e2 := countHerd(t, st); h2 != hw || t2 != tpl || w2 != wf || e2 != events {
		t.Errorf("second run: herd has %d/%d/%d/%d records, before %d/%d/%d/%d", h2, t2, w2, e2, hw, tpl, wf, events)
	}
	if h, _ := st.HardwareByID(ctx, hwID(300)); h.GetVersion() != 1 {
		t.Errorf("second run bumped hardware %s to version %d", hwID(300), h.GetVersion())
	}

	// herd's engine carries on where Tinkerbell stopped: workflow 1 runs
	// its second action ("running"); it succeeds and the data goes on at
	// v0.6's next version.
	w1 := want[wfID(1)]
	if w1.state != "running" {
		t.Fatalf("fixture: workflow 1 is %s", w1.state)
	}
	if err := st.ReportAction(ctx, &workflow.WorkflowActionStatus{WorkflowId: wfID(1), WorkerId: w1.worker, TaskName: "os-installation",
		ActionName: "install", ActionStatus: engine.Success}); err != nil {
		t.Fatalf("report on an imported workflow: %v", err)
	}
	if v, err := st.UpdateWorkflowData(ctx, wfID(1), nil, []byte(`{"more":1}`)); err != nil || v != int32(w1.versions)+1 {
		t.Errorf("data after the import: version %d, %v; want %d", v, err, w1.versions+1)
	}

	// Tinkerbell moved on meanwhile: workflow 2 ("between") ran its second
	// action, and wrote data; workflow 1 got another report there, which
	// herd's own progress contradicts.
	tink.exec(`INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, execution_time, message, status, created_at)
		VALUES ($1, $2, 'os-installation', 'install', 0, 'later', 1, $3), ($1, $2, 'os-installation', 'install', 5, 'later', 4, $4)`,
		wfID(2), want[wfID(2)].worker, base.Add(time.Hour), base.Add(time.Hour+time.Second))
	tink.exec(`UPDATE workflow_state SET current_action_index = 1, current_action_state = 4 WHERE workflow_id = $1`, wfID(2))
	tink.exec(`INSERT INTO workflow_data (workflow_id, version, metadata, data) VALUES ($1, 3, '{}', '{"late": true}')`, wfID(2))
	tink.exec(`INSERT INTO workflow_event (workflow_id, worker_id, task_name, action_name, execution_time, message, status, created_at)
		VALUES ($1, $2, 'os-installation', 'install', 0, 'tink', 2, $3)`, wfID(1), w1.worker, base.Add(time.Hour))
	tink.exec(`UPDATE workflow_state SET current_action_state = 2 WHERE workflow_id = $1`, wfID(1))
	// and a record changed in herd since the import.
	changed, _ := st.HardwareByID(ctx, hwID(10))
	changed.GetNetwork().GetInterfaces()[0].GetDhcp().Hostname = "renamed-in-herd"
	if _, err := st.PushHardware(ctx, changed); err != nil {
		t.Fatal(err)
	}

	third, _ := importTink(t, tink.url, st, Options{})
	checkTally(t, "hardware, third run", third.Hardware, tally(0, 0, liveHardware-4, 1, 3, deletedHardware))
	checkTally(t, "workflows, third run", third.Workflows, tally(0, 1, liveWorkflows-5, 1, 3, deletedWfs))
	if third.Events != 2 || third.DataVersions != 1 {
		t.Errorf("third run wrote %d events and %d data versions, want 2 and 1", third.Events, third.DataVersions)
	}
	kept := map[string]string{hwID(10): "kept herd's (--replace takes the source's)", wfID(1): "moved on since it was imported"}
	for _, p := range third.Kept {
		if !strings.Contains(p.Reason, kept[p.ID]) {
			t.Errorf("kept %s, want the reason to mention %q", p, kept[p.ID])
		}
	}
	if c, err := st.WorkflowContext(ctx, wfID(2)); err != nil || c.GetCurrentActionIndex() != 1 || c.GetCurrentActionState() != engine.Success {
		t.Errorf("workflow 2 after catching up: %v, %v", c, err)
	}
	if b, v, err := st.WorkflowData(ctx, wfID(2), 0); err != nil || v != 3 || string(b) != `{"late": true}` {
		t.Errorf("workflow 2 data after catching up: %s v%d, %v", b, v, err)
	}
	if c, _ := st.WorkflowContext(ctx, wfID(1)); c.GetCurrentActionState() != engine.Success {
		t.Errorf("workflow 1: herd's progress was overwritten: %v", c)
	}

	// --replace takes Tinkerbell's copy of a record that differs.
	repl, _ := importTink(t, tink.url, st, Options{Replace: true})
	checkTally(t, "hardware, --replace", repl.Hardware, tally(0, 1, liveHardware-4, 0, 3, deletedHardware))
	if h, _ := st.HardwareByID(ctx, hwID(10)); h.GetNetwork().GetInterfaces()[0].GetDhcp().GetHostname() != "node" || h.GetVersion() != 3 {
		t.Errorf("hardware 10 after --replace: %v", h)
	}

	// The deadlines are the engine's, from Tinkerbell's times: the running
	// workflows imported from 2021 time out at the server's next check.
	n, err := st.ExpireWorkflows(ctx, time.Now())
	if err != nil || n == 0 {
		t.Errorf("expired %d imported workflows, %v", n, err)
	}
	if w, _ := st.GetWorkflow(ctx, wfID(7)); want[wfID(7)].state != "running" || w.GetState() != engine.Timeout {
		t.Errorf("workflow 7 (%s) after the timeout check: %v", want[wfID(7)].state, w.GetState())
	}
}

// checkWorkflow compares an imported workflow with the fixture's.
func checkWorkflow(t *testing.T, st *store.Store, w wantWorkflow) {
	t.Helper()
	ctx := context.Background()
	steps := runTo(w.state)
	got, err := st.GetWorkflow(ctx, w.id)
	if err != nil {
		t.Errorf("workflow %s: %v", w.id, err)
		return
	}
	wantState := map[string]workflow.State{"pending": engine.Pending, "running": engine.Running, "between": engine.Running,
		"failed": engine.Failed, "timeout": engine.Timeout, "success": engine.Success}[w.state]
	if got.GetState() != wantState || got.GetToggleNetboot() || got.GetHardware() != fmt.Sprintf(`{"device_1": %q}`, w.mac) {
		t.Errorf("workflow %s (%s): state %v, toggle %v, hardware %s", w.id, w.state, got.GetState(), got.GetToggleNetboot(), got.GetHardware())
	}
	c, err := st.WorkflowContext(ctx, w.id)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(steps); n > 0 {
		last := steps[n-1]
		if c.GetCurrentActionIndex() != int64(last.action) || c.GetCurrentActionState() != workflow.State(last.state) ||
			c.GetCurrentWorker() != w.worker || c.GetCurrentAction() != actionNames[last.action] || c.GetTotalNumberOfActions() != 3 {
			t.Errorf("workflow %s (%s): context %v", w.id, w.state, c)
		}
	} else if c.GetCurrentActionState() != engine.Pending || c.GetCurrentAction() != "" {
		t.Errorf("workflow %s (pending): context %v", w.id, c)
	}
	var evs []*workflow.WorkflowActionStatus
	if err := st.WorkflowEvents(ctx, w.id, 0, func(_ int64, e *workflow.WorkflowActionStatus) error { evs = append(evs, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(steps) {
		t.Errorf("workflow %s: %d events, want %d", w.id, len(evs), len(steps))
	}
	for i, e := range evs {
		if i >= len(steps) {
			break
		}
		s := steps[i]
		if e.GetActionName() != actionNames[s.action] || e.GetActionStatus() != workflow.State(s.state) || e.GetWorkerId() != w.worker ||
			e.GetMessage() != fmt.Sprintf("step %d", i) || e.GetSeconds() != int64(i) || e.GetCreatedAt().AsTime().Before(base) {
			t.Errorf("workflow %s event %d = %v", w.id, i, e)
		}
	}
	data, v, err := st.WorkflowData(ctx, w.id, 0)
	switch {
	case err != nil:
		t.Errorf("workflow %s data: %v", w.id, err)
	case w.versions == 0 && (v != 0 || len(data) != 0):
		t.Errorf("workflow %s without data: %q at version %d", w.id, data, v)
	case w.versions > 0 && (v != int32(w.versions) || !strings.Contains(string(data), fmt.Sprintf(`"step": %d`, w.versions))):
		t.Errorf("workflow %s data: %s at version %d, want version %d", w.id, data, v, w.versions)
	}
	if w.versions > 3 { // v0.6 had emptied the older ones
		if _, _, err := st.WorkflowData(ctx, w.id, 1); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("workflow %s: pruned version 1: %v", w.id, err)
		}
		if m, _, err := st.WorkflowMetadata(ctx, w.id, int32(w.versions)); err != nil || !strings.Contains(string(m), w.worker) {
			t.Errorf("workflow %s metadata: %s, %v", w.id, m, err)
		}
	}
	workers, err := st.WorkflowWorkers(ctx, w.id)
	if err != nil || len(workers) != 1 || workers[0] != w.worker {
		t.Errorf("workflow %s workers = %v, %v", w.id, workers, err)
	}
}

// A database without v0.6's tables is refused before anything happens.
func TestImportNotTinkerbell(t *testing.T) {
	st := openStore(t)
	_, err := Run(context.Background(), pgtest.NewDatabase(t), st, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a Tinkerbell v0.6 database") || !strings.Contains(err.Error(), "table workflow_state") {
		t.Errorf("err = %v", err)
	}
}
