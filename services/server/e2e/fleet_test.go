package e2e

// A fleet of simulated workers for the fault tests: goroutines that speak
// the worker RPCs over real gRPC, each with its own machine's credential,
// and retry what a worker retries.

import (
	"context"
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

// fleetTemplate has one task of fleetActions actions, with timeouts far
// beyond any test, so only the faults can disturb the workflows.
func fleetTemplate() string {
	var b strings.Builder
	b.WriteString("version: \"0.1\"\nname: fleet\nglobal_timeout: 3600\ntasks:\n  - name: provision\n    worker: \"{{.device_1}}\"\n    actions:\n")
	for i := range fleetActions {
		fmt.Fprintf(&b, "      - name: step-%d\n        image: registry.local/noop:v1\n        timeout: 600\n", i)
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

	mu      sync.Mutex
	seen    map[codes.Code]int // every answer the workers got, by code
	refused []error            // calls that failed with a code a worker does not retry
}

// newFleet pushes n machines and their workflows and connects one worker
// per machine with the machine's own credential.
func newFleet(t *testing.T, s *servertest.Server, n int, period time.Duration) *fleet {
	t.Helper()
	admin := s.Dial(adminToken)
	servertest.PushHardware(t, hardware.NewHardwareServiceClient(admin), 0, n, fleetMachine)
	ctx := context.Background()
	tpl, err := template.NewTemplateServiceClient(admin).CreateTemplate(ctx, &template.WorkflowTemplate{Name: "fleet", Data: fleetTemplate()})
	if err != nil {
		t.Fatal(err)
	}
	wc := workflow.NewWorkflowServiceClient(admin)
	var g errgroup.Group
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			_, err := wc.CreateWorkflow(ctx, &workflow.CreateRequest{Template: tpl.GetId(), Hardware: `{"device_1":"` + fleetMAC(i) + `"}`})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	f := &fleet{s: s, period: period, seen: map[codes.Code]int{}}
	tokens, ca := s.WorkerTokens(), s.CA()
	for i := range n {
		f.workers = append(f.workers, workflow.NewWorkflowServiceClient(s.DialCA(ca, tokens[fleetHW(i)])))
	}
	return f
}

// reports is how many reports the whole fleet sends: RUNNING and SUCCESS
// of each action.
func (f *fleet) reports() int64 { return int64(len(f.workers) * fleetActions * 2) }

// run starts every worker and returns a function that waits for them all.
func (f *fleet) run(ctx context.Context) (wait func() error) {
	var g errgroup.Group
	for i := range f.workers {
		g.Go(func() error { return f.work(ctx, i) })
	}
	return g.Wait
}

// work is one worker's life: find its workflow, read its actions, report
// RUNNING then SUCCESS of each, one report per period (the first after a
// random part of it, so the fleet does not move in lockstep).
func (f *fleet) work(ctx context.Context, i int) error {
	c, hw := f.workers[i], fleetHW(i)
	var id string
	err := f.call(ctx, func(ctx context.Context) error {
		stream, err := c.GetWorkflowContexts(ctx, &workflow.WorkflowContextRequest{WorkerId: hw})
		if err != nil {
			return err
		}
		var ids []string
		for {
			wc, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			ids = append(ids, wc.GetWorkflowId())
		}
		if len(ids) != 1 {
			return fmt.Errorf("worker %s has the next move in %d workflows, want 1", hw, len(ids))
		}
		id = ids[0]
		return nil
	})
	if err != nil {
		return fmt.Errorf("worker %s: contexts: %w", hw, err)
	}
	var actions []*workflow.WorkflowAction
	err = f.call(ctx, func(ctx context.Context) error {
		list, err := c.GetWorkflowActions(ctx, &workflow.WorkflowActionsRequest{WorkflowId: id})
		actions = list.GetActionList()
		return err
	})
	if err != nil {
		return fmt.Errorf("worker %s: actions of %s: %w", hw, id, err)
	}
	next := time.Now().Add(rand.N(f.period))
	for _, a := range actions {
		for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
			time.Sleep(time.Until(next))
			next = time.Now().Add(f.period)
			report := &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: a.GetTaskName(), ActionName: a.GetName(),
				ActionStatus: st, Seconds: 1, Message: "fleet"}
			send := func(ctx context.Context) error {
				_, err := c.ReportActionStatus(ctx, report)
				return err
			}
			if err := f.call(ctx, send); err != nil {
				return fmt.Errorf("worker %s: report %s %s of %s: %w", hw, a.GetName(), engineName(st), id, err)
			}
			f.applied.Add(1)
			// Every resendEvery-th report's answer is taken as lost, and
			// the report sent again, as a worker does when the reply does
			// not reach it; the server must accept it and change nothing.
			if f.sent.Add(1)%resendEvery == 0 {
				if err := f.call(ctx, send); err != nil {
					return fmt.Errorf("worker %s: resend of report %s %s of %s: %w", hw, a.GetName(), engineName(st), id, err)
				}
				f.resent.Add(1)
			}
		}
	}
	return nil
}

func engineName(st workflow.State) string { return strings.TrimPrefix(st.String(), "STATE_") }

// call runs fn until it succeeds, retrying Unavailable as herd-worker does
// (backoff from 50 ms doubling to 1 s, with jitter); any other failure is
// a refusal a worker would not retry, kept for the test to report.
func (f *fleet) call(ctx context.Context, fn func(context.Context) error) error {
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := fn(cctx)
		cancel()
		code := status.Code(err)
		f.mu.Lock()
		f.seen[code]++
		if err != nil && code != codes.Unavailable {
			f.refused = append(f.refused, err)
		}
		f.mu.Unlock()
		if code != codes.Unavailable {
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
	db, err := sql.Open("postgres", f.s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var o fleetOutcome
	if err := db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE state = $1) FROM workflow`,
		int32(workflow.State_STATE_SUCCESS)).Scan(&o.workflows, &o.succeeded); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`
		SELECT w.id, a.i,
			count(e.id) FILTER (WHERE e.state = $1), count(e.id) FILTER (WHERE e.state = $2), count(e.id)
		FROM workflow w CROSS JOIN generate_series(0, $3 - 1) AS a(i)
		LEFT JOIN workflow_event e ON e.workflow_id = w.id AND e.action_index = a.i AND e.task_name = 'provision'
		GROUP BY w.id, a.i ORDER BY w.id, a.i`,
		int32(workflow.State_STATE_RUNNING), int32(workflow.State_STATE_SUCCESS), fleetActions)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id                    string
			index, run, ok, total int
		)
		if err := rows.Scan(&id, &index, &run, &ok, &total); err != nil {
			t.Fatal(err)
		}
		o.events += total
		if run != 1 || ok != 1 || total != 2 {
			o.wrong = append(o.wrong, fmt.Sprintf("workflow %s action %d: %d RUNNING, %d SUCCESS, %d events", id, index, run, ok, total))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return o
}

// fault is one thing done to a real part mid-run. do returns when the
// part was taken away and when it was back.
type fault struct {
	name string
	do   func() (away, back time.Time)
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
		f.waitApplied(t, f.reports()*int64(k+1)/int64(len(faults)+1), 5*time.Minute)
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
