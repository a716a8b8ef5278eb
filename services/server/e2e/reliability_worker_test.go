package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/workflow"
)

// The timeouts (seconds) of the workflows whose workers vanish: short, so
// the server's timers end them within the test.
const (
	vanishActionTimeout = 2
	vanishGlobalTimeout = 8
)

// resumeAt is herd-worker's rule for where a worker that starts again
// takes up a workflow (worker/internal/runner.Start): an action the
// server shows RUNNING was interrupted and is run again; after SUCCESS
// the next one; PENDING the first.
func resumeAt(c *workflow.WorkflowContext) int {
	switch c.GetCurrentActionState() {
	case workflow.State_STATE_RUNNING:
		return int(c.GetCurrentActionIndex())
	case workflow.State_STATE_SUCCESS:
		return int(c.GetCurrentActionIndex()) + 1
	}
	return 0
}

// TestReliabilityWorkerKilled (issue 16): simulated workers die mid-run,
// their connection to herd-server dropping as when herd-worker is
// SIGKILLed or its machine reboots. Three groups of machines:
//   - killed and back: the worker dies right after RUNNING of action k and
//     a new one starts; the server shows it action k RUNNING, it runs k
//     again (RUNNING, SUCCESS) and the rest; the old worker, not dead after
//     all, reports SUCCESS of k late (after the new one's SUCCESS of k, after
//     its RUNNING of k+1, after the end). Every workflow must end SUCCESS
//     with exactly one RUNNING and one SUCCESS event per action.
//   - gone mid-action: the worker dies after RUNNING of action k and never
//     returns: the server must end the workflow TIMEOUT by the action's
//     timeout, with the reason in the TIMEOUT event of action k.
//   - gone between actions: the worker dies after SUCCESS of action k:
//     no action runs, so the global timeout must end it, with the reason
//     in a TIMEOUT event of action k+1.
//
// A late report of a vanished worker after TIMEOUT must be refused and
// recorded nowhere.
func TestReliabilityWorkerKilled(t *testing.T) {
	group := reliability.Size(5, 50)
	s := servertest.Start(t, "--log-level", "info")
	pushMachines(t, s, 3*group)
	backIDs := createWorkflows(t, s, createTemplate(t, s, "fleet", 600, 3600), 0, group)
	vanishTpl := createTemplate(t, s, "vanish", vanishActionTimeout, vanishGlobalTimeout)
	midIDs := createWorkflows(t, s, vanishTpl, group, 2*group)
	betweenIDs := createWorkflows(t, s, vanishTpl, 2*group, 3*group)

	f := &fleet{s: s, seen: map[codes.Code]int{}}
	tokens, ca := s.WorkerTokens(), s.CA()
	// connect is one start of machine i's worker: a connection of its own.
	connect := func(i int) (workflow.WorkflowServiceClient, func()) {
		conn := s.DialCA(ca, tokens[fleetHW(i)])
		return workflow.NewWorkflowServiceClient(conn), func() { conn.Close() }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// start is a worker's start: its one workflow (want) and its actions.
	start := func(c workflow.WorkflowServiceClient, i int, want string) (*workflow.WorkflowContext, []*workflow.WorkflowAction, error) {
		ctxs, err := f.contexts(ctx, c, fleetHW(i))
		if err != nil {
			return nil, nil, err
		}
		if len(ctxs) != 1 || ctxs[0].GetWorkflowId() != want {
			return nil, nil, fmt.Errorf("contexts %v, want workflow %s only", ctxs, want)
		}
		actions, err := f.actions(ctx, c, want)
		return ctxs[0], actions, err
	}
	// upTo reports RUNNING and SUCCESS of actions [from, to), then RUNNING
	// of action to when running is set.
	upTo := func(c workflow.WorkflowServiceClient, id string, actions []*workflow.WorkflowAction, from, to int, running bool) error {
		for j := from; j < to; j++ {
			for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
				if err := f.report(ctx, c, id, actions[j], st); err != nil {
					return err
				}
			}
		}
		if running {
			return f.report(ctx, c, id, actions[to], workflow.State_STATE_RUNNING)
		}
		return nil
	}

	// lateReport is one report of a worker presumed dead, sent once: only
	// a resend of the report recorded last is accepted (OK, and nothing
	// recorded); anything else must be refused with FailedPrecondition.
	var lateMu sync.Mutex
	lateSeen, lateWrong := map[codes.Code]int{}, []string{}
	lateReport := func(c workflow.WorkflowServiceClient, id, what string, a *workflow.WorkflowAction, st workflow.State, want codes.Code) {
		_, err := c.ReportActionStatus(ctx, &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: a.GetTaskName(),
			ActionName: a.GetName(), ActionStatus: st, Message: "late"})
		lateMu.Lock()
		defer lateMu.Unlock()
		lateSeen[status.Code(err)]++
		if status.Code(err) != want {
			lateWrong = append(lateWrong, fmt.Sprintf("workflow %s: %s: %v, want %v", id, what, err, want))
		}
	}

	errs := make(chan error, 3*group)
	vanishedAt := make([]time.Time, 3*group)
	var wg sync.WaitGroup
	spawn := func(fn func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- fn() }()
	}
	// firstLife is a worker's run until it dies: RUNNING and SUCCESS of
	// actions [0, to), then RUNNING of action to when running is set. kill
	// drops its connection.
	firstLife := func(i int, id string, to int, running bool) (actions []*workflow.WorkflowAction, kill func(), err error) {
		c, kill := connect(i)
		if _, actions, err = start(c, i, id); err == nil {
			err = upTo(c, id, actions, 0, to, running)
		}
		return actions, kill, err
	}
	for i := range group {
		k := i % fleetActions
		id := backIDs[i]
		spawn(func() error {
			actions, kill, err := firstLife(i, id, k, true)
			if err != nil {
				return err
			}
			kill() // mid-action
			zombie, _ := connect(i)
			c2, _ := connect(i)
			wc, _, err := start(c2, i, id)
			if err != nil {
				return fmt.Errorf("worker back after its death: %w", err)
			}
			if from := resumeAt(wc); from != k || wc.GetCurrentActionState() != workflow.State_STATE_RUNNING {
				return fmt.Errorf("worker back after its death at action %d RUNNING: the server shows action %d %v (resume at %d)",
					k, wc.GetCurrentActionIndex(), wc.GetCurrentActionState(), from)
			}
			if err := upTo(c2, id, actions, k, k+1, false); err != nil { // action k again
				return err
			}
			lateReport(zombie, id, "old worker's SUCCESS of action k after the new worker's", actions[k], workflow.State_STATE_SUCCESS, codes.OK)
			if k+1 < fleetActions {
				if err := upTo(c2, id, actions, k+1, k+1, true); err != nil {
					return err
				}
				lateReport(zombie, id, "old worker's SUCCESS of action k after the new worker's RUNNING of k+1", actions[k], workflow.State_STATE_SUCCESS, codes.FailedPrecondition)
				if err := f.report(ctx, c2, id, actions[k+1], workflow.State_STATE_SUCCESS); err != nil {
					return err
				}
				if err := upTo(c2, id, actions, k+2, fleetActions, false); err != nil {
					return err
				}
			}
			// After the end only the last action's SUCCESS is the report
			// recorded last.
			want := codes.FailedPrecondition
			if k == fleetActions-1 {
				want = codes.OK
			}
			lateReport(zombie, id, "old worker's SUCCESS of action k after the workflow ended", actions[k], workflow.State_STATE_SUCCESS, want)
			return nil
		})
	}
	// vanish runs machine i's worker until it dies for good.
	vanish := func(i int, id string, to int, running bool) {
		spawn(func() error {
			_, kill, err := firstLife(i, id, to, running)
			vanishedAt[i] = time.Now() // its last answer
			kill()
			return err
		})
	}
	for n := range group {
		vanish(group+n, midIDs[n], n%fleetActions, true)              // after RUNNING of action k
		vanish(2*group+n, betweenIDs[n], n%(fleetActions-1)+1, false) // after SUCCESS of action k, k+1 not started
	}
	wg.Wait()
	close(errs)
	lost := 0
	for err := range errs {
		if err != nil {
			lost++
			t.Errorf("worker: %v", err)
		}
	}

	// The server's timers end the workflows of the vanished workers; when
	// each was seen final (polled every 50 ms).
	admin := workflow.NewWorkflowServiceClient(s.Dial(adminToken))
	endedAt := map[string]time.Time{}
	vanished := append(slices.Clone(midIDs), betweenIDs...)
	for deadline := time.Now().Add(time.Minute); len(endedAt) < len(vanished); time.Sleep(50 * time.Millisecond) {
		for _, id := range vanished {
			if _, ok := endedAt[id]; ok {
				continue
			}
			if wf, err := admin.GetWorkflow(ctx, &workflow.GetRequest{Id: id}); err == nil && engineFinal(wf.GetState()) {
				endedAt[id] = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workflows of vanished workers still not ended a minute on\n%s", len(vanished)-len(endedAt), len(vanished), tail(s.Stderr.String(), 30))
		}
	}
	// Their workers come back too late: what they report is refused.
	for n := range group {
		c, _ := connect(group + n)
		k := n % fleetActions
		lateReport(c, midIDs[n], "SUCCESS of the timed-out action from the worker back after TIMEOUT",
			&workflow.WorkflowAction{TaskName: "provision", Name: fmt.Sprintf("step-%d", k)}, workflow.State_STATE_SUCCESS, codes.FailedPrecondition)
		c, _ = connect(2*group + n)
		k = n%(fleetActions-1) + 1
		lateReport(c, betweenIDs[n], "RUNNING of the next action from the worker back after TIMEOUT",
			&workflow.WorkflowAction{TaskName: "provision", Name: fmt.Sprintf("step-%d", k)}, workflow.State_STATE_RUNNING, codes.FailedPrecondition)
	}
	for _, w := range lateWrong {
		lost++
		t.Error(w)
	}

	// What the database holds.
	states, counts := workflowStates(t, s), eventCounts(t, s)
	check := func(id string, want workflow.State, expect func(j int, a actionEvents) string) {
		if states[id] != want {
			lost++
			t.Errorf("workflow %s: %v, want %v", id, states[id], want)
		}
		got := counts[id]
		if got == nil {
			got = make([]actionEvents, fleetActions)
		}
		for j, a := range got {
			if msg := expect(j, a); msg != "" {
				lost++
				t.Errorf("workflow %s action %d: %s (%d RUNNING, %d SUCCESS, %d TIMEOUT, %d events %q)", id, j, msg, a.running, a.success, a.timeout, a.total, a.messages)
			}
		}
	}
	done2 := func(a actionEvents) bool { return a.running == 1 && a.success == 1 && a.total == 2 }
	none := func(a actionEvents) bool { return a.total == 0 }
	for _, id := range backIDs {
		check(id, workflow.State_STATE_SUCCESS, func(_ int, a actionEvents) string {
			if !done2(a) {
				return "want one RUNNING and one SUCCESS"
			}
			return ""
		})
	}
	var actionWaits, globalWaits []time.Duration
	for n, id := range midIDs {
		k := n % fleetActions
		actionWaits = append(actionWaits, endedAt[id].Sub(vanishedAt[group+n]))
		check(id, workflow.State_STATE_TIMEOUT, func(j int, a actionEvents) string {
			switch {
			case j < k && !done2(a):
				return "want one RUNNING and one SUCCESS"
			case j == k && !(a.running == 1 && a.timeout == 1 && a.total == 2 &&
				strings.Contains(a.messages[0], fmt.Sprintf("exceeded its timeout of %ds", vanishActionTimeout))):
				return "want one RUNNING and one TIMEOUT naming the action's timeout"
			case j > k && !none(a):
				return "want no events"
			}
			return ""
		})
	}
	for n, id := range betweenIDs {
		k := n % (fleetActions - 1)
		globalWaits = append(globalWaits, endedAt[id].Sub(vanishedAt[2*group+n]))
		check(id, workflow.State_STATE_TIMEOUT, func(j int, a actionEvents) string {
			switch {
			case j <= k && !done2(a):
				return "want one RUNNING and one SUCCESS"
			case j == k+1 && !(a.timeout == 1 && a.total == 1 &&
				strings.Contains(a.messages[0], fmt.Sprintf("exceeded its global timeout of %ds", vanishGlobalTimeout))):
				return "want one TIMEOUT naming the global timeout"
			case j > k+1 && !none(a):
				return "want no events"
			}
			return ""
		})
	}
	slices.Sort(actionWaits)
	slices.Sort(globalWaits)
	reliability.Record(t, reliability.Row{
		Case: "Worker killed mid-run (simulated workers)",
		Done: fmt.Sprintf("%d workers dropped their connection right after RUNNING of an action and started again (rerun of that action, as herd-worker does), the old one reporting SUCCESS of it late 3 times; "+
			"%d vanished after RUNNING of an action (action timeout %ds), %d between two actions (global timeout %ds), for good; each group spread over the 10 actions",
			group, group, vanishActionTimeout, group, vanishGlobalTimeout),
		Volume: fmt.Sprintf("%d workflows × %d actions", 3*group, fleetActions),
		Lost:   lost,
		Notes: fmt.Sprintf("no action reported SUCCESS twice; every rerun workflow SUCCESS; every abandoned one TIMEOUT with the reason in its event, "+
			"%v–%v after the worker's last answer when it vanished mid-action, %v–%v between actions (the global timeout counts from the first RUNNING; timer every 200 ms, states polled every 50 ms); "+
			"late reports answered %s; worker calls answered %s",
			actionWaits[0].Round(10*time.Millisecond), actionWaits[len(actionWaits)-1].Round(10*time.Millisecond),
			globalWaits[0].Round(10*time.Millisecond), globalWaits[len(globalWaits)-1].Round(10*time.Millisecond),
			codeCounts(lateSeen), f.seenCodes()),
	})
}

func engineFinal(st workflow.State) bool {
	return st == workflow.State_STATE_SUCCESS || st == workflow.State_STATE_FAILED || st == workflow.State_STATE_TIMEOUT
}
