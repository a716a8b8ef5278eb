package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// --fault osie-reboot: the machine's VM is reset (QEMU's system_reset,
// over its QMP socket) while an action runs, as a power glitch or an
// operator's reset would. allow_pxe stays on while the workflow runs, so
// the VM netboots the OSIE again and its new herd-worker applies the rule
// of docs/reliability.md ("A worker killed mid-action"): the action the
// server shows RUNNING is run again from its start, its RUNNING report a
// resend the server accepts without recording it again. The run passes
// only when the workflow ends SUCCESS with one RUNNING and one SUCCESS
// event per action and every reset landed before its action ended.

const (
	faultOSIEReboot = "osie-reboot"
	// faultKillServer: herd-server replica 1 SIGKILLed mid-action
	// (killserver.go).
	faultKillServer = "kill-server"
	// faultActionImage is reset once its image is streaming: its progress
	// lines, every faultProgressEvery, show it.
	faultActionImage    = "image2disk"
	faultProgressEvery  = 500 * time.Millisecond
	faultPollEvery      = 200 * time.Millisecond
	faultProgressPrefix = "downloaded "
)

// faultActions are the template's actions a reset may interrupt, in
// their order; reboot is not one (it ends the OSIE itself).
var faultActions = []string{faultActionImage, "writefile"}

// parseFault checks --fault and --fault-during: the actions to reset the
// VM during, in the template's order (a name repeated is its rerun).
func parseFault(fault, during string) ([]string, error) {
	switch fault {
	case "":
		return nil, nil
	case faultOSIEReboot, faultKillServer:
	default:
		return nil, fmt.Errorf("--fault %q: want %s or %s (or none)", fault, faultOSIEReboot, faultKillServer)
	}
	var out []string
	last := 0
	for _, a := range strings.Split(during, ",") {
		a = strings.TrimSpace(a)
		i := slices.Index(faultActions, a)
		if i < 0 {
			return nil, fmt.Errorf("--fault-during %q: %q is not an action a fault may interrupt (want %s)", during, a, strings.Join(faultActions, ", "))
		}
		if i < last {
			return nil, fmt.Errorf("--fault-during %q: %s comes before %s in the template; name them in its order", during, a, faultActions[last])
		}
		last = i
		out = append(out, a)
	}
	return out, nil
}

// imageProgressEvery is image2disk's progress interval for the template:
// frequent when a reset waits for its stream, the action's own otherwise.
func imageProgressEvery(o options) time.Duration {
	if slices.Contains(o.faultDuring, faultActionImage) {
		return faultProgressEvery
	}
	return 0
}

// vmReset is one reset of a machine's VM and what came after it.
type vmReset struct {
	Action string
	// At is when QEMU answered system_reset.
	At time.Time
	// Progress is image2disk's progress line the reset followed.
	Progress string
	// Kernel and Worker: the OSIE's kernel and its herd-worker starting
	// again (console); Report: herd-server's first action report answered
	// OK after the reset (its ReportActionStatus count moved).
	Kernel, Worker, Report time.Time
}

// osieBoot tells, for the n-th kernel on the console, whether it is an
// OSIE's (the first, and one more after each reset) and which reset it
// follows (0: none). Call with p.mu held.
func (p *progress) osieBoot(n int) (osie bool, reset int) {
	return n >= 1 && n <= 1+len(p.resets), n - 1
}

// reportsAccepted counts herd-server's action reports answered OK.
var reportsAccepted = series{"herd_grpc_calls_total", map[string]string{"method": "*ReportActionStatus", "code": "OK"}}

// runFault resets p's VM during each action of --fault-during in turn,
// and follows it back to its worker's first report. It ends when all are
// done, the workflow ended first, or ctx ends; p.faultErr says why not.
func (sb *sandbox) runFault(ctx context.Context, p *progress, wfID string, env []string) {
	var err error
	switch sb.opts.fault {
	case faultKillServer:
		if p.m.N != 1 {
			return // one kill for all: machine 1's actions time it
		}
		err = sb.killServers(ctx, p, wfID, env)
	default:
		err = sb.resets(ctx, p, wfID, env)
	}
	if err != nil && ctx.Err() == nil {
		sb.vmLine(p, "fault: %v", err)
	}
	p.mu.Lock()
	p.faultErr = err
	p.mu.Unlock()
}

func (sb *sandbox) resets(ctx context.Context, p *progress, wfID string, env []string) error {
	qmp := sb.vmFiles(p.m).qmp
	streamed := 0 // image2disk's progress lines stored before its current run
	for i, action := range sb.opts.faultDuring {
		ready := func() bool { return i == 0 || !p.resets[i-1].Report.IsZero() }
		progressLine, err := sb.waitFaultPoint(ctx, p, wfID, env, action, fmt.Sprintf("reset %d", i+1), streamed, ready)
		if err != nil {
			return err
		}
		reports := []expectation{{"herd-server", metricsURLs(serverReplicas(sb.opts.serverReplicas)), reportsAccepted, 0, ""}}
		before, err := scrape(ctx, reports, nil)
		if err != nil {
			return err
		}
		if err := qmpExecute(ctx, qmp, "system_reset"); err != nil {
			return fmt.Errorf("reset %d: %w", i+1, err)
		}
		p.mu.Lock()
		p.resets = append(p.resets, vmReset{Action: action, At: time.Now(), Progress: progressLine})
		p.mu.Unlock()
		p.mark(fmt.Sprintf("fault: VM reset %d (QMP system_reset) during %s", i+1, action))
		sb.vmLine(p, "fault: VM reset %d of %d (QMP system_reset) during %s%s", i+1, len(sb.opts.faultDuring), action, afterProgress(progressLine))
		since, err := reportAfter(ctx, p, reports, before[0], func() (time.Time, *time.Time) { return p.resets[i].At, &p.resets[i].Report })
		if err != nil {
			return err
		}
		p.mark(fmt.Sprintf("fault: first report after reset %d", i+1))
		sb.vmLine(p, "fault: the OSIE's herd-worker reported again %s after reset %d", fmtDur(since), i+1)
		if n, _, err := sb.progressLines(ctx, env, wfID); err == nil {
			streamed = n
		}
	}
	return nil
}

// afterProgress says which progress line a fault followed, if any.
func afterProgress(line string) string {
	if line == "" {
		return ""
	}
	return fmt.Sprintf(", after its progress line %q", line)
}

// reportAfter waits for a report answered since before (waitReport),
// records its time where record (called with p.mu held) points, beside
// the fault's own time, and returns how long after the fault it came.
func reportAfter(ctx context.Context, p *progress, reports []expectation, before float64, record func() (time.Time, *time.Time)) (time.Duration, error) {
	if err := waitReport(ctx, reports, before); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	at, report := record()
	*report = time.Now()
	return report.Sub(at), nil
}

// waitReport waits until the sum of reports (one expectation) passes
// before: an action report answered since.
func waitReport(ctx context.Context, reports []expectation, before float64) error {
	for {
		now, err := scrape(ctx, reports, nil)
		if err == nil && now[0] > before {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(faultPollEvery):
		}
	}
}

// waitFaultPoint waits until a fault may strike during action: it runs
// and, for image2disk, its image streams (more progress lines than the
// streamed of its earlier runs); ready (called with p.mu held) holds the
// fault back until the one before it is over. It returns the progress
// line seen, and an error when the action or the workflow ended first.
func (sb *sandbox) waitFaultPoint(ctx context.Context, p *progress, wfID string, env []string, action, what string, streamed int, ready func() bool) (string, error) {
	tick := time.NewTicker(faultPollEvery)
	defer tick.Stop()
	for {
		p.mu.Lock()
		state, evs := p.wfState, append([]event(nil), p.events...)
		isReady := ready()
		p.mu.Unlock()
		if state != "" {
			return "", fmt.Errorf("the workflow ended %s before %s (during %s)", state, what, action)
		}
		if ended, ok := actionEnded(evs, action); ok {
			return "", fmt.Errorf("%s ended (%s) before %s could interrupt it", action, ended, what)
		}
		if isReady && actionRunning(evs, action) {
			if action != faultActionImage {
				return "", nil
			}
			n, last, err := sb.progressLines(ctx, env, wfID)
			if err == nil && n > streamed {
				return last, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// progressLines counts image2disk's progress lines herd-server stored for
// the workflow that show bytes downloaded, and returns the last one.
func (sb *sandbox) progressLines(ctx context.Context, env []string, wfID string) (int, string, error) {
	out, err := sb.herdRun(ctx, env, "", "workflow", "logs", wfID, "--action", faultActionImage)
	if err != nil {
		return 0, "", err
	}
	n, last := 0, ""
	for _, l := range strings.Split(out, "\n") {
		if text, ok := streamingLine(l); ok {
			n++
			last = text
		}
	}
	return n, last, nil
}

// streamingLine finds image2disk's progress line in a line of `herd
// workflow logs` ("15:04:05 install/image2disk stdout: downloaded 4194304
// of 12447646 bytes (33%), ...") and tells whether it shows bytes come:
// its first lines, before the body's first bytes, say "downloaded 0".
func streamingLine(l string) (string, bool) {
	_, text, ok := strings.Cut(l, ": "+faultProgressPrefix)
	if !ok {
		return "", false
	}
	num, _, _ := strings.Cut(text, " ")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return "", false
	}
	return faultProgressPrefix + text, true
}

// actionRunning: the workflow's events show action RUNNING.
func actionRunning(evs []event, action string) bool {
	for _, e := range workflowActions(evs) {
		if e.Action == action && e.State == "RUNNING" {
			return true
		}
	}
	return false
}

// actionEnded: the workflow's events show action in a final state.
func actionEnded(evs []event, action string) (string, bool) {
	for _, e := range workflowActions(evs) {
		if e.Action == action && finalState(e.State) {
			return e.State, true
		}
	}
	return "", false
}

// workflowActions are the events of the template's actions: no netboot,
// BMC or herd-boots' boot notes.
func workflowActions(evs []event) []event {
	var out []event
	for _, e := range actionEvents(evs) {
		if !bootNote(e) {
			out = append(out, e)
		}
	}
	return out
}

// faultVerdict is what the run must show after the resets planned: each
// done, each followed by the OSIE's kernel and a report, each before its
// action ended; one RUNNING and one SUCCESS event per action. Each
// problem is one line; none means the rule held.
func faultVerdict(evs []event, resets []vmReset, planned []string) []string {
	var problems []string
	if len(resets) != len(planned) {
		problems = append(problems, fmt.Sprintf("the VM was reset %d time(s) of the %d planned (%s)", len(resets), len(planned), strings.Join(planned, ", ")))
	}
	problems = append(problems, onceEach(evs)...)
	success := successTimes(evs)
	for i, r := range resets {
		if r.Kernel.IsZero() {
			problems = append(problems, fmt.Sprintf("reset %d: the OSIE's kernel did not start again", i+1))
		}
		if r.Report.IsZero() {
			problems = append(problems, fmt.Sprintf("reset %d: no action report from the OSIE after it", i+1))
		}
		if at, ok := success[r.Action]; ok && !at.After(r.At) {
			problems = append(problems, fmt.Sprintf("reset %d came after %s's SUCCESS (%s): it interrupted nothing", i+1, r.Action, at.Format(time.RFC3339Nano)))
		}
	}
	return problems
}

// onceEach checks the rule every fault keeps: one RUNNING and one
// SUCCESS event per action of the template, nothing else. Each problem
// is one line.
func onceEach(evs []event) []string {
	type count struct{ running, success, other int }
	counts := map[string]*count{}
	var order []string
	for _, e := range workflowActions(evs) {
		key := e.Task + "/" + e.Action
		c := counts[key]
		if c == nil {
			c = &count{}
			counts[key] = c
			order = append(order, key)
		}
		switch e.State {
		case "RUNNING":
			c.running++
		case "SUCCESS":
			c.success++
		default:
			c.other++
		}
	}
	if len(order) == 0 {
		return []string{"no action events"}
	}
	var problems []string
	for _, key := range order {
		c := counts[key]
		if c.success > 1 {
			problems = append(problems, fmt.Sprintf("%s reported SUCCESS %d times", key, c.success))
		}
		if c.running != 1 || c.success != 1 || c.other != 0 {
			problems = append(problems, fmt.Sprintf("%s: %d RUNNING, %d SUCCESS and %d other events, want one RUNNING and one SUCCESS", key, c.running, c.success, c.other))
		}
	}
	return problems
}

// successTimes are when each action reported SUCCESS (its last one).
func successTimes(evs []event) map[string]time.Time {
	out := map[string]time.Time{}
	for _, e := range workflowActions(evs) {
		if e.State == "SUCCESS" {
			out[e.Action] = e.CreatedAt
		}
	}
	return out
}

// faultSummary prints the resets and the verdict on them; ok is whether
// the rule held.
func (sb *sandbox) faultSummary(w io.Writer, p *progress) bool {
	if sb.opts.fault == faultKillServer {
		return sb.killSummary(w, p)
	}
	fmt.Fprintf(w, "fault      %s: the VM reset (QMP system_reset) during %s\n", sb.opts.fault, strings.Join(sb.opts.faultDuring, ", "))
	for i, r := range p.resets {
		after := func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return "+" + fmtDur(t.Sub(r.At))
		}
		fmt.Fprintf(w, "  reset %d  at %s during %s", i+1, fmtDur(r.At.Sub(p.powerOn)), r.Action)
		if r.Progress != "" {
			fmt.Fprintf(w, " (after %q)", r.Progress)
		}
		fmt.Fprintf(w, ": OSIE kernel %s, herd-worker %s, first report %s\n", after(r.Kernel), after(r.Worker), after(r.Report))
	}
	problems := faultVerdict(p.events, p.resets, sb.opts.faultDuring)
	if p.faultErr != nil && !errors.Is(p.faultErr, context.Canceled) {
		problems = append(problems, p.faultErr.Error())
	}
	if len(problems) == 0 {
		fmt.Fprintf(w, "  rule     held: each interrupted action run again, one RUNNING and one SUCCESS event per action, none SUCCESS twice\n")
		return true
	}
	for _, l := range problems {
		fmt.Fprintf(w, "  FAULT    %s\n", l)
	}
	return false
}
