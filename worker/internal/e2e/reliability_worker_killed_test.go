package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/proto/workflow"
)

// TestReliabilityWorkerProcessKilled (issue 16): the real herd-worker is
// SIGKILLed while the middle action of three runs (its container goes on
// in dockerd) and started again. By the rule of docs/reliability.md ("A
// worker killed mid-action"), the new worker finds the action RUNNING and
// runs it again from its start (the old container removed first); its
// RUNNING report repeats the one recorded, so the events stay one RUNNING
// and one SUCCESS per action, never SUCCESS twice. Both runs' output is
// stored: the first run's lines up to the kill, then the rerun's whole.
func TestReliabilityWorkerProcessKilled(t *testing.T) {
	const tickEvery = 200 * time.Millisecond
	ticks := reliability.Size(20, 50)
	kills := reliability.Size(1, 3)
	e := setup(t)
	id := e.workflow(t, "killed", tickingTemplate("killed", ticks, tickEvery))
	bin := buildWorker(t)
	w := startWorkerIn(t, e, bin, "", e.s.GRPC)
	var backAfter []time.Duration
	for k := 1; k <= kills; k++ {
		// Killed once this run of the ticking action has printed 3 lines.
		waitFor(t, 2*time.Minute, w, "the ticking action's output to reach herd-server", func() bool {
			return count(e.logs(t, id), "ticking stdout tick 3") >= k
		})
		w.kill()
		before := stored(t, e, id)
		restart := time.Now()
		w = startWorkerIn(t, e, bin, "", e.s.GRPC)
		waitFor(t, 2*time.Minute, w, "a report of the new worker", func() bool { return stored(t, e, id) > before })
		backAfter = append(backAfter, time.Since(restart))
	}
	waitFor(t, 5*time.Minute, w, "the workflow to end", func() bool { return e.state(t, id) != workflow.State_STATE_RUNNING })

	lost := 0
	trail, msgs := e.events(t, id)
	if !equal(trail, tickingTrail) {
		lost++
		t.Errorf("events %q\nwant   %q\nmessages %q", trail, tickingTrail, msgs)
	}
	if st := e.state(t, id); st != workflow.State_STATE_SUCCESS {
		lost++
		t.Errorf("workflow %v", st)
	}
	// Every line at least once; the ticking action ran kills+1 times from
	// its start, so "tick 1" was printed that often; before and after once.
	lines := e.logs(t, id)
	seen := map[string]int{}
	for _, l := range lines {
		seen[l]++
	}
	for _, l := range tickingLines(ticks) {
		if seen[l] == 0 {
			lost++
			t.Errorf("output line %q missing", l)
		}
	}
	for l, want := range map[string]int{"ticking stdout tick 1": kills + 1, "before stdout before the fault": 1, "after stdout after the fault": 1} {
		if seen[l] != want {
			t.Errorf("%q stored %d times, want %d", l, seen[l], want)
		}
	}
	e.noContainers(t)
	if t.Failed() {
		t.Logf("the last herd-worker's log:\n%s", w.log.String())
	}
	reliability.Record(t, reliability.Row{
		Case: "herd-worker SIGKILLed mid-action and started again",
		Done: fmt.Sprintf("the real herd-worker (a private dockerd) SIGKILLed %d time(s) while the second of three actions ran (a line every %v), each time started again at once", kills, tickEvery),
		Volume: fmt.Sprintf("1 workflow × 3 actions; the killed action run %d times, from its start each; %d action events, %d output lines stored (%d of them of runs cut by a kill)",
			kills+1, len(trail), len(lines), len(lines)-len(tickingLines(ticks))),
		Lost:     lost,
		Recovery: slicesMax(backAfter),
		Notes:    fmt.Sprintf("recovery: from the new worker's start to its first report stored (%v); the old run's container removed before the rerun (-race build)", backAfter),
	})
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// count is how many of lines are line.
func count(lines []string, line string) int {
	n := 0
	for _, l := range lines {
		if l == line {
			n++
		}
	}
	return n
}
