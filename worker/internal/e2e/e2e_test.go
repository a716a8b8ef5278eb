// Package e2e runs herd-worker's logic in-process against a real
// herd-server (on a throwaway PostgreSQL) and a private dockerd: real
// gRPC with the machine's own credential, real containers.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/dockertest"
	"github.com/herd-metal/herd/worker/internal/runner"
)

func TestMain(m *testing.M) {
	os.Exit(dockertest.Main(func() int { return servertest.Main(m, true) }))
}

const (
	hw1  = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
	hw2  = "5f2c6a3e-1111-4c4c-9a9a-222233334444"
	mac1 = "08:00:27:00:00:01"
	mac2 = "08:00:27:00:00:02"
	prog = "herd-test/prog:v1"
)

func hardwareJSON(id, mac, ip string) string {
	return `{"id":"` + id + `","metadata":{"instance":{"hostname":"node-` + id[:4] + `"}},
	"network":{"interfaces":[{"dhcp":{"mac":"` + mac + `","arch":"x86_64","ip":{"address":"` + ip + `","netmask":"255.255.0.0"}},
	"netboot":{"allow_pxe":true,"allow_workflow":true}}]}}`
}

type env struct {
	s      *servertest.Server
	d      *dockertest.Daemon
	runs   string // host directory bound at /mnt/runs in the actions
	admin  workflow.WorkflowServiceClient
	logBuf *servertest.Buffer
}

var importOnce sync.Once

func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t)
}

// setupWith is setup with extra herd-server flags.
func setupWith(t *testing.T, serverFlags ...string) *env {
	t.Helper()
	d := dockertest.Get(t)
	var err error
	importOnce.Do(func() { err = d.ImportTestProg(context.Background(), prog) })
	if err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, serverFlags...)
	s.MustHerd(hardwareJSON(hw1, mac1, "10.1.0.11"), "hardware", "push")
	s.MustHerd(hardwareJSON(hw2, mac2, "10.1.0.12"), "hardware", "push")
	return &env{s: s, d: d, runs: t.TempDir(), admin: workflow.NewWorkflowServiceClient(s.Dial(servertest.AdminToken)), logBuf: &servertest.Buffer{}}
}

// workflow creates a template (YAML with RUNS standing for the runs
// directory) and a workflow of it on machine 1.
func (e *env) workflow(t *testing.T, name, yaml string) string {
	t.Helper()
	e.s.MustHerd(strings.ReplaceAll(yaml, "RUNS", e.runs), "template", "create", "--name", name)
	return e.s.CreateWorkflow(name, `{"device_1":"`+mac1+`"}`)
}

// server is machine hw's connection to herd-server, as herd-worker dials it.
func (e *env) server(t *testing.T, hw string) *runner.Client {
	t.Helper()
	conn, err := connect.Dial(context.Background(), connect.Config{Authority: e.s.GRPC, CertURL: e.s.HTTP + "/cert", Token: e.s.WorkerToken(hw)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runner.NewClient(workflow.NewWorkflowServiceClient(conn))
}

func (e *env) worker(t *testing.T, s runner.Server) *runner.Worker {
	t.Helper()
	rt, err := docker.New(docker.Config{Host: e.d.Host, PullPolicy: docker.PullMissing}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return e.workerWith(t, s, rt)
}

func (e *env) workerWith(t *testing.T, s runner.Server, rt runner.Runtime) *runner.Worker {
	t.Helper()
	log := slog.New(slog.NewTextHandler(e.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := runner.New(runner.Config{WorkerID: hw1, DataDir: t.TempDir(), RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		StopGrace: 2 * time.Second, FinalReportWithin: time.Second, Poll: 100 * time.Millisecond}, s, rt, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return c
}

// events are the workflow's events as "action:STATE" and their messages,
// without herd-server's netboot notes (task "netboot"): the trail is the
// worker's.
func (e *env) events(t *testing.T, id string) ([]string, map[string]string) {
	t.Helper()
	stream, err := e.admin.ShowWorkflowEvents(ctx(t), &workflow.GetRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	msgs := map[string]string{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return trail, msgs
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetTaskName() == "netboot" {
			continue
		}
		k := ev.GetActionName() + ":" + strings.TrimPrefix(ev.GetActionStatus().String(), "STATE_")
		trail = append(trail, k)
		msgs[k] = ev.GetMessage()
		if ev.GetWorkerId() != hw1 {
			t.Errorf("event %s by worker %q", k, ev.GetWorkerId())
		}
	}
}

// logs are the output lines herd-server stored for the workflow, as
// "action stream text".
func (e *env) logs(t *testing.T, id string) []string {
	t.Helper()
	stream, err := e.admin.ShowActionLogs(ctx(t), &workflow.ActionLogsRequest{WorkflowId: id})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for {
		l, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return lines
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ln := range l.GetLines() {
			lines = append(lines, l.GetActionName()+" "+ln.GetStream()+" "+ln.GetText())
			if ln.GetTime() == nil || time.Since(ln.GetTime().AsTime()) > 5*time.Minute {
				t.Errorf("line %q at %v", ln.GetText(), ln.GetTime())
			}
		}
	}
}

func (e *env) state(t *testing.T, id string) workflow.State {
	t.Helper()
	wf, err := e.admin.GetWorkflow(ctx(t), &workflow.GetRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return wf.GetState()
}

func (e *env) runsLog(t *testing.T) string {
	b, _ := os.ReadFile(filepath.Join(e.runs, "log"))
	return string(b)
}

func (e *env) noContainers(t *testing.T) {
	t.Helper()
	if ids, err := e.d.Containers(ctx(t)); err != nil || len(ids) != 0 {
		t.Errorf("containers left behind: %v (%v)", ids, err)
	}
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

const threeActions = `version: "0.1"
name: three
tasks:
  - name: provision
    worker: "{{.device_1}}"
    volumes: ["RUNS:/mnt/runs"]
    environment: {DEST_DISK: /dev/sda}
    actions:
      - name: write-data
        image: ` + prog + `
        timeout: 30
        command: [data-set, disk, /dev/sda]
      - name: check-data
        image: ` + prog + `
        timeout: 30
        command: [data-get, disk, /dev/sda]
      - name: partition
        image: ` + prog + `
        timeout: 30
        command: [exit, "3", "partition table broken"]
        on-failure: [append, /mnt/runs/log, on-failure ran]
`

// TestThreeActions: data written by the first action reaches the second
// through the server; the third fails, its on-failure command runs in the
// same image, and the server ends the workflow FAILED with the reason.
func TestThreeActions(t *testing.T) {
	e := setup(t)
	id := e.workflow(t, "three", threeActions)
	w := e.worker(t, e.server(t, hw1))
	n, err := w.RunOnce(ctx(t))
	if err != nil || n != 3 {
		t.Fatalf("RunOnce ran %d actions: %v\n%s", n, err, e.logBuf.String())
	}
	trail, msgs := e.events(t, id)
	want := []string{"write-data:RUNNING", "write-data:SUCCESS", "check-data:RUNNING", "check-data:SUCCESS", "partition:RUNNING", "partition:FAILED"}
	if !equal(trail, want) {
		t.Fatalf("events %q\nwant   %q\nmessages %q", trail, want, msgs)
	}
	for _, m := range []string{"exit code 3", "partition table broken", "on-failure command exited with 0"} {
		if !strings.Contains(msgs["partition:FAILED"], m) {
			t.Errorf("FAILED message %q does not say %q", msgs["partition:FAILED"], m)
		}
	}
	if st := e.state(t, id); st != workflow.State_STATE_FAILED {
		t.Errorf("workflow state %v", st)
	}
	if got := e.runsLog(t); got != "on-failure ran\n" {
		t.Errorf("on-failure log %q", got)
	}
	// The containers are gone; their output is on the server.
	if got, want := e.logs(t, id), []string{"write-data stdout set disk", "check-data stdout data ok", "partition stderr partition table broken"}; !equal(got, want) {
		t.Errorf("stored output %q\nwant          %q", got, want)
	}
	data, err := e.admin.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	var got map[string]string
	if err != nil || json.Unmarshal(data.GetData(), &got) != nil || got["disk"] != "/dev/sda" || len(got) != 1 {
		t.Errorf("workflow data %s (%v)", data.GetData(), err)
	}
	meta, err := e.admin.GetWorkflowMetadata(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	var m runner.Metadata
	if err != nil || json.Unmarshal(meta.GetData(), &m) != nil || m.WorkerID != hw1 || m.Action != "write-data" || m.Task != "provision" {
		t.Errorf("workflow metadata %s (%v)", meta.GetData(), err)
	}
	e.noContainers(t)
}

// TestMissingImageAndTimeout: an image nobody can pull fails its action
// with the pull error at once; an action over its timeout is stopped and
// reported TIMEOUT after its on-timeout command.
func TestMissingImageAndTimeout(t *testing.T) {
	e := setup(t)
	missing := e.workflow(t, "missing", `version: "0.1"
name: missing
tasks:
  - name: t
    worker: "{{.device_1}}"
    actions:
      - name: nope
        image: 127.0.0.1:1/herd/nope:v1
        timeout: 30
`)
	w := e.worker(t, e.server(t, hw1))
	start := time.Now()
	if _, err := w.RunOnce(ctx(t)); err != nil {
		t.Fatal(err)
	}
	trail, msgs := e.events(t, missing)
	if !equal(trail, []string{"nope:RUNNING", "nope:FAILED"}) || !strings.Contains(msgs["nope:FAILED"], "pull image 127.0.0.1:1/herd/nope:v1") {
		t.Errorf("events %q, messages %q", trail, msgs)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("the missing image took %s to fail", time.Since(start))
	}

	slow := e.workflow(t, "slow", `version: "0.1"
name: slow
tasks:
  - name: t
    worker: "{{.device_1}}"
    volumes: ["RUNS:/mnt/runs"]
    actions:
      - name: sleepy
        image: `+prog+`
        timeout: 2
        command: [sleep, 1h]
        on-timeout: [append, /mnt/runs/log, on-timeout ran]
`)
	if _, err := w.RunOnce(ctx(t)); err != nil {
		t.Fatal(err)
	}
	trail, msgs = e.events(t, slow)
	if len(trail) < 2 || trail[len(trail)-1] != "sleepy:TIMEOUT" {
		t.Fatalf("events %q, messages %q\n%s", trail, msgs, e.logBuf.String())
	}
	if got := e.runsLog(t); got != "on-timeout ran\n" {
		t.Errorf("on-timeout log %q", got)
	}
	if st := e.state(t, slow); st != workflow.State_STATE_TIMEOUT {
		t.Errorf("workflow state %v", st)
	}
	e.noContainers(t)
}

// lossy is a machine's link to the server that goes dead (as when the
// machine loses power) right after the RUNNING report of one action.
type lossy struct {
	runner.Server
	cutAfter string
	cancel   context.CancelFunc
	dead     atomic.Bool
}

func (l *lossy) Report(ctx context.Context, r *workflow.WorkflowActionStatus) error {
	if l.dead.Load() {
		return status.Error(codes.Unavailable, "machine is off")
	}
	err := l.Server.Report(ctx, r)
	if err == nil && r.GetActionName() == l.cutAfter && r.GetActionStatus() == workflow.State_STATE_RUNNING {
		l.dead.Store(true)
		l.cancel()
	}
	return err
}

func (l *lossy) UpdateData(ctx context.Context, id string, meta, data []byte) error {
	if l.dead.Load() {
		return status.Error(codes.Unavailable, "machine is off")
	}
	return l.Server.UpdateData(ctx, id, meta, data)
}

const resumeActions = `version: "0.1"
name: resume
tasks:
  - name: t
    worker: "{{.device_1}}"
    volumes: ["RUNS:/mnt/runs"]
    actions:
      - name: first
        image: ` + prog + `
        command: [append, /mnt/runs/log, first]
      - name: second
        image: ` + prog + `
        command: [append, /mnt/runs/log, second]
      - name: slow
        image: ` + prog + `
        command: [sleep, 3s]
      - name: last
        image: ` + prog + `
        command: [append, /mnt/runs/log, last]
`

// TestResume: the machine dies right after reporting RUNNING of "second";
// the worker that comes back (fresh data directory, as after a reboot)
// resumes at "second" and never runs "first" again. While "slow" runs,
// herd-server restarts; the worker's reports get through afterwards.
func TestResume(t *testing.T) {
	e := setup(t)
	id := e.workflow(t, "resume", resumeActions)
	runCtx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	w := e.worker(t, &lossy{Server: e.server(t, hw1), cutAfter: "second", cancel: cancel})
	if _, err := w.RunOnce(runCtx); err != nil {
		t.Fatal(err)
	}
	trail, _ := e.events(t, id)
	if !equal(trail, []string{"first:RUNNING", "first:SUCCESS", "second:RUNNING"}) {
		t.Fatalf("before the reboot: events %q", trail)
	}
	e.noContainers(t)

	// Restart herd-server while "slow" sleeps.
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for !strings.Contains(e.runsLog(t), "second") {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		e.s.Restart()
	}()
	w2 := e.worker(t, e.server(t, hw1))
	n, err := w2.RunOnce(ctx(t))
	<-restarted
	if err != nil || n != 3 {
		t.Fatalf("after the reboot RunOnce ran %d actions: %v\n%s", n, err, e.logBuf.String())
	}
	trail, msgs := e.events(t, id)
	want := []string{"first:RUNNING", "first:SUCCESS", "second:RUNNING", "second:SUCCESS", "slow:RUNNING", "slow:SUCCESS", "last:RUNNING", "last:SUCCESS"}
	if !equal(trail, want) {
		t.Fatalf("events %q\nwant   %q\n%q", trail, want, msgs)
	}
	if got := e.runsLog(t); got != "first\nsecond\nlast\n" {
		t.Errorf("actions ran: %q", got)
	}
	if st := e.state(t, id); st != workflow.State_STATE_SUCCESS {
		t.Errorf("workflow state %v", st)
	}
	e.noContainers(t)
}

// TestOtherMachineRefused: machine 2's credential neither lists nor reads
// nor reports machine 1's workflow.
func TestOtherMachineRefused(t *testing.T) {
	e := setup(t)
	id := e.workflow(t, "three", threeActions)
	other := e.server(t, hw2)
	if _, err := other.Contexts(ctx(t), hw1); status.Code(err) != codes.PermissionDenied {
		t.Errorf("contexts of another machine: %v", err)
	}
	if _, err := other.Actions(ctx(t), id); status.Code(err) != codes.NotFound {
		t.Errorf("actions of another machine's workflow: %v", err)
	}
	if _, err := other.Data(ctx(t), id); status.Code(err) != codes.NotFound {
		t.Errorf("data of another machine's workflow: %v", err)
	}
	err := other.Report(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "provision", ActionName: "write-data",
		ActionStatus: workflow.State_STATE_RUNNING})
	if c := status.Code(err); c != codes.NotFound && c != codes.PermissionDenied && c != codes.FailedPrecondition {
		t.Errorf("report on another machine's workflow: %v", err)
	}
	if l, _ := other.Contexts(ctx(t), hw2); len(l) != 0 {
		t.Errorf("machine 2 sees %d workflows", len(l))
	}
}
