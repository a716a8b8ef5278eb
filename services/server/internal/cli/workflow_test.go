package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/herd-metal/herd/proto/workflow"
)

const wfID = "bbbbbbbb-0000-4000-8000-000000000001"

func TestProgress(t *testing.T) {
	tests := []struct {
		index, total int64
		state        workflow.State
		want         int
	}{
		{0, 0, workflow.State_STATE_PENDING, 0},
		{0, 4, workflow.State_STATE_PENDING, 0},
		{0, 4, workflow.State_STATE_RUNNING, 0},
		{0, 4, workflow.State_STATE_SUCCESS, 25},
		{1, 4, workflow.State_STATE_RUNNING, 25},
		{2, 3, workflow.State_STATE_FAILED, 66},
		{3, 4, workflow.State_STATE_SUCCESS, 100},
		{9, 4, workflow.State_STATE_SUCCESS, 100}, // never above 100
		{-1, 4, workflow.State_STATE_RUNNING, 0},
	}
	for _, tt := range tests {
		c := &workflow.WorkflowContext{CurrentActionIndex: tt.index, TotalNumberOfActions: tt.total, CurrentActionState: tt.state}
		if got := progress(c); got != tt.want {
			t.Errorf("progress(%d of %d, %v) = %d, want %d", tt.index, tt.total, tt.state, got, tt.want)
		}
	}
}

func TestWorkflowCreate(t *testing.T) {
	h := newHarness(t)
	r := h.run("", "workflow", "create", "-t", "hello", "-r", `{"device_1":"08-00-27-00-00-0A","device_2":"10.0.0.7"}`)
	if r.code != 0 || r.stdout != "Created Workflow: "+wfID+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	req := h.srv.last().(*workflow.CreateRequest)
	if req.GetTemplate() != "hello" || req.GetHardware() != `{"device_1":"08:00:27:00:00:0a","device_2":"10.0.0.7"}` {
		t.Fatalf("sent %v", req)
	}
	if req.ToggleNetboot != nil {
		t.Fatalf("without --toggle-netboot the request says %v; want it unset (the template decides)", req.GetToggleNetboot())
	}
	r = h.run("", "workflow", "create", "--template", "hello", "--hardware", `{"device_1":"10.0.0.7"}`, "-o", "json")
	var resp map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil || resp["id"] == "" {
		t.Fatalf("create -o json: %q (%v)", r.stdout, err)
	}

	for _, tt := range []struct {
		flag string
		want bool
	}{
		{"--toggle-netboot", true},
		{"--toggle-netboot=true", true},
		{"--toggle-netboot=false", false},
	} {
		r := h.run("", "workflow", "create", "-t", "hello", "-r", `{"device_1":"10.0.0.7"}`, tt.flag)
		if r.code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", tt.flag, r.code, r.stderr)
		}
		req := h.srv.last().(*workflow.CreateRequest)
		if req.ToggleNetboot == nil || *req.ToggleNetboot != tt.want {
			t.Errorf("%s: toggle_netboot %v, want %v", tt.flag, req.ToggleNetboot, tt.want)
		}
	}
	if r := h.run("", "workflow", "create", "-t", "hello", "-r", `{"device_1":"10.0.0.7"}`, "--toggle-netboot=maybe"); r.code != ExitUsage {
		t.Errorf("--toggle-netboot=maybe: exit %d, want %d (stderr %q)", r.code, ExitUsage, r.stderr)
	}
}

func TestWorkflowReads(t *testing.T) {
	h := newHarness(t)
	h.srv.workflows = []*workflow.Workflow{{
		Id: wfID, Template: "aaaaaaaa-0000-4000-8000-000000000001", Hardware: `{"device_1":"08:00:27:00:00:01"}`,
		State: workflow.State_STATE_PENDING, CreatedAt: ts("2025-01-02T03:04:05Z"), UpdatedAt: ts("2025-01-02T03:04:05Z"),
		Data: "version: \"0.1\"\nname: rendered\n",
	}}
	h.srv.contexts[wfID] = &workflow.WorkflowContext{
		WorkflowId: wfID, CurrentWorker: "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94", CurrentTask: "os-installation",
		CurrentAction: "disk-wipe", CurrentActionIndex: 1, CurrentActionState: workflow.State_STATE_RUNNING, TotalNumberOfActions: 4,
	}
	h.srv.events[wfID] = []*workflow.WorkflowActionStatus{
		{WorkflowId: wfID, WorkerId: "w1", TaskName: "os-installation", ActionName: "disk-wipe", ActionStatus: workflow.State_STATE_RUNNING, Message: "Started execution"},
		{WorkflowId: wfID, WorkerId: "w1", TaskName: "os-installation", ActionName: "disk-wipe", ActionStatus: workflow.State_STATE_SUCCESS, Seconds: 75, Message: "Finished\texecution\nok"},
	}
	h.srv.data[wfID] = &workflow.GetWorkflowDataResponse{Data: []byte(`{"disk":"/dev/sda"}`), Version: 3}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "get", args: []string{"workflow", "get", wfID}, want: "version: \"0.1\"\nname: rendered\n"},
		{name: "list", args: []string{"workflow", "list"}, want: "" +
			"ID                                    TEMPLATE                              HARDWARE                          STATE          CREATED AT            UPDATED AT\n" +
			wfID + "  aaaaaaaa-0000-4000-8000-000000000001  {\"device_1\":\"08:00:27:00:00:01\"}  STATE_PENDING  2025-01-02T03:04:05Z  2025-01-02T03:04:05Z\n"},
		{name: "list -q", args: []string{"workflow", "list", "-q"}, want: wfID + "\n"},
		{name: "state", args: []string{"workflow", "state", wfID}, want: "" +
			"FIELD NAME            VALUES\n" +
			"Workflow ID           " + wfID + "\n" +
			"Workflow Progress     25%\n" +
			"Current Task          os-installation\n" +
			"Current Action        disk-wipe\n" +
			"Current Worker        0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94\n" +
			"Current Action State  STATE_RUNNING\n"},
		{name: "events", args: []string{"workflow", "events", wfID}, want: "" +
			"WORKER ID  TASK NAME        ACTION NAME  EXECUTION TIME  MESSAGE                ACTION STATUS\n" +
			"w1         os-installation  disk-wipe    0s              Started execution      STATE_RUNNING\n" +
			"w1         os-installation  disk-wipe    1m15s           Finished execution ok  STATE_SUCCESS\n"},
		{name: "data", args: []string{"workflow", "data", wfID}, want: `{"disk":"/dev/sda"}` + "\n"},
		{name: "data metadata", args: []string{"workflow", "data", wfID, "--metadata"}, want: `{"by":"worker"}` + "\n"},
		{name: "data latest version", args: []string{"workflow", "data", wfID, "-l"}, want: "Latest workflow data version: 3\n"},
		{name: "delete", args: []string{"workflow", "delete", wfID}, want: "Workflow " + wfID + " deleted\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.run("", tt.args...)
			if r.code != 0 || r.stdout != tt.want {
				t.Fatalf("exit %d, stderr %q, stdout\n%s\nwant\n%s", r.code, r.stderr, r.stdout, tt.want)
			}
		})
	}

	if r := h.run("", "workflow", "data", wfID, "--version", "2"); r.code != 0 {
		t.Fatalf("data --version: exit %d, stderr %q", r.code, r.stderr)
	}
	if req := h.srv.last().(*workflow.GetWorkflowDataRequest); req.GetVersion() != 2 || req.GetWorkflowId() != wfID {
		t.Fatalf("data --version sent %v", req)
	}

	// JSON: one object for single results, one line per list item, and
	// every field present (PENDING is the zero value).
	r := h.run("", "workflow", "get", wfID, "-o", "json")
	var wf map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &wf); err != nil || wf["state"] != "STATE_PENDING" || wf["created_at"] != "2025-01-02T03:04:05Z" {
		t.Fatalf("get -o json: %q (%v)", r.stdout, err)
	}
	r = h.run("", "workflow", "state", wfID, "-o", "json")
	var wc map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &wc); err != nil || wc["current_action"] != "disk-wipe" || wc["total_number_of_actions"] != "4" {
		t.Fatalf("state -o json: %q (%v)", r.stdout, err)
	}
	for _, args := range [][]string{{"workflow", "events", wfID, "-o", "json"}, {"workflow", "list", "-o", "json"}} {
		r = h.run("", args...)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		for _, l := range lines {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Errorf("%v: line %q: %v", args, l, err)
			}
		}
		if want := map[string]int{"events": 2, "list": 1}[args[1]]; len(lines) != want {
			t.Errorf("%v: %d lines, want %d", args, len(lines), want)
		}
	}
	r = h.run("", "workflow", "data", wfID, "-o", "json")
	var d struct {
		Data    []byte
		Version int
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || string(d.Data) != `{"disk":"/dev/sda"}` || d.Version != 3 {
		t.Fatalf("data -o json: %q (%v)", r.stdout, err)
	}

	// An unknown id is the server's message.
	r = h.run("", "workflow", "state", "bbbbbbbb-0000-4000-8000-0000000000ff")
	if r.code != 1 || r.stderr != "herd: workflow bbbbbbbb-0000-4000-8000-0000000000ff not found\n" {
		t.Fatalf("unknown: exit %d, stderr %q", r.code, r.stderr)
	}
}

func watchEvents(final workflow.State, msg string) []*workflow.WorkflowActionStatus {
	ev := func(task, action string, st workflow.State, secs int64, at, m string) *workflow.WorkflowActionStatus {
		return &workflow.WorkflowActionStatus{WorkflowId: wfID, TaskName: task, ActionName: action, ActionStatus: st,
			Seconds: secs, CreatedAt: ts(at), Message: m, WorkerId: "w1"}
	}
	return []*workflow.WorkflowActionStatus{
		ev("os-installation", "disk-wipe", workflow.State_STATE_RUNNING, 0, "2025-01-02T10:00:00Z", ""),
		ev("os-installation", "disk-wipe", workflow.State_STATE_SUCCESS, 12, "2025-01-02T10:00:12Z", ""),
		ev("os-installation", "stream-image", workflow.State_STATE_RUNNING, 0, "2025-01-02T10:00:12Z", ""),
		ev("os-installation", "stream-image", final, 65, "2025-01-02T10:01:17Z", msg),
	}
}

func TestWorkflowWatch(t *testing.T) {
	const lines = "" +
		"10:00:00  os-installation      disk-wipe                RUNNING\n" +
		"10:00:12  os-installation      disk-wipe                SUCCESS  12s\n" +
		"10:00:12  os-installation      stream-image             RUNNING\n"
	tests := []struct {
		name       string
		final      workflow.State
		msg        string
		breakAfter int
		json       bool
		code       int
		stdout     string
		stderr     string
	}{
		{
			name: "success", final: workflow.State_STATE_SUCCESS, code: 0,
			stdout: lines + "10:01:17  os-installation      stream-image             SUCCESS  1m5s\n" +
				"Workflow " + wfID + " SUCCESS (actions ran 1m17s)\n",
		},
		{
			name: "failed", final: workflow.State_STATE_FAILED, msg: "exit status 1", code: ExitFailed,
			stdout: lines + "10:01:17  os-installation      stream-image             FAILED   1m5s  exit status 1\n",
			stderr: "herd: workflow " + wfID + " FAILED at os-installation/stream-image: exit status 1\n",
		},
		{
			name: "timeout", final: workflow.State_STATE_TIMEOUT, code: ExitTimedOut,
			stdout: lines + "10:01:17  os-installation      stream-image             TIMEOUT  1m5s\n",
			stderr: "herd: workflow " + wfID + " TIMEOUT at os-installation/stream-image\n",
		},
		{
			name: "stream breaks and resumes without repeating", final: workflow.State_STATE_SUCCESS, breakAfter: 2, code: 0,
			stdout: lines + "10:01:17  os-installation      stream-image             SUCCESS  1m5s\n" +
				"Workflow " + wfID + " SUCCESS (actions ran 1m17s)\n",
			stderr: "herd: event stream broken (server going away), reconnecting in 500ms\n",
		},
		{
			name: "stream ends before the workflow", final: workflow.State_STATE_RUNNING, code: ExitError,
			stdout: lines + "10:01:17  os-installation      stream-image             RUNNING\n",
			stderr: "herd: herd-server ended the event stream while workflow " + wfID + " is RUNNING\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.srv.workflows = []*workflow.Workflow{{Id: wfID, State: tt.final}}
			h.srv.events[wfID] = watchEvents(tt.final, tt.msg)
			h.srv.watchBreakAfter = tt.breakAfter
			r := h.run("", "workflow", "watch", wfID)
			if r.code != tt.code || r.stdout != tt.stdout || r.stderr != tt.stderr {
				t.Fatalf("exit %d (want %d)\nstdout:\n%s\nwant:\n%s\nstderr: %q\nwant:   %q", r.code, tt.code, r.stdout, tt.stdout, r.stderr, tt.stderr)
			}
		})
	}

	// JSON: the events only, one per line; the outcome is the exit code.
	h := newHarness(t)
	h.srv.workflows = []*workflow.Workflow{{Id: wfID, State: workflow.State_STATE_FAILED}}
	h.srv.events[wfID] = watchEvents(workflow.State_STATE_FAILED, "boom")
	r := h.run("", "workflow", "watch", wfID, "-o", "json")
	if r.code != ExitFailed || strings.Count(r.stdout, "\n") != 4 || !strings.Contains(r.stdout, `"action_status":"STATE_FAILED"`) {
		t.Fatalf("watch -o json: exit %d, stdout\n%s", r.code, r.stdout)
	}

	// An unknown workflow fails at once.
	r = h.run("", "workflow", "watch", "bbbbbbbb-0000-4000-8000-0000000000ff")
	if r.code != ExitError || r.stderr != "herd: workflow bbbbbbbb-0000-4000-8000-0000000000ff not found\n" {
		t.Fatalf("unknown: exit %d, stderr %q", r.code, r.stderr)
	}
}
