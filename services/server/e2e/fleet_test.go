package e2e

// A fleet of simulated workers for the fault tests: goroutines that speak
// the worker RPCs over real gRPC, each with its own machine's credential,
// and retry what a worker retries.

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// fleetActions is the number of actions of each fleet workflow.
const fleetActions = 10

func fleetHW(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", 0xf000+i) }

func fleetMAC(i int) string { return fmt.Sprintf("02:f0:00:00:%02x:%02x", i>>8&0xff, i&0xff) }

func fleetMachine(i int) *hardware.Hardware {
	mac := fleetMAC(i)
	return &hardware.Hardware{
		Id:       fleetHW(i),
		Metadata: fmt.Sprintf(`{"instance":{"hostname":"fleet-%d"}}`, i),
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac, Hostname: fmt.Sprintf("fleet-%d", i), Arch: "x86_64",
				Ip: &hardware.Hardware_DHCP_IP{Address: fmt.Sprintf("10.200.%d.%d", i/250, i%250+1), Netmask: "255.255.0.0"}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}},
	}
}

// fleetTemplate has one task of fleetActions actions, each with the given
// timeout, and the given global timeout (seconds).
func fleetTemplate(name string, actionTimeout, global int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: \"0.1\"\nname: %s\nglobal_timeout: %d\ntasks:\n  - name: provision\n    worker: \"{{.device_1}}\"\n    actions:\n", name, global)
	for i := range fleetActions {
		fmt.Fprintf(&b, "      - name: step-%d\n        image: registry.local/noop:v1\n        timeout: %d\n", i, actionTimeout)
	}
	return b.String()
}

// resendEvery: one report in so many is sent twice, as after a reply lost
// on its way to the worker.
const resendEvery = 7

// fleet is n machines, each running one workflow of fleetActions actions.
type fleet struct {
	s       *servertest.Server
	workers []workflow.WorkflowServiceClient // by machine
	period  time.Duration                    // between two reports of one worker

	applied atomic.Int64 // reports answered OK
	sent    atomic.Int64 // reports sent (first sends only)
	resent  atomic.Int64 // reports sent again as after a lost reply

	mu         sync.Mutex
	seen       map[codes.Code]int // every answer the workers got, by code
	refused    []error            // calls that failed with a code a worker does not retry
	latencies  []reportLatency    // of each report
	answeredAt [][]time.Time      // by worker: when each of its reports was answered
}

// reportLatency is when a report was answered and how long after its
// first send (retries included).
type reportLatency struct {
	answered time.Time
	took     time.Duration
}

// newFleet pushes n machines and their workflows, with timeouts far beyond
// any test so only the faults can disturb them, and connects one worker
// per machine with the machine's own credential.
func newFleet(t *testing.T, s *servertest.Server, n int, period time.Duration) *fleet {
	t.Helper()
	return newFleetVia(t, s, n, period, s.DialCA)
}

// newFleetVia is newFleet with the workers' connections made by dial
// (e.g. from a network namespace).
func newFleetVia(t *testing.T, s *servertest.Server, n int, period time.Duration, dial func(ca *x509.CertPool, token string) *grpc.ClientConn) *fleet {
	t.Helper()
	pushMachines(t, s, n)
	createWorkflows(t, s, createTemplate(t, s, "fleet", 600, 3600), 0, n)
	f := &fleet{s: s, period: period, seen: map[codes.Code]int{}, answeredAt: make([][]time.Time, n)}
	tokens, ca := s.WorkerTokens(), s.CA()
	for i := range n {
		f.workers = append(f.workers, workflow.NewWorkflowServiceClient(dial(ca, tokens[fleetHW(i)])))
	}
	return f
}

// pushMachines pushes the machines [0, n).
func pushMachines(t *testing.T, s *servertest.Server, n int) {
	t.Helper()
	servertest.PushHardware(t, hardware.NewHardwareServiceClient(s.Dial(adminToken)), 0, n, fleetMachine)
}

// createTemplate stores fleetTemplate(name, ...) and returns its id.
func createTemplate(t *testing.T, s *servertest.Server, name string, actionTimeout, global int) string {
	t.Helper()
	tpl, err := template.NewTemplateServiceClient(s.Dial(adminToken)).CreateTemplate(context.Background(),
		&template.WorkflowTemplate{Name: name, Data: fleetTemplate(name, actionTimeout, global)})
	if err != nil {
		t.Fatal(err)
	}
	return tpl.GetId()
}

// createWorkflows creates one workflow of template tplID for each machine
// in [from, to) and returns their ids, by machine from from.
func createWorkflows(t *testing.T, s *servertest.Server, tplID string, from, to int) []string {
	t.Helper()
	wc := workflow.NewWorkflowServiceClient(s.Dial(adminToken))
	ids := make([]string, to-from)
	var g errgroup.Group
	g.SetLimit(16)
	for i := from; i < to; i++ {
		g.Go(func() error {
			r, err := wc.CreateWorkflow(context.Background(), &workflow.CreateRequest{Template: tplID, Hardware: `{"device_1":"` + fleetMAC(i) + `"}`})
			ids[i-from] = r.GetId()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// reports is how many reports the whole fleet sends: RUNNING and SUCCESS
// of each action.
func (f *fleet) reports() int64 { return int64(len(f.workers) * fleetActions * 2) }

// run starts every worker and returns a function that waits for them all.
func (f *fleet) run(ctx context.Context) (wait func() error) {
	var g errgroup.Group
	for i := range f.workers {
		g.Go(func() error {
			if err := f.work(ctx, i); err != nil {
				return fmt.Errorf("worker %s: %w", fleetHW(i), err)
			}
			return nil
		})
	}
	return g.Wait
}

// work is one worker's life: find its workflow, read its actions, report
// RUNNING then SUCCESS of each, one report per period (the first after a
// random part of it, so the fleet does not move in lockstep).
func (f *fleet) work(ctx context.Context, i int) error {
	c, hw := f.workers[i], fleetHW(i)
	ctxs, err := f.contexts(ctx, c, hw)
	if err != nil {
		return err
	}
	if len(ctxs) != 1 {
		return fmt.Errorf("it has the next move in %d workflows, want 1", len(ctxs))
	}
	id := ctxs[0].GetWorkflowId()
	actions, err := f.actions(ctx, c, id)
	if err != nil {
		return err
	}
	next := time.Now().Add(rand.N(f.period))
	for _, a := range actions {
		for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
			time.Sleep(time.Until(next))
			next = time.Now().Add(f.period)
			if err := f.report(ctx, c, id, a, st); err != nil {
				return err
			}
			f.mu.Lock()
			f.answeredAt[i] = append(f.answeredAt[i], time.Now())
			f.mu.Unlock()
			f.applied.Add(1)
			// Every resendEvery-th report's answer is taken as lost, and
			// the report sent again, as a worker does when the reply does
			// not reach it; the server must accept it and change nothing.
			if f.sent.Add(1)%resendEvery == 0 {
				if err := f.report(ctx, c, id, a, st); err != nil {
					return fmt.Errorf("resend: %w", err)
				}
				f.resent.Add(1)
			}
		}
	}
	return nil
}

// contexts is GetWorkflowContexts for machine hw, read to its end.
func (f *fleet) contexts(ctx context.Context, c workflow.WorkflowServiceClient, hw string) ([]*workflow.WorkflowContext, error) {
	var ctxs []*workflow.WorkflowContext
	err := f.call(ctx, func(ctx context.Context) error {
		stream, err := c.GetWorkflowContexts(ctx, &workflow.WorkflowContextRequest{WorkerId: hw})
		if err != nil {
			return err
		}
		ctxs = nil
		for {
			wc, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			ctxs = append(ctxs, wc)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("contexts: %w", err)
	}
	return ctxs, nil
}

// actions is GetWorkflowActions of workflow id.
func (f *fleet) actions(ctx context.Context, c workflow.WorkflowServiceClient, id string) ([]*workflow.WorkflowAction, error) {
	var actions []*workflow.WorkflowAction
	err := f.call(ctx, func(ctx context.Context) error {
		list, err := c.GetWorkflowActions(ctx, &workflow.WorkflowActionsRequest{WorkflowId: id})
		actions = list.GetActionList()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("actions of %s: %w", id, err)
	}
	if len(actions) != fleetActions {
		return nil, fmt.Errorf("workflow %s has %d actions, want %d", id, len(actions), fleetActions)
	}
	return actions, nil
}

// report sends one report of action a until it is answered.
func (f *fleet) report(ctx context.Context, c workflow.WorkflowServiceClient, id string, a *workflow.WorkflowAction, st workflow.State) error {
	r := &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: a.GetTaskName(), ActionName: a.GetName(),
		ActionStatus: st, Seconds: 1, Message: "fleet"}
	sent := time.Now()
	err := f.call(ctx, func(ctx context.Context) error {
		_, err := c.ReportActionStatus(ctx, r)
		return err
	})
	f.mu.Lock()
	f.latencies = append(f.latencies, reportLatency{answered: time.Now(), took: time.Since(sent)})
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("report %s %s of %s: %w", a.GetName(), engineName(st), id, err)
	}
	return nil
}

func engineName(st workflow.State) string { return strings.TrimPrefix(st.String(), "STATE_") }

// call runs fn until it succeeds, retrying Unavailable, DeadlineExceeded
// (a call lost on a dead link) and ResourceExhausted (the database's disk
// full) as herd-worker does (backoff from 50 ms doubling to 1 s, with
// jitter); any other failure is a refusal a worker would not retry, kept
// for the test to report.
func (f *fleet) call(ctx context.Context, fn func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := fn(cctx)
		cancel()
		code := status.Code(err)
		f.mu.Lock()
		f.seen[code]++
		retry := code == codes.Unavailable || code == codes.ResourceExhausted || code == codes.DeadlineExceeded
		if err != nil && !retry {
			f.refused = append(f.refused, err)
		}
		f.mu.Unlock()
		if !retry {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait/2 + rand.N(wait)):
		}
		wait = min(2*wait, time.Second)
	}
}

// waitApplied waits until at least n reports were answered OK and returns
// when that was seen (polled every millisecond), or fails the test.
func (f *fleet) waitApplied(t *testing.T, n int64, limit time.Duration) time.Time {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(time.Millisecond) {
		if f.applied.Load() >= n {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d reports answered after %v\n%s", f.applied.Load(), n, limit, tail(f.s.Stderr.String(), 40))
		}
	}
}

// tail is the last n lines of a log.
func tail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// actionEvents counts the events of one action, by state.
type actionEvents struct {
	running, success, timeout, total int
	messages                         []string // of the TIMEOUT events
}

// eventCounts reads the events of the fleet's task from the database:
// for each workflow, per action index.
func eventCounts(t *testing.T, s *servertest.Server) map[string][]actionEvents {
	t.Helper()
	db, err := sql.Open("postgres", s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT workflow_id, action_index, state, message FROM workflow_event WHERE task_name = 'provision'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	counts := map[string][]actionEvents{}
	for rows.Next() {
		var (
			id, message string
			index       int
			state       int32
		)
		if err := rows.Scan(&id, &index, &state, &message); err != nil {
			t.Fatal(err)
		}
		if index < 0 || index >= fleetActions {
			t.Fatalf("workflow %s: an event of action %d", id, index)
		}
		if counts[id] == nil {
			counts[id] = make([]actionEvents, fleetActions)
		}
		a := &counts[id][index]
		a.total++
		switch workflow.State(state) {
		case workflow.State_STATE_RUNNING:
			a.running++
		case workflow.State_STATE_SUCCESS:
			a.success++
		case workflow.State_STATE_TIMEOUT:
			a.timeout++
			a.messages = append(a.messages, message)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// workflowStates reads every workflow's state, by id.
func workflowStates(t *testing.T, s *servertest.Server) map[string]workflow.State {
	t.Helper()
	db, err := sql.Open("postgres", s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, state FROM workflow`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	states := map[string]workflow.State{}
	for rows.Next() {
		var id string
		var st int32
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		states[id] = workflow.State(st)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return states
}

// fleetOutcome is what the database holds once the fleet is done.
type fleetOutcome struct {
	workflows, succeeded int
	events               int // action events of the fleet's task
	wrong                []string
}

// outcome reads every workflow's state and counts its action events: each
// action must have exactly one RUNNING and one SUCCESS event (a report
// lost would leave none, one applied twice two).
func (f *fleet) outcome(t *testing.T) fleetOutcome {
	t.Helper()
	var o fleetOutcome
	states, counts := workflowStates(t, f.s), eventCounts(t, f.s)
	for id, st := range states {
		o.workflows++
		if st == workflow.State_STATE_SUCCESS {
			o.succeeded++
		}
		for index, a := range counts[id] {
			o.events += a.total
			if a.running != 1 || a.success != 1 || a.total != 2 {
				o.wrong = append(o.wrong, fmt.Sprintf("workflow %s action %d: %d RUNNING, %d SUCCESS, %d events", id, index, a.running, a.success, a.total))
			}
		}
		if counts[id] == nil {
			o.wrong = append(o.wrong, fmt.Sprintf("workflow %s: no action events", id))
		}
	}
	return o
}

// fault is one thing done to a real part mid-run. do returns when the
// part was taken away and when it was back.
type fault struct {
	name string
	// at is the share of the reports applied before the fault starts;
	// zero spaces the faults evenly through the run.
	at float64
	do func() (away, back time.Time)
}

// faultFigures is what one fault cost the fleet.
type faultFigures struct {
	name     string
	down     time.Duration // from taking the part away to its return
	recovery time.Duration // from taking it away to the first report answered OK after its return
}

// runWithFaults runs the fleet and applies each fault in turn once an
// equal share of the reports has been answered (1/3 and 2/3 for two).
// It fails the test on anything a worker would not retry or a workflow
// that did not end SUCCESS with exactly one RUNNING and one SUCCESS event
// per action, and returns the figures and the count of losses.
func runWithFaults(t *testing.T, f *fleet, faults []fault) (figures []faultFigures, o fleetOutcome, lost int, took time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	wait := f.run(ctx)
	var workErr error
	workDone := make(chan struct{})
	go func() { workErr = wait(); close(workDone) }()
	for k, fl := range faults {
		due := f.reports() * int64(k+1) / int64(len(faults)+1)
		if fl.at > 0 {
			due = int64(float64(f.reports()) * fl.at)
		}
		f.waitApplied(t, due, 5*time.Minute)
		away, back := fl.do()
		before := f.applied.Load()
		if before >= f.reports() {
			t.Fatalf("%s: the fleet had finished before the fault took effect; slow it down", fl.name)
		}
		ok := f.waitApplied(t, before+1, 5*time.Minute)
		figures = append(figures, faultFigures{name: fl.name, down: back.Sub(away), recovery: ok.Sub(away)})
	}
	<-workDone
	took = time.Since(start)
	if workErr != nil {
		lost++
		t.Errorf("a worker gave up: %v", workErr)
	}
	f.mu.Lock()
	for _, err := range f.refused {
		lost++
		t.Errorf("a worker call was refused with a code workers do not retry: %v", err)
	}
	f.mu.Unlock()
	o = f.outcome(t)
	if o.workflows != len(f.workers) || o.succeeded != len(f.workers) {
		lost += len(f.workers) - o.succeeded
		t.Errorf("%d workflows, %d SUCCESS; want %d SUCCESS", o.workflows, o.succeeded, len(f.workers))
	}
	lost += len(o.wrong)
	for _, w := range o.wrong[:min(len(o.wrong), 20)] {
		t.Errorf("lost or doubled report: %s", w)
	}
	if strings.Contains(f.s.Stderr.String(), "panic") {
		t.Errorf("herd-server log shows a panic:\n%s", tail(f.s.Stderr.String(), 40))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("the fleet did not finish within 10 minutes")
	}
	return figures, o, lost, took
}

// seenCodes is the tally of answers the workers got, as text.
func (f *fleet) seenCodes() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return codeCounts(f.seen)
}

// allAnsweredAfter is how long after since every worker that had reports
// left then had one answered: the fault's end for the slowest worker.
func (f *fleet) allAnsweredAfter(since time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var slowest time.Duration
	for _, times := range f.answeredAt {
		for _, at := range times {
			if at.After(since) {
				slowest = max(slowest, at.Sub(since))
				break
			}
		}
	}
	return slowest
}
