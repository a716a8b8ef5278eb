package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// dialReplicas dials every replica at once, as a client given the list
// "host:port,host:port" does.
func dialReplicas(t *testing.T, token string, replicas ...*servertest.Server) *grpc.ClientConn {
	t.Helper()
	var addrs []string
	for _, r := range replicas {
		addrs = append(addrs, r.GRPC)
	}
	conn, err := connect.Dial(context.Background(), connect.Config{Authority: strings.Join(addrs, ","),
		CertURL: replicas[0].HTTP + "/cert", Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// retrying calls fn until it succeeds, retrying only what a worker
// retries (Unavailable: a replica gone mid-call), for up to 30 s.
func retrying(t *testing.T, what string, fn func() error) (unavailable int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		if err == nil {
			return unavailable
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		unavailable++
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicas: two herd-server replicas over one database serve every
// call; a push to one reaches a Watch on the other; a worker dialling
// both goes on through the other when one is killed mid-workflow, and
// nothing is lost or applied twice; the servers' own timers end a
// workflow once, not once per replica.
func TestReplicas(t *testing.T) {
	r1 := servertest.Start(t)
	r2 := r1.Replica()

	// A push through r1 reaches a Watch on r2 (LISTEN/NOTIFY fans out).
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	watch, err := hardware.NewHardwareServiceClient(r2.Dial(servertest.AdminToken)).Watch(wctx, &hardware.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // the (empty) inventory's end marker or first record
		t.Fatal(err)
	}
	r1.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	r1.MustHerd(readFile(t, "hardware-2.json"), "hardware", "push")
	seen := map[string]bool{}
	for len(seen) < 2 {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatalf("watch on r2: %v (saw %v)", err, seen)
		}
		if id := ev.GetHardware().GetId(); id != "" {
			seen[id] = true
		}
	}
	wcancel()

	r1.MustHerd("", "template", "create", "--file", "testdata/two-machines.yaml")
	id := r2.CreateWorkflow("two-machines", `{"device_1":"`+mac1+`","device_2":"10.1.0.12"}`)
	w1 := workflow.NewWorkflowServiceClient(dialReplicas(t, r1.WorkerToken(hw1), r1, r2))
	w2 := workflow.NewWorkflowServiceClient(dialReplicas(t, r1.WorkerToken(hw2), r1, r2))
	steps := []struct {
		c            workflow.WorkflowServiceClient
		task, action string
	}{{w1, "disk", "image"}, {w1, "disk", "hostname"}, {w2, "peer", "announce"}}
	unavailable := 0
	for i, st := range steps {
		if i == 1 {
			r1.Kill() // mid-workflow, between two actions' reports
		}
		for _, state := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
			unavailable += retrying(t, fmt.Sprintf("report %s/%s %v", st.task, st.action, state), func() error {
				_, err := st.c.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id,
					TaskName: st.task, ActionName: st.action, ActionStatus: state})
				return err
			})
		}
	}
	t.Logf("reports retried after Unavailable: %d", unavailable)
	if out := r2.MustHerd("", "workflow", "state", id, "-o", "json"); !strings.Contains(out, "STATE_SUCCESS") {
		t.Fatalf("workflow state after r1 was killed: %s", out)
	}
	events := r2.MustHerd("", "workflow", "events", id, "-o", "json")
	for _, st := range steps {
		for _, state := range []string{"STATE_RUNNING", "STATE_SUCCESS"} {
			n := 0
			for _, line := range strings.Split(events, "\n") {
				if strings.Contains(line, `"action_name":"`+st.action+`"`) && strings.Contains(line, `"action_status":"`+state+`"`) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d %s events of %s, want 1:\n%s", n, state, st.action, events)
			}
		}
	}

	// Timers across replicas: with both serving, workflows whose worker
	// started an action and vanished end TIMEOUT with one timeout event
	// each, whichever replica's timer saw them first.
	r1.Restart()
	r1.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	var slow []string
	for i := range 10 {
		hw := strings.NewReplacer(hw1, fmt.Sprintf("00000000-0000-4000-8000-0000000000%02d", i),
			mac1, fmt.Sprintf("08:00:27:00:02:%02x", i), "10.1.0.11", fmt.Sprintf("10.1.2.%d", i+10)).Replace(readFile(t, "hardware-1.json"))
		r1.MustHerd(hw, "hardware", "push")
		wf := r1.CreateWorkflow("slow", fmt.Sprintf(`{"device_1":"08:00:27:00:02:%02x"}`, i))
		w := workflow.NewWorkflowServiceClient(dialReplicas(t, r1.WorkerToken(fmt.Sprintf("00000000-0000-4000-8000-0000000000%02d", i)), r1, r2))
		retrying(t, "report hang RUNNING", func() error {
			_, err := w.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: wf,
				TaskName: "only", ActionName: "hang", ActionStatus: workflow.State_STATE_RUNNING})
			return err
		})
		slow = append(slow, wf)
	}
	for _, wf := range slow {
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(r2.MustHerd("", "workflow", "state", wf, "-o", "json"), "STATE_TIMEOUT") {
			if time.Now().After(deadline) {
				t.Fatalf("workflow %s did not time out", wf)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(time.Second) // time for a second timer to fire, were there one
	for _, wf := range slow {
		ev := r1.MustHerd("", "workflow", "events", wf, "-o", "json")
		if n := strings.Count(ev, "STATE_TIMEOUT"); n != 1 {
			t.Fatalf("workflow %s has %d TIMEOUT events, want 1:\n%s", wf, n, ev)
		}
	}
}
