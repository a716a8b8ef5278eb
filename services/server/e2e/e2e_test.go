package e2e

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

const (
	hw1  = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
	hw2  = "5f2c6a3e-1111-4c4c-9a9a-222233334444"
	mac1 = "08:00:27:00:00:01"
	mac2 = "08:00:27:00:00:02"
)

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, err error, code codes.Code, mention string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), mention) {
		t.Fatalf("got %v %q, want %v mentioning %q", st.Code(), st.Message(), code, mention)
	}
}

// report sends one action report as the worker would.
func report(t *testing.T, wf workflow.WorkflowServiceClient, id, task, action string, state workflow.State) {
	t.Helper()
	_, err := wf.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{
		WorkflowId: id, TaskName: task, ActionName: action, ActionStatus: state, Seconds: 1, Message: "e2e"})
	if err != nil {
		t.Fatalf("report %s/%s %v: %v", task, action, state, err)
	}
}

// TestProvisioningThroughCLIAndWorkers is the operator's whole path: push
// two machines and a template with the CLI, create a workflow, let two
// workers (with their own credentials) run it over raw gRPC, and follow it
// with `herd workflow watch`.
func TestProvisioningThroughCLIAndWorkers(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd("", "hardware", "push", "--file", "testdata/hardware-1.json")
	s.MustHerd(readFile(t, "hardware-2.json"), "hardware", "push")

	out := s.MustHerd("", "hardware", "list", "-o", "json")
	if strings.Count(out, `"id"`) != 2 || !strings.Contains(out, hw1) || !strings.Contains(out, hw2) {
		t.Fatalf("hardware list:\n%s", out)
	}
	if out := s.MustHerd("", "hardware", "mac", strings.ToUpper(mac2), "-o", "json"); !strings.Contains(out, hw2) {
		t.Fatalf("hardware mac: %s", out)
	}
	if out := s.MustHerd("", "hardware", "ip", "10.1.0.11", "-o", "json"); !strings.Contains(out, hw1) {
		t.Fatalf("hardware ip: %s", out)
	}

	// A third record claiming node-1's MAC is refused; nothing changes.
	clash := strings.Replace(readFile(t, "hardware-2.json"), "5f2c6a3e-1111-4c4c-9a9a-222233334444", "9c1f2f5e-0000-4000-8000-000000000009", 1)
	clash = strings.Replace(clash, mac2, mac1, 1)
	clash = strings.Replace(clash, "10.1.0.12", "10.1.0.99", 1)
	_, errOut, code := s.Herd(clash, "hardware", "push")
	if code == 0 || !strings.Contains(errOut, mac1) || !strings.Contains(errOut, hw1) {
		t.Fatalf("clashing push: exit %d, stderr %q", code, errOut)
	}
	if out := s.MustHerd("", "hardware", "list", "-q"); strings.Count(strings.TrimSpace(out), "\n") != 1 {
		t.Fatalf("after refused push the inventory changed:\n%s", out)
	}

	tid := strings.TrimSpace(s.MustHerd("", "template", "create", "--file", "testdata/two-machines.yaml", "-o", "json"))
	if !strings.Contains(tid, "-") {
		t.Fatalf("template create printed %q", tid)
	}
	id := s.CreateWorkflow("two-machines", `{"device_1":"`+mac1+`","device_2":"10.1.0.12"}`)

	// The rendered workflow carries the machine's hostname from its record.
	if out := s.MustHerd("", "workflow", "get", id, "-o", "json"); !strings.Contains(out, "HOSTNAME") || !strings.Contains(out, "node-1") {
		t.Fatalf("workflow get: %s", out)
	}

	// Follow it live while the workers run.
	watch := s.HerdCommand(context.Background(), "workflow", "watch", id)
	var watchOut servertest.Buffer
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}

	w1 := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	w2 := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw2)))

	// Only the worker with the next move sees the workflow.
	contexts := func(c workflow.WorkflowServiceClient, worker string) int {
		stream, err := c.GetWorkflowContexts(ctx(t), &workflow.WorkflowContextRequest{WorkerId: worker})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err := stream.Recv()
			if err == io.EOF {
				return n
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if contexts(w1, hw1) != 1 || contexts(w2, hw2) != 0 {
		t.Fatal("at the start only worker 1 should see the workflow")
	}
	// A worker cannot ask for another machine's contexts.
	_, err := w2.GetWorkflowContextList(ctx(t), &workflow.WorkflowContextRequest{WorkerId: hw1})
	wantCode(t, err, codes.PermissionDenied, hw1)

	actions, err := w1.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(actions.GetActionList()); n != 3 {
		t.Fatalf("%d actions, want 3", n)
	}
	if env := strings.Join(actions.GetActionList()[0].GetEnvironment(), " "); !strings.Contains(env, "HOSTNAME=node-1") {
		t.Fatalf("task environment not merged into the action: %q", env)
	}

	report(t, w1, id, "disk", "image", workflow.State_STATE_RUNNING)
	// Worker 2 may not report worker 1's action.
	_, err = w2.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "disk", ActionName: "image", ActionStatus: workflow.State_STATE_SUCCESS})
	wantCode(t, err, codes.FailedPrecondition, "")
	report(t, w1, id, "disk", "image", workflow.State_STATE_SUCCESS)
	report(t, w1, id, "disk", "image", workflow.State_STATE_SUCCESS) // a resend is harmless
	// Skipping ahead is refused.
	_, err = w2.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "peer", ActionName: "announce", ActionStatus: workflow.State_STATE_RUNNING})
	wantCode(t, err, codes.FailedPrecondition, "")

	_, err = w1.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(`{"disk":"/dev/vda"}`), Metadata: []byte(`{"action":"image"}`)})
	if err != nil {
		t.Fatal(err)
	}
	report(t, w1, id, "disk", "hostname", workflow.State_STATE_RUNNING)
	report(t, w1, id, "disk", "hostname", workflow.State_STATE_SUCCESS)
	if contexts(w1, hw1) != 0 || contexts(w2, hw2) != 1 {
		t.Fatal("after task disk only worker 2 should see the workflow")
	}
	data, err := w2.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	if err != nil || !strings.Contains(string(data.GetData()), "/dev/vda") || data.GetVersion() != 1 {
		t.Fatalf("workflow data seen by worker 2: %q v%d %v", data.GetData(), data.GetVersion(), err)
	}
	report(t, w2, id, "peer", "announce", workflow.State_STATE_RUNNING)
	report(t, w2, id, "peer", "announce", workflow.State_STATE_SUCCESS)

	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("workflow watch: %v\n%s", err, watchOut.String())
		}
	case <-time.After(30 * time.Second):
		_ = watch.Process.Kill()
		t.Fatalf("workflow watch did not end after the workflow succeeded:\n%s", watchOut.String())
	}
	for _, a := range []string{"image", "hostname", "announce", "SUCCESS"} {
		if !strings.Contains(watchOut.String(), a) {
			t.Errorf("watch output lacks %q:\n%s", a, watchOut.String())
		}
	}

	if out := s.MustHerd("", "workflow", "state", id, "-o", "json"); !strings.Contains(out, "STATE_SUCCESS") {
		t.Fatalf("workflow state: %s", out)
	}
	events := s.MustHerd("", "workflow", "events", id, "-o", "json")
	if n := strings.Count(strings.TrimSpace(events), "\n") + 1; n != 10 {
		t.Fatalf("%d events, want 10: 6 action reports (resend not recorded) and the server's 4 netboot notes:\n%s", n, events)
	}
	if n := strings.Count(events, `"task_name":"netboot"`); n != 4 {
		t.Fatalf("%d netboot notes, want 4 (on and off for each machine):\n%s", n, events)
	}
	if out := s.MustHerd("", "workflow", "data", id); !strings.Contains(out, "/dev/vda") {
		t.Fatalf("workflow data: %s", out)
	}
	// A report after the end is refused.
	_, err = w2.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "peer", ActionName: "announce", ActionStatus: workflow.State_STATE_FAILED})
	wantCode(t, err, codes.FailedPrecondition, "")
	// Hardware in use by a finished workflow can be deleted.
	s.MustHerd("", "hardware", "delete", hw2)
}

// TestCredentials: admin calls need the token; a worker credential opens
// only the worker calls, and only for its own workflows.
func TestCredentials(t *testing.T) {
	s := servertest.Start(t)
	admin := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	for _, f := range []string{"hardware-1.json", "hardware-2.json"} {
		s.MustHerd(readFile(t, f), "hardware", "push")
	}
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	id := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)

	_, err := hardware.NewHardwareServiceClient(s.Dial("")).ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	wantCode(t, err, codes.Unauthenticated, "credentials")
	_, err = hardware.NewHardwareServiceClient(s.Dial("wrong")).ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	wantCode(t, err, codes.Unauthenticated, "invalid token")
	_, err = hardware.NewHardwareServiceClient(s.Dial(s.WorkerToken(hw1))).ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	wantCode(t, err, codes.PermissionDenied, "worker credential")
	if _, err := admin.ByID(ctx(t), &hardware.GetRequest{Id: hw1}); err != nil {
		t.Fatal(err)
	}

	other := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw2)))
	_, err = other.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
	wantCode(t, err, codes.NotFound, id)
	_, err = other.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "only", ActionName: "hang", ActionStatus: workflow.State_STATE_RUNNING})
	wantCode(t, err, codes.NotFound, id)
	_, err = other.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	wantCode(t, err, codes.NotFound, id)
	// A forged worker id in the message does not help.
	_, err = workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1))).ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{
		WorkflowId: id, TaskName: "only", ActionName: "hang", ActionStatus: workflow.State_STATE_RUNNING, WorkerId: hw2})
	wantCode(t, err, codes.PermissionDenied, "credential")
}

// TestServerEnforcesTimeouts: the worker reports RUNNING and vanishes; the
// server times the action out by itself.
func TestServerEnforcesTimeouts(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	id := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	report(t, w, id, "only", "hang", workflow.State_STATE_RUNNING)

	admin := workflow.NewWorkflowServiceClient(s.Dial(adminToken))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := admin.GetWorkflowContext(ctx(t), &workflow.GetRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		if c.GetCurrentActionState() == workflow.State_STATE_TIMEOUT {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("action still %v 30s after its 1s timeout", c.GetCurrentActionState())
		}
		time.Sleep(100 * time.Millisecond)
	}
	wf, err := admin.GetWorkflow(ctx(t), &workflow.GetRequest{Id: id})
	if err != nil || wf.GetState() != workflow.State_STATE_TIMEOUT {
		t.Fatalf("workflow state %v (%v), want TIMEOUT", wf.GetState(), err)
	}
	// The late success report of the vanished worker is refused.
	_, err = w.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "only", ActionName: "hang", ActionStatus: workflow.State_STATE_SUCCESS})
	wantCode(t, err, codes.FailedPrecondition, "")
}

// TestWatch: boots and metadata keep their inventory with Watch.
func TestWatch(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	hc := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	stream, err := hc.Watch(ctx(t), &hardware.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func(want hardware.WatchEvent_Type, id string) *hardware.Hardware {
		t.Helper()
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != want || ev.GetHardware().GetId() != id {
			t.Fatalf("got %v %q, want %v %q", ev.GetType(), ev.GetHardware().GetId(), want, id)
		}
		return ev.GetHardware()
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetType() != hardware.WatchEvent_TYPE_ADDED || ev.GetHardware().GetId() != hw1 {
		t.Fatalf("first event %v (%v), want ADDED %s", ev, err, hw1)
	}
	// The admin caller (boots) gets the machine's worker credential, and it
	// opens that machine's worker calls.
	if ev.GetWorkerToken() != s.WorkerToken(hw1) {
		t.Fatalf("worker token %q, want the one the server signs", ev.GetWorkerToken())
	}
	next(hardware.WatchEvent_TYPE_SYNCED, "")
	s.MustHerd(readFile(t, "hardware-2.json"), "hardware", "push")
	next(hardware.WatchEvent_TYPE_ADDED, hw2)
	s.MustHerd(strings.Replace(readFile(t, "hardware-2.json"), "10.1.0.12", "10.1.0.13", 1), "hardware", "push")
	if got := next(hardware.WatchEvent_TYPE_UPDATED, hw2); got.GetNetwork().GetInterfaces()[0].GetDhcp().GetIp().GetAddress() != "10.1.0.13" {
		t.Fatalf("update carried %v", got)
	}
	s.MustHerd("", "hardware", "delete", hw2)
	next(hardware.WatchEvent_TYPE_DELETED, hw2)
}

// TestNetbootToggle: the server switches a workflow's machine's netboot
// itself, on at creation and off at SUCCESS, and the Watch stream (what
// boots and metadata follow) carries each change; --toggle-netboot=false
// and the template's toggle_netboot: false leave the record alone.
func TestNetbootToggle(t *testing.T) {
	s := servertest.Start(t)
	// The operator's machine does not netboot until a workflow wants it to.
	s.MustHerd(strings.Replace(readFile(t, "hardware-1.json"), `"allow_pxe": true`, `"allow_pxe": false`, 1), "hardware", "push")
	const quick = "version: \"0.1\"\nname: quick\ntasks:\n  - name: only\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: run\n        image: busybox\n"
	s.MustHerd(quick, "template", "create")
	s.MustHerd("toggle_netboot: false\n"+strings.Replace(quick, "name: quick", "name: hands-off", 1), "template", "create")

	hc := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	stream, err := hc.Watch(ctx(t), &hardware.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	next := func(want hardware.WatchEvent_Type, id string) *hardware.Hardware {
		t.Helper()
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() != want || ev.GetHardware().GetId() != id {
			t.Fatalf("got %v %q, want %v %q", ev.GetType(), ev.GetHardware().GetId(), want, id)
		}
		return ev.GetHardware()
	}
	allowPXE := func(hw *hardware.Hardware) bool { return hw.GetNetwork().GetInterfaces()[0].GetNetboot().GetAllowPxe() }
	if allowPXE(next(hardware.WatchEvent_TYPE_ADDED, hw1)) {
		t.Fatal("pushed with allow_pxe false, watched true")
	}
	next(hardware.WatchEvent_TYPE_SYNCED, "")

	id := s.CreateWorkflow("quick", `{"device_1":"`+mac1+`"}`)
	if hw := next(hardware.WatchEvent_TYPE_UPDATED, hw1); !allowPXE(hw) || hw.GetVersion() != 2 {
		t.Fatalf("after the workflow's creation the watcher got %v, want allow_pxe true, version 2", hw)
	}
	if out := s.MustHerd("", "workflow", "get", id, "-o", "json"); !strings.Contains(out, `"toggle_netboot": true`) {
		t.Errorf("workflow get: %s", out)
	}
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	report(t, w, id, "only", "run", workflow.State_STATE_RUNNING)
	report(t, w, id, "only", "run", workflow.State_STATE_SUCCESS)
	if hw := next(hardware.WatchEvent_TYPE_UPDATED, hw1); allowPXE(hw) || hw.GetVersion() != 3 {
		t.Fatalf("after SUCCESS the watcher got %v, want allow_pxe false, version 3", hw)
	}
	events := s.MustHerd("", "workflow", "events", id)
	for _, want := range []string{"allow_pxe switched on for hardware " + hw1, "workflow succeeded; allow_pxe switched off for hardware " + hw1} {
		if !strings.Contains(events, want) {
			t.Errorf("events lack %q:\n%s", want, events)
		}
	}

	// Not toggled: by flag, by template, and over REST. The push after
	// them is the watcher's next event, so they sent none.
	var ids []string
	out := s.MustHerd("", "workflow", "create", "-t", "quick", "-r", `{"device_1":"`+mac1+`"}`, "--toggle-netboot=false", "-o", "json")
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("workflow create --toggle-netboot=false printed %q (%v)", out, err)
	}
	ids = append(ids, created.ID, s.CreateWorkflow("hands-off", `{"device_1":"`+mac1+`"}`))
	code, out := s.Rest("POST", "/v1/workflows", `{"template":"quick","hardware":"{\"device_1\":\"`+mac1+`\"}","toggle_netboot":false}`, adminToken)
	if code != 200 || json.Unmarshal([]byte(out), &created) != nil || created.ID == "" {
		t.Fatalf("POST /v1/workflows with toggle_netboot false: %d %s", code, out)
	}
	ids = append(ids, created.ID)
	for _, id := range ids {
		report(t, w, id, "only", "run", workflow.State_STATE_RUNNING)
		report(t, w, id, "only", "run", workflow.State_STATE_SUCCESS)
		if out := s.MustHerd("", "workflow", "get", id, "-o", "json"); !strings.Contains(out, `"toggle_netboot": false`) {
			t.Errorf("workflow get: %s", out)
		}
		if events := s.MustHerd("", "workflow", "events", id); strings.Contains(events, "allow_pxe") {
			t.Errorf("workflow %s, not toggling, has netboot notes:\n%s", id, events)
		}
	}
	s.MustHerd(readFile(t, "hardware-2.json"), "hardware", "push")
	next(hardware.WatchEvent_TYPE_ADDED, hw2)
	if hw, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1}); err != nil || allowPXE(hw) || hw.GetVersion() != 3 {
		t.Fatalf("hardware %v (%v): want it as the toggling workflow left it", hw, err)
	}
}

// TestBadInputOverGRPC: bad requests get InvalidArgument / NotFound naming
// what is wrong, and nothing stored changes.
func TestBadInputOverGRPC(t *testing.T) {
	s := servertest.Start(t)
	conn := s.Dial(adminToken)
	hc, tc, wc := hardware.NewHardwareServiceClient(conn), template.NewTemplateServiceClient(conn), workflow.NewWorkflowServiceClient(conn)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")

	good := func() *hardware.Hardware {
		h, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := good()
	bad := good()
	bad.Network.Interfaces[0].Dhcp.Mac = "not-a-mac"
	_, err := hc.Push(ctx(t), &hardware.PushRequest{Data: bad})
	wantCode(t, err, codes.InvalidArgument, "network.interfaces[0].dhcp.mac")
	_, err = hc.Push(ctx(t), &hardware.PushRequest{})
	wantCode(t, err, codes.InvalidArgument, "data")
	_, err = hc.ByID(ctx(t), &hardware.GetRequest{Id: "'; drop table hardware; --"})
	wantCode(t, err, codes.InvalidArgument, "id")
	_, err = hc.ByMAC(ctx(t), &hardware.GetRequest{Mac: "zz"})
	wantCode(t, err, codes.InvalidArgument, "mac")
	_, err = hc.ByID(ctx(t), &hardware.GetRequest{Id: "9c1f2f5e-0000-4000-8000-000000000009"})
	wantCode(t, err, codes.NotFound, "9c1f2f5e")
	huge := good()
	huge.Metadata = `{"blob":"` + strings.Repeat("x", 3<<19) + `"}`
	_, err = hc.Push(ctx(t), &hardware.PushRequest{Data: huge})
	wantCode(t, err, codes.InvalidArgument, "1 MiB")
	if after := good(); after.GetVersion() != before.GetVersion() {
		t.Fatalf("refused pushes changed the record: version %d -> %d", before.GetVersion(), after.GetVersion())
	}

	_, err = tc.CreateTemplate(ctx(t), &template.WorkflowTemplate{Name: "x", Data: "version: \"0.1\"\nname: x\ntasks: []\n"})
	wantCode(t, err, codes.InvalidArgument, "tasks")
	_, err = tc.CreateTemplate(ctx(t), &template.WorkflowTemplate{Name: "big", Data: readFile(t, "slow.yaml") + "#" + strings.Repeat("x", 3<<19)})
	wantCode(t, err, codes.InvalidArgument, "1 MiB")
	_, err = tc.CreateTemplate(ctx(t), &template.WorkflowTemplate{Name: "slow", Data: readFile(t, "slow.yaml")})
	wantCode(t, err, codes.AlreadyExists, "slow")
	_, err = wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "nope", Hardware: `{"device_1":"` + mac1 + `"}`})
	wantCode(t, err, codes.NotFound, "nope")
	_, err = wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "slow", Hardware: `{"device_1":"08:00:27:ff:ff:ff"}`})
	wantCode(t, err, codes.NotFound, "08:00:27:ff:ff:ff")
	_, err = wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "slow", Hardware: `{"device_2":"` + mac1 + `"}`})
	wantCode(t, err, codes.InvalidArgument, "device_1")
	_, err = wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "slow", Hardware: `["x"]`})
	wantCode(t, err, codes.InvalidArgument, "hardware")
	list, err := wc.ListWorkflows(ctx(t), &workflow.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := list.Recv(); status.Code(err) == codes.OK {
		t.Fatal("a refused CreateWorkflow stored a workflow")
	}
	_, err = wc.GetWorkflowContexts(ctx(t), &workflow.WorkflowContextRequest{})
	if err == nil {
		// Streaming errors arrive on the first Recv.
		st, _ := wc.GetWorkflowContexts(ctx(t), &workflow.WorkflowContextRequest{})
		_, err = st.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "worker_id")
}

// TestREST covers the v0.6 gateway routes and the operator endpoints.
func TestREST(t *testing.T) {
	s := servertest.Start(t)
	body := `{"data":` + readFile(t, "hardware-1.json") + `}`
	// The file format has metadata as an object; the REST body carries the
	// proto form, where it is a string.
	body = `{"data":{"id":"` + hw1 + `","metadata":"{\"instance\":{\"hostname\":\"node-1\"}}","network":{"interfaces":[{"dhcp":{"mac":"` + mac1 + `","ip":{"address":"10.1.0.11","netmask":"255.255.0.0"}},"netboot":{"allow_pxe":true,"allow_workflow":true}}]}}}`
	if code, out := s.Rest("POST", "/v1/hardware", body, ""); code != 401 {
		t.Fatalf("unauthenticated POST: %d %s", code, out)
	}
	if code, out := s.Rest("POST", "/v1/hardware", body, adminToken); code != 200 {
		t.Fatalf("POST /v1/hardware: %d %s", code, out)
	}
	code, out := s.Rest("GET", "/v1/hardware/"+hw1, "", adminToken)
	if code != 200 || !strings.Contains(out, `"allow_pxe":true`) {
		t.Fatalf("GET /v1/hardware/{id}: %d %s (want snake_case fields)", code, out)
	}
	if code, out := s.Rest("POST", "/v1/hardware/mac", `{"mac":"`+mac1+`"}`, adminToken); code != 200 || !strings.Contains(out, hw1) {
		t.Fatalf("POST /v1/hardware/mac: %d %s", code, out)
	}
	if code, out := s.Rest("POST", "/v1/hardware", `{"data":{"id":"x"}}`, adminToken); code != 400 || !strings.Contains(out, "id") {
		t.Fatalf("bad POST: %d %s", code, out)
	}
	tpl, _ := json.Marshal(map[string]string{"name": "slow", "data": readFile(t, "slow.yaml")})
	code, out = s.Rest("POST", "/v1/templates", string(tpl), adminToken)
	if code != 200 {
		t.Fatalf("POST /v1/templates: %d %s", code, out)
	}
	code, out = s.Rest("POST", "/v1/workflows", `{"template":"slow","hardware":"{\"device_1\":\"`+mac1+`\"}"}`, adminToken)
	var wf struct{ ID string }
	if code != 200 || json.Unmarshal([]byte(out), &wf) != nil || wf.ID == "" {
		t.Fatalf("POST /v1/workflows: %d %s", code, out)
	}
	if code, out := s.Rest("GET", "/v1/workflows/"+wf.ID+"/state", "", adminToken); code != 200 || !strings.Contains(out, `"total_number_of_actions":"1"`) {
		t.Fatalf("GET state: %d %s", code, out)
	}
	if code, out := s.Rest("GET", "/v1/workflows/"+wf.ID+"/events", "", adminToken); code != 200 {
		t.Fatalf("GET events: %d %s", code, out)
	}
	if code, out := s.Rest("GET", "/v1/templates", "", adminToken); code != 200 || !strings.Contains(out, "slow") {
		t.Fatalf("GET templates: %d %s", code, out)
	}
	for path, want := range map[string]string{
		"/openapi.json": `"/v1/workflows/{id}/state"`,
		"/healthz":      `"ok"`,
		"/version":      `"herd-server"`,
		"/metrics":      `herd_grpc_calls_total{code="OK",method="/github.com.tinkerbell.tink.protos.hardware.HardwareService/Push"}`,
		"/cert":         "BEGIN CERTIFICATE",
	} {
		if code, out := s.Rest("GET", path, "", ""); code != 200 || !strings.Contains(out, want) {
			t.Errorf("GET %s: %d, want %q in\n%.300s", path, code, want, out)
		}
	}
}

// TestLegacyClientsWithoutAuth: with --insecure-no-auth a v0.6 client that
// sends no credentials works.
func TestLegacyClientsWithoutAuth(t *testing.T) {
	s := servertest.Start(t, "--insecure-no-auth")
	hc := hardware.NewHardwareServiceClient(s.Dial(""))
	if _, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1}); status.Code(err) != codes.NotFound {
		t.Fatalf("no-auth call: %v, want NotFound", err)
	}
	if !strings.Contains(s.Stderr.String(), "authentication is OFF") {
		t.Error("no warning logged with authentication off")
	}
}

// TestBootEvents: boots notes a machine's boot progress on its workflow;
// only admin callers (boots) may.
func TestBootEvents(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	id := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)

	admin := workflow.NewWorkflowServiceClient(s.Dial(adminToken))
	res, err := admin.RecordBootEvent(ctx(t), &workflow.BootEvent{HardwareId: hw1, Message: "ipxe script served"})
	if err != nil || res.GetWorkflowId() != id {
		t.Fatalf("RecordBootEvent: %v %v", res, err)
	}
	_, err = workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1))).RecordBootEvent(ctx(t), &workflow.BootEvent{HardwareId: hw1, Message: "forged"})
	wantCode(t, err, codes.PermissionDenied, "worker credential")
	_, err = admin.RecordBootEvent(ctx(t), &workflow.BootEvent{HardwareId: hw1})
	wantCode(t, err, codes.InvalidArgument, "message")
	if out := s.MustHerd("", "workflow", "events", id); !strings.Contains(out, "ipxe script served") || strings.Contains(out, "forged") {
		t.Fatalf("workflow events:\n%s", out)
	}
}

// TestActionLogs: a worker uploads its container's output; the operator
// reads it with `herd workflow logs`; other machines cannot write there.
func TestActionLogs(t *testing.T) {
	s := servertest.Start(t)
	for _, f := range []string{"hardware-1.json", "hardware-2.json"} {
		s.MustHerd(readFile(t, f), "hardware", "push")
	}
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	id := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)
	lines := []*workflow.LogLine{{Stream: "stdout", Text: "hello from the container"}, {Stream: "stderr", Text: "a warning"}}
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	if _, err := w.ReportActionLogs(ctx(t), &workflow.ActionLogs{WorkflowId: id, TaskName: "only", ActionName: "hang", Lines: lines}); err != nil {
		t.Fatal(err)
	}
	_, err := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw2))).ReportActionLogs(ctx(t),
		&workflow.ActionLogs{WorkflowId: id, TaskName: "only", ActionName: "hang", Lines: lines})
	wantCode(t, err, codes.NotFound, id)
	_, err = w.ReportActionLogs(ctx(t), &workflow.ActionLogs{WorkflowId: id, TaskName: "only", ActionName: "hang",
		Lines: []*workflow.LogLine{{Stream: "stdin", Text: "x"}}})
	wantCode(t, err, codes.InvalidArgument, "lines[0].stream")
	_, err = w.ReportActionLogs(ctx(t), &workflow.ActionLogs{WorkflowId: id, TaskName: "only", ActionName: "hang",
		Lines: []*workflow.LogLine{{Stream: "stdout", Text: strings.Repeat("x", 5000)}}})
	wantCode(t, err, codes.InvalidArgument, "4 KiB")

	out := s.MustHerd("", "workflow", "logs", id)
	if !strings.Contains(out, "only/hang stdout: hello from the container") || !strings.Contains(out, "only/hang stderr: a warning") {
		t.Fatalf("workflow logs:\n%s", out)
	}
	if code, body := s.Rest("GET", "/v1/workflows/"+id+"/logs", "", adminToken); code != 200 || !strings.Contains(body, "a warning") {
		t.Fatalf("GET logs: %d %s", code, body)
	}
}
