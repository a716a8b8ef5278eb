package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"syscall"
	"time"
)

// --fault kill-server: herd-server replica 1, the one every client lists
// first, is SIGKILLed while an action runs (image2disk once its image
// streams, by default) and left dead, as a crashed host would be. The
// clients hold the list of all replicas (--server-replicas), so the OSIE's
// worker, herd-boots, herd-metadata, herd-bmc and the sandbox's own herd
// CLI go on through the others. The run passes only when the workflow
// ends SUCCESS with one RUNNING and one SUCCESS event per action (a
// report the dead replica recorded, then resent to another, is not
// recorded twice), each kill before its action ended and a report
// answered by a replica left after it.

// serverKill is one replica killed and what came after it.
type serverKill struct {
	// Replica is its number (1: the first in the clients' list).
	Replica int
	Action  string
	// Progress is image2disk's progress line the kill followed.
	Progress string
	// At is when the replica was seen dead after SIGKILL; Report when a
	// replica left first answered an action report after it.
	At, Report time.Time
}

// killServers kills replica 1 during the first action of --fault-during,
// replica 2 during the second, and so on (checkReplicas leaves one at
// least), each once that action runs, and follows each to the first
// report a replica left answers.
func (sb *sandbox) killServers(ctx context.Context, p *progress, wfID string, env []string) error {
	reps := serverReplicas(sb.opts.serverReplicas)
	urls := metricsURLs(reps)
	streamed := 0
	for i, action := range sb.opts.faultDuring {
		what := fmt.Sprintf("killing herd-server replica %d", i+1)
		progressLine, err := sb.waitFaultPoint(ctx, p, wfID, env, action, what, streamed, func() bool { return true })
		if err != nil {
			return err
		}
		// Its counts stay in the end's metrics check: its page as it was.
		page, err := fetchMetrics(ctx, nsClient(), urls[i])
		if err != nil {
			return fmt.Errorf("%s: its metrics before: %w", what, err)
		}
		left := []expectation{{"herd-server", urls[i+1:], reportsAccepted, 0, ""}}
		before, err := scrape(ctx, left, nil)
		if err != nil {
			return fmt.Errorf("%s: the others' metrics before: %w", what, err)
		}
		srv := sb.servers[i]
		sb.frozenMu.Lock()
		if sb.frozen == nil {
			sb.frozen = map[string]string{}
		}
		sb.frozen[urls[i]] = page
		sb.frozenMu.Unlock()
		// Our own child, by its pid: nsenter exec'd herd-server.
		if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return fmt.Errorf("%s (pid %d): %w", what, srv.cmd.Process.Pid, err)
		}
		select {
		case <-srv.done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s (pid %d): still running 10 s after SIGKILL", what, srv.cmd.Process.Pid)
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
		p.kills = append(p.kills, serverKill{Replica: i + 1, Action: action, Progress: progressLine, At: time.Now()})
		p.mu.Unlock()
		p.mark(fmt.Sprintf("fault: herd-server replica %d (%s) SIGKILLed during %s", i+1, reps[i].grpc, action))
		sb.vmLine(p, "fault: herd-server replica %d (%s, pid %d) SIGKILLed during %s%s; left dead", i+1, reps[i].grpc, srv.cmd.Process.Pid, action, afterProgress(progressLine))
		since, err := reportAfter(ctx, p, left, before[0], func() (time.Time, *time.Time) { return p.kills[i].At, &p.kills[i].Report })
		if err != nil {
			return err
		}
		p.mark(fmt.Sprintf("fault: first report answered after the kill of replica %d", i+1))
		sb.vmLine(p, "fault: a replica left answered the worker's report %s after replica %d's kill", fmtDur(since), i+1)
		if n, _, err := sb.progressLines(ctx, env, wfID); err == nil {
			streamed = n
		}
	}
	return nil
}

// frozenPages is a copy of the killed replicas' last /metrics pages.
func (sb *sandbox) frozenPages() map[string]string {
	sb.frozenMu.Lock()
	defer sb.frozenMu.Unlock()
	return maps.Clone(sb.frozen)
}

// killVerdict is what a machine's run must show after the kills planned
// (machine 1's: the kills are timed by its actions; the others' only
// keep the rule of one RUNNING and one SUCCESS event per action). Each
// problem is one line; none means the rule held.
func killVerdict(evs []event, kills []serverKill, planned []string, timer bool) []string {
	var problems []string
	if timer && len(kills) != len(planned) {
		problems = append(problems, fmt.Sprintf("%d herd-server replica(s) killed of the %d planned (during %s)", len(kills), len(planned), strings.Join(planned, ", ")))
	}
	problems = append(problems, onceEach(evs)...)
	success := successTimes(evs)
	for _, k := range kills {
		if k.Report.IsZero() {
			problems = append(problems, fmt.Sprintf("replica %d's kill: no action report answered by the others after it", k.Replica))
		}
		if at, ok := success[k.Action]; ok && !at.After(k.At) {
			problems = append(problems, fmt.Sprintf("replica %d's kill came after %s's SUCCESS (%s): it interrupted nothing", k.Replica, k.Action, at.Format(time.RFC3339Nano)))
		}
	}
	return problems
}

// killSummary prints the kills and the verdict on them; ok is whether the
// rule held.
func (sb *sandbox) killSummary(w io.Writer, p *progress) bool {
	reps := serverReplicas(sb.opts.serverReplicas)
	timer := p.m.N == 1
	fmt.Fprintf(w, "fault      %s: herd-server replica(s) SIGKILLed during machine 1's %s, of %s\n", sb.opts.fault, strings.Join(sb.opts.faultDuring, ", "), authority(reps))
	for i := range p.kills {
		k := p.kills[i]
		fmt.Fprintf(w, "  kill %d   replica %d (%s) at %s during %s", i+1, k.Replica, reps[k.Replica-1].grpc, fmtDur(k.At.Sub(p.powerOn)), k.Action)
		if k.Progress != "" {
			fmt.Fprintf(w, " (after %q)", k.Progress)
		}
		report := "never"
		if !k.Report.IsZero() {
			report = "+" + fmtDur(k.Report.Sub(k.At))
		}
		fmt.Fprintf(w, ": first report answered after it %s, by the replicas left\n", report)
	}
	problems := killVerdict(p.events, p.kills, sb.opts.faultDuring, timer)
	if p.faultErr != nil && !errors.Is(p.faultErr, context.Canceled) {
		problems = append(problems, p.faultErr.Error())
	}
	if len(problems) == 0 {
		fmt.Fprintf(w, "  rule     held: the workflow went on through the replicas left, one RUNNING and one SUCCESS event per action, none SUCCESS twice\n")
		return true
	}
	for _, l := range problems {
		fmt.Fprintf(w, "  FAULT    %s\n", l)
	}
	return false
}
