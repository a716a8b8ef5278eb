package ui

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

func machine(id, host, mac, ip string, pxe ...bool) *hardware.Hardware {
	h := &hardware.Hardware{Id: id, Network: &hardware.Hardware_Network{}}
	for i, on := range pxe {
		d := &hardware.Hardware_DHCP{Mac: mac, Hostname: host, Ip: &hardware.Hardware_DHCP_IP{Address: ip}}
		if i > 0 {
			d = &hardware.Hardware_DHCP{Mac: "02:00:00:00:00:0" + string(rune('0'+i))}
		}
		h.Network.Interfaces = append(h.Network.Interfaces, &hardware.Hardware_Network_Interface{
			Dhcp: d, Netboot: &hardware.Hardware_Netboot{AllowPxe: on}})
	}
	return h
}

func wf(id, hw string, state workflow.State, created int) *workflow.Workflow {
	return &workflow.Workflow{Id: id, Hardware: hw, State: state,
		CreatedAt: timestamppb.New(time.Date(2026, 1, 1, 0, created, 0, 0, time.UTC))}
}

func TestNormAddr(t *testing.T) {
	for in, want := range map[string]string{
		"08:00:27:00:00:0A":  "08:00:27:00:00:0a",
		"08-00-27-00-00-0a":  "08:00:27:00:00:0a",
		" 10.1.0.11 ":        "10.1.0.11",
		"::ffff:10.1.0.11":   "10.1.0.11",
		"Node-1.example.com": "node-1.example.com",
	} {
		if got := normAddr(in); got != want {
			t.Errorf("normAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ctx         *workflow.WorkflowContext
		done, total int64
	}{
		{"not known yet", nil, 0, 0},
		{"nothing reported", &workflow.WorkflowContext{TotalNumberOfActions: 3}, 0, 3},
		{"first running", &workflow.WorkflowContext{CurrentAction: "a", CurrentActionState: workflow.State_STATE_RUNNING, TotalNumberOfActions: 3}, 0, 3},
		{"first done", &workflow.WorkflowContext{CurrentAction: "a", CurrentActionState: workflow.State_STATE_SUCCESS, TotalNumberOfActions: 3}, 1, 3},
		{"second failed", &workflow.WorkflowContext{CurrentAction: "b", CurrentActionIndex: 1, CurrentActionState: workflow.State_STATE_FAILED, TotalNumberOfActions: 3}, 1, 3},
		{"all done", &workflow.WorkflowContext{CurrentAction: "c", CurrentActionIndex: 2, CurrentActionState: workflow.State_STATE_SUCCESS, TotalNumberOfActions: 3}, 3, 3},
		{"index past the end is clamped", &workflow.WorkflowContext{CurrentAction: "c", CurrentActionIndex: 7, CurrentActionState: workflow.State_STATE_SUCCESS, TotalNumberOfActions: 3}, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if done, total := progress(tc.ctx); done != tc.done || total != tc.total {
				t.Fatalf("progress = %d/%d, want %d/%d", done, total, tc.done, tc.total)
			}
		})
	}
}

func TestNewer(t *testing.T) {
	run, pend, ok := workflow.State_STATE_RUNNING, workflow.State_STATE_PENDING, workflow.State_STATE_SUCCESS
	for _, tc := range []struct {
		name string
		a, b *workflow.Workflow
		want bool
	}{
		{"one going beats a later one ended", wf("a", "", pend, 1), wf("b", "", ok, 9), true},
		{"an ended one loses to an earlier one going", wf("a", "", ok, 9), wf("b", "", run, 1), false},
		{"both going: the later", wf("a", "", run, 2), wf("b", "", pend, 1), true},
		{"both ended: the later", wf("a", "", ok, 1), wf("b", "", ok, 2), false},
		{"same time: the greater id", wf("b", "", run, 1), wf("a", "", run, 1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := newer(tc.a, tc.b); got != tc.want {
				t.Fatalf("newer = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFleetRows(t *testing.T) {
	f := newFleet()
	f.setHardware(machine("hw1", "node-1", "08:00:27:00:00:01", "10.1.0.11", true))
	f.setHardware(machine("hw2", "node-2", "08:00:27:00:00:02", "10.1.0.12", true, false))

	r, _ := f.row("hw1")
	want := Row{ID: "hw1", Hostname: "node-1", MACs: []string{"08:00:27:00:00:01"}, IPs: []string{"10.1.0.11"}, Netboot: "on"}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("row before any workflow:\n got %+v\nwant %+v", r, want)
	}
	if r, _ := f.row("hw2"); r.Netboot != "mixed" {
		t.Fatalf("hw2 netboot %q, want mixed", r.Netboot)
	}

	// A finished workflow names hw1 by MAC (upper case), a running one by
	// IP: the running one shows, with its progress.
	if got := f.setWorkflow(wf("old", `{"device_1":"08:00:27:00:00:01"}`, workflow.State_STATE_SUCCESS, 1)); !reflect.DeepEqual(got, []string{"hw1"}) {
		t.Fatalf("changed rows %v, want [hw1]", got)
	}
	f.setWorkflow(wf("new", `{"device_1":"10.1.0.11","device_2":"08:00:27:00:00:02"}`, workflow.State_STATE_RUNNING, 2))
	if got := f.setContext("new", &workflow.WorkflowContext{CurrentTask: "disk", CurrentAction: "image",
		CurrentActionState: workflow.State_STATE_SUCCESS, TotalNumberOfActions: 3}); len(got) != 2 {
		t.Fatalf("context changed rows %v, want both machines", got)
	}
	r, _ = f.row("hw1")
	if w := r.Workflow; w == nil || w.ID != "new" || w.State != "RUNNING" || w.Done != 1 || w.Total != 3 || w.Action != "disk/image" {
		t.Fatalf("hw1's workflow %+v, want new RUNNING 1/3 disk/image", w)
	}

	// Deleting the running workflow brings back the last one.
	f.deleteWorkflow("new")
	if r, _ := f.row("hw1"); r.Workflow == nil || r.Workflow.ID != "old" || r.Workflow.State != "SUCCESS" {
		t.Fatalf("after delete: %+v, want old SUCCESS", r.Workflow)
	}
	if r, _ := f.row("hw2"); r.Workflow != nil {
		t.Fatalf("hw2 still shows %+v", r.Workflow)
	}

	// A record whose MAC changes leaves its old workflows behind.
	f.setHardware(machine("hw1", "node-1", "08:00:27:00:00:09", "10.1.0.19", false))
	if r, _ := f.row("hw1"); r.Workflow != nil || r.Netboot != "off" {
		t.Fatalf("after the address change: %+v", r)
	}
	f.deleteHardware("hw1")
	if _, ok := f.row("hw1"); ok {
		t.Fatal("deleted machine still has a row")
	}
	// A workflow whose hardware map is not JSON names no machine.
	if got := f.setWorkflow(wf("bad", `not json`, workflow.State_STATE_PENDING, 3)); len(got) != 0 {
		t.Fatalf("bad map changed rows %v", got)
	}
}

func TestCountActions(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       int64
	}{
		{"two tasks", "version: \"0.1\"\nname: x\ntasks:\n  - name: a\n    actions:\n      - name: one\n      - name: two\n  - name: b\n    actions:\n      - name: three\n", 3},
		{"no tasks", "version: \"0.1\"\nname: x\n", 0},
		{"not YAML", "tasks: [", 0},
		{"empty", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := countActions(tc.data); got != tc.want {
				t.Fatalf("countActions = %d, want %d", got, tc.want)
			}
		})
	}
}

// A workflow listed as SUCCESS shows all its actions done without its
// context; others wait for theirs.
func TestRowProgressWithoutContext(t *testing.T) {
	data := "tasks:\n  - name: a\n    actions:\n      - name: one\n      - name: two\n"
	for _, tc := range []struct {
		state       workflow.State
		done, total int64
		needs       bool
	}{
		{workflow.State_STATE_SUCCESS, 2, 2, false},
		{workflow.State_STATE_PENDING, 0, 2, true},
		{workflow.State_STATE_FAILED, 0, 2, true},
	} {
		t.Run(tc.state.String(), func(t *testing.T) {
			f := newFleet()
			f.setHardware(machine("hw1", "node-1", "08:00:27:00:00:01", "10.1.0.11", true))
			w := wf("w", `{"device_1":"08:00:27:00:00:01"}`, tc.state, 1)
			w.Data = data
			f.setWorkflow(w)
			r, _ := f.row("hw1")
			if r.Workflow.Done != tc.done || r.Workflow.Total != tc.total || needsContext(f.wf["w"]) != tc.needs {
				t.Fatalf("%d/%d needs context %v, want %d/%d %v", r.Workflow.Done, r.Workflow.Total, needsContext(f.wf["w"]), tc.done, tc.total, tc.needs)
			}
		})
	}
}

// Workflows of one template rendered to as many lines share one count;
// a rendering with more lines (a loop) is counted on its own.
func TestActionCountCache(t *testing.T) {
	one := "tasks:\n  - name: a\n    actions:\n      - name: one\n"
	two := "tasks:\n  - name: a\n    actions:\n      - name: one\n      - name: two\n"
	f := newFleet()
	for i, tc := range []struct {
		template, data string
		want           int64
	}{
		{"t1", one, 1},
		{"t1", strings.Replace(one, "one", "uno", 1), 1},
		{"t1", two, 2},
		{"t2", two, 2},
	} {
		if got := f.actions(&workflow.Workflow{Template: tc.template, Data: tc.data}); got != tc.want {
			t.Fatalf("workflow %d: %d actions, want %d", i, got, tc.want)
		}
	}
	if len(f.counts) != 3 {
		t.Fatalf("%d documents counted, want 3 (one per template and line count)", len(f.counts))
	}
}
