package tinkimport

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
	"github.com/herd-metal/herd/services/server/internal/store"
)

func ptr[T any](v T) *T { return &v }

var (
	t0 = time.Date(2021, 6, 1, 12, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Minute)
	t2 = t0.Add(2 * time.Minute)
	t3 = t0.Add(3 * time.Minute)
)

func threeActions() []*workflow.WorkflowAction {
	w := "6f8a3d0c-0000-4000-8000-000000000001"
	return []*workflow.WorkflowAction{
		{TaskName: "os", Name: "wipe", WorkerId: w},
		{TaskName: "os", Name: "install", WorkerId: w},
		{TaskName: "os", Name: "reboot", WorkerId: w},
	}
}

func ev(action string, st workflow.State, at time.Time) *workflow.WorkflowActionStatus {
	return &workflow.WorkflowActionStatus{TaskName: "os", ActionName: action, ActionStatus: st, CreatedAt: timestamppb.New(at)}
}

// v0.6 keeps the current action's index and state; its server derives the
// workflow's state from them (getWorkflowState). herd keeps the same, plus
// the start times its server-side timeouts count from.
func TestStatus(t *testing.T) {
	running := []*workflow.WorkflowActionStatus{
		ev("wipe", engine.Running, t0), ev("wipe", engine.Success, t1), ev("install", engine.Running, t2),
	}
	tests := []struct {
		name        string
		index       *int64
		actionState *int64
		events      []*workflow.WorkflowActionStatus
		want        engine.Status
		wantErr     string
	}{
		{name: "pending", index: ptr[int64](0), actionState: ptr[int64](0), want: engine.Status{}},
		{name: "pending without an index", actionState: ptr[int64](0), want: engine.Status{}},
		{name: "running an action", index: ptr[int64](1), actionState: ptr[int64](1), events: running,
			want: engine.Status{State: engine.Running, Index: 1, ActionState: engine.Running, Started: t0, ActionStarted: t2}},
		{name: "between actions: SUCCESS of one before the last is RUNNING", index: ptr[int64](0), actionState: ptr[int64](4), events: running[:2],
			want: engine.Status{State: engine.Running, Index: 0, ActionState: engine.Success, Started: t0, ActionStarted: t0}},
		{name: "success of the last", index: ptr[int64](2), actionState: ptr[int64](4),
			events: append(append([]*workflow.WorkflowActionStatus{}, running...), ev("install", engine.Success, t2), ev("reboot", engine.Running, t3), ev("reboot", engine.Success, t3)),
			want:   engine.Status{State: engine.Success, Index: 2, ActionState: engine.Success, Started: t0, ActionStarted: t3}},
		{name: "failed", index: ptr[int64](1), actionState: ptr[int64](2), events: append(append([]*workflow.WorkflowActionStatus{}, running...), ev("install", engine.Failed, t3)),
			want: engine.Status{State: engine.Failed, Index: 1, ActionState: engine.Failed, Started: t0, ActionStarted: t2}},
		{name: "timeout", index: ptr[int64](0), actionState: ptr[int64](3), events: []*workflow.WorkflowActionStatus{ev("wipe", engine.Running, t1), ev("wipe", engine.Timeout, t2)},
			want: engine.Status{State: engine.Timeout, Index: 0, ActionState: engine.Timeout, Started: t1, ActionStarted: t1}},
		{name: "running without events starts at the origin", index: ptr[int64](0), actionState: ptr[int64](1),
			want: engine.Status{State: engine.Running, Index: 0, ActionState: engine.Running, Started: t3, ActionStarted: t3}},
		{name: "no state", index: ptr[int64](0), wantErr: "no current_action_state"},
		{name: "unknown state", index: ptr[int64](0), actionState: ptr[int64](7), wantErr: "7 is not a state"},
		{name: "index past the actions", index: ptr[int64](3), actionState: ptr[int64](1), wantErr: "current_action_index 3 is not one of its 3 actions"},
		{name: "negative index", index: ptr[int64](-1), actionState: ptr[int64](2), wantErr: "current_action_index -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := status(&stateRow{index: tt.index, actionState: tt.actionState}, threeActions(), tt.events, t3)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tt.want.State || got.Index != tt.want.Index || got.ActionState != tt.want.ActionState ||
				!got.Started.Equal(tt.want.Started) || !got.ActionStarted.Equal(tt.want.ActionStarted) {
				t.Errorf("status = %+v\nwant     %+v", got, tt.want)
			}
		})
	}
}

// v0.6 empties (data = NULL) the versions older than its newest 3 and
// numbers versions by counting rows: herd keeps what still has data and
// v0.6's latest number, so the next version is the same on both.
func TestDataVersions(t *testing.T) {
	doc := func(s string) *string { return &s }
	tests := []struct {
		name       string
		rows       []dataRow
		want       []store.ImportedData
		wantLatest int32
		wantPruned int
		wantErr    string
	}{
		{name: "none"},
		{name: "pruned ones are skipped, metadata defaults to {}",
			rows: []dataRow{{version: 1, metadata: doc(`{"a":1}`)}, {version: 2}, {version: 3, data: doc(`{"x":3}`)},
				{version: 4, data: doc(`{"x":4}`), metadata: doc(`{"by":"w"}`)}},
			want:       []store.ImportedData{{Version: 3, Data: `{"x":3}`, Metadata: "{}"}, {Version: 4, Data: `{"x":4}`, Metadata: `{"by":"w"}`}},
			wantLatest: 4, wantPruned: 2},
		{name: "the latest number counts even without data",
			rows: []dataRow{{version: 1, data: doc(`{}`)}, {version: 2}}, want: []store.ImportedData{{Version: 1, Data: `{}`, Metadata: "{}"}},
			wantLatest: 2, wantPruned: 1},
		{name: "a repeated version: the later row wins",
			rows:       []dataRow{{version: 1, data: doc(`{"old":true}`)}, {version: 1, data: doc(`{"new":true}`)}},
			want:       []store.ImportedData{{Version: 1, Data: `{"new":true}`, Metadata: "{}"}},
			wantLatest: 1},
		{name: "version 0", rows: []dataRow{{version: 0, data: doc(`{}`)}}, wantErr: "version 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, latest, pruned, err := dataVersions(tt.rows)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) || latest != tt.wantLatest || pruned != tt.wantPruned {
				t.Fatalf("got %+v latest %d pruned %d, want %+v latest %d pruned %d", got, latest, pruned, tt.want, tt.wantLatest, tt.wantPruned)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("[%d] = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestDevices(t *testing.T) {
	tests := []struct {
		raw     *string
		want    map[string]string
		wantErr string
	}{
		{raw: ptr(`{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.2"}`), want: map[string]string{"device_1": "08:00:27:00:00:01", "device_2": "10.1.0.2"}},
		{raw: nil, wantErr: "devices is NULL"},
		{raw: ptr(`["08:00:27:00:00:01"]`), wantErr: "not a JSON object"},
		{raw: ptr(`null`), wantErr: "not a JSON object"},
		{raw: ptr(`{}`), wantErr: "empty"},
		{raw: ptr(`{"device_1": 7}`), wantErr: `device "device_1" of its hardware map is 7`},
	}
	for _, tt := range tests {
		got, err := devices(tt.raw)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("devices(%v): err = %v, want it to mention %q", tt.raw, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) || got["device_1"] != tt.want["device_1"] || got["device_2"] != tt.want["device_2"] {
			t.Errorf("devices(%v) = %v, %v; want %v", *tt.raw, got, err, tt.want)
		}
	}
}

// v0.6 wrote its action list with encoding/json over the generated Go
// structs: proto field names, empty fields left out.
func TestActionList(t *testing.T) {
	got, err := actionList(ptr(`[{"task_name":"os","name":"wipe","image":"quay.io/x/wipe:v1","timeout":90,"command":["sh","-c","x"],
		"on_timeout":["t"],"on_failure":["f"],"worker_id":"6f8a3d0c-0000-4000-8000-000000000001","volumes":["/dev:/dev"],
		"environment":["A=1"],"pid":"host","future_field":1}]`))
	if err != nil {
		t.Fatal(err)
	}
	a := got[0]
	if len(got) != 1 || a.TaskName != "os" || a.Name != "wipe" || a.Image != "quay.io/x/wipe:v1" || a.Timeout != 90 ||
		len(a.Command) != 3 || a.OnTimeout[0] != "t" || a.OnFailure[0] != "f" || a.WorkerId != "6f8a3d0c-0000-4000-8000-000000000001" ||
		a.Volumes[0] != "/dev:/dev" || a.Environment[0] != "A=1" || a.Pid != "host" {
		t.Errorf("action = %v", a)
	}
	for raw, want := range map[string]string{`{}`: "not a JSON array", `[]`: "empty", `[{"timeout":"soon"}]`: "action 0"} {
		if _, err := actionList(&raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("actionList(%s): err = %v, want it to mention %q", raw, err, want)
		}
	}
	if _, err := actionList(nil); err == nil {
		t.Error("a NULL action_list was accepted")
	}
}

func TestConvertHardware(t *testing.T) {
	const id = "0a0b0c0d-0000-4000-8000-000000000001"
	good := `{"network":{"interfaces":[{"dhcp":{"mac":"02:00:00:00:00:01","ip":{"address":"10.10.0.1","netmask":"255.255.0.0"}},` +
		`"netboot":{"allow_pxe":true,"allow_workflow":true}}]},"id":"` + id + `","metadata":"{\"instance\":{}}"}`
	tests := []struct {
		name    string
		row     hardwareRow
		wantErr string
	}{
		{name: "v0.6 JSON, metadata as a string", row: hardwareRow{id: id, data: ptr(good)}},
		{name: "upper-case id in the row", row: hardwareRow{id: strings.ToUpper(id), data: ptr(good)}},
		{name: "no data", row: hardwareRow{id: id}, wantErr: "no data"},
		{name: "ids differ", row: hardwareRow{id: "0a0b0c0d-0000-4000-8000-000000000002", data: ptr(good)}, wantErr: "not the row's id"},
		{name: "time servers by name (issue 15 item 1)", row: hardwareRow{id: id,
			data: ptr(strings.Replace(good, `"ip":`, `"time_servers":["0.pool.ntp.org","10.10.0.123"],"ip":`, 1))}},
		{name: "a time server neither address nor host name", row: hardwareRow{id: id,
			data: ptr(strings.Replace(good, `"ip":`, `"time_servers":["0.pool.ntp.org","ntp_1"],"ip":`, 1))},
			wantErr: `time_servers[1]: "ntp_1" is neither an IPv4 or IPv6 address nor a host name`},
		{name: "unknown key", row: hardwareRow{id: id, data: ptr(strings.Replace(good, `"allow_pxe"`, `"allow_pex"`, 1))}, wantErr: "allow_pex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hw, err := convertHardware(tt.row)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hw.GetId() != id || hw.GetNetwork().GetInterfaces()[0].GetDhcp().GetMac() != "02:00:00:00:00:01" {
				t.Errorf("record = %v", hw)
			}
		})
	}
}

func TestConvertTemplate(t *testing.T) {
	const yaml = "version: \"0.1\"\nname: ubuntu\ntasks:\n  - name: os\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: wipe\n        image: wipe\n"
	if _, err := convertTemplate(templateRow{id: "x", name: "ubuntu", data: []byte(yaml)}); err != nil {
		t.Errorf("valid template refused: %v", err)
	}
	for _, tt := range []struct {
		row  templateRow
		want string
	}{
		{templateRow{name: "ubuntu"}, "no data"},
		{templateRow{name: "ubuntu", data: []byte{0xff, 0xfe}}, "not UTF-8"},
		{templateRow{name: "", data: []byte(yaml)}, `name "" is required`},
		{templateRow{name: "ubuntu", data: []byte(strings.Replace(yaml, "image: wipe", "image: wipe\n        volumes: [\"./host-path:/container-path\"]", 1))}, "volumes[0]"},
	} {
		if _, err := convertTemplate(tt.row); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("convertTemplate(%q): err = %v, want it to mention %q", tt.row.data, err, tt.want)
		}
	}
}

func TestConvertWorkflow(t *testing.T) {
	list := `[{"task_name":"os","name":"wipe","worker_id":"6f8a3d0c-0000-4000-8000-000000000001"},` +
		`{"task_name":"os","name":"install","worker_id":"6f8a3d0c-0000-4000-8000-000000000001"}]`
	row := &workflowRow{id: "w", template: "t", devices: ptr(`{"device_1":"02:00:00:00:00:01"}`), created: t0, updated: t0,
		state: &stateRow{actionList: ptr(list), index: ptr[int64](1), actionState: ptr[int64](1), total: ptr[int64](2)},
		events: []eventRow{{task: "os", action: "wipe", status: 1, at: t1}, {task: "os", action: "wipe", status: 4, at: t2},
			{task: "os", action: "install", status: 1}}, // no time: the workflow's creation
		data: []dataRow{{version: 1, data: ptr(`{}`)}}}
	w, pruned, err := convertWorkflow(row, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w.Status.State != engine.Running || w.Status.Index != 1 || !w.Status.Started.Equal(t1) || !w.Status.ActionStarted.Equal(t0) {
		t.Errorf("status = %+v", w.Status)
	}
	if !w.UpdatedAt.Equal(t2) {
		t.Errorf("updated = %s, want the last event's time %s", w.UpdatedAt, t2)
	}
	if len(w.Events) != 3 || !w.Events[2].GetCreatedAt().AsTime().Equal(t0) || w.TemplateData != "yaml" || pruned != 0 || w.LatestVersion != 1 {
		t.Errorf("workflow = %+v", w)
	}

	row.state.total = ptr[int64](3)
	if _, _, err := convertWorkflow(row, ""); err == nil || !strings.Contains(err.Error(), "counts 3 actions, its action_list holds 2") {
		t.Errorf("total mismatch: err = %v", err)
	}
	row.state = nil
	if _, _, err := convertWorkflow(row, ""); err == nil || !strings.Contains(err.Error(), "no workflow_state row") {
		t.Errorf("no state: err = %v", err)
	}
}

func TestMissingColumns(t *testing.T) {
	full := map[string]map[string]bool{}
	for _, tb := range v06Columns {
		full[tb.table] = map[string]bool{}
		for _, c := range tb.columns {
			full[tb.table][c] = true
		}
	}
	if m := missingColumns(full); len(m) != 0 {
		t.Errorf("full schema: missing %v", m)
	}
	delete(full, "workflow_state")
	delete(full["template"], "data")
	got := strings.Join(missingColumns(full), ", ")
	if got != "template.data, table workflow_state" {
		t.Errorf("missing = %q", got)
	}
}

func TestDescribe(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://tink:secret@db:5432/tinkerbell?sslmode=disable": "postgres://tink:xxxxx@db:5432/tinkerbell?sslmode=disable",
		"postgres://tink@db/tinkerbell":                             "postgres://tink@db/tinkerbell",
		"host=db user=tink password=secret":                         "(the --from database)",
	} {
		if got := Describe(in); got != want {
			t.Errorf("Describe(%q) = %q, want %q", in, got, want)
		}
	}
}
