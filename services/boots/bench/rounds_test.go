//go:build bench

package bench

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rounds = flag.Int("rounds", roundsDefault(), "how many times the whole comparison runs (default: $BENCH_DHCP_ROUNDS, else 3): round 1 searches each server's rate in full, "+
	"later rounds start from round 1's best rate and set-up and step by 10 % of it; every round starts each server afresh and has its own CPU run")

// roundsDefault is $BENCH_DHCP_ROUNDS, 3 when unset.
func roundsDefault() int {
	v := os.Getenv("BENCH_DHCP_ROUNDS")
	if v == "" {
		return 3
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 10 {
		fmt.Fprintf(os.Stderr, "BENCH_DHCP_ROUNDS=%q: want a whole number of rounds from 1 to 10\n", v)
		os.Exit(2)
	}
	return n
}

// A later round's search steps by nearStep of round 1's best rate, and
// at most nearMaxUp steps above it (each later round is a check of round
// 1's figure, not a new search: the whole run stays under the Makefile's
// timeout).
const (
	nearStep  = 0.1
	nearMaxUp = 1
)

// nearRates is the next target rate of a later round's search, which
// starts at from (round 1's best) and steps by step: up while runs pass
// (at most nearMaxUp steps above from), down while they fail (to at least
// 10/s). passed are the verdicts so far, in order. ok is false when the
// search is over.
func nearRates(from, step int, passed []bool) (next int, ok bool) {
	if len(passed) == 0 {
		return from, true
	}
	if passed[0] {
		// Going up: stop at the first failure or after maxUp steps.
		ups := len(passed) - 1
		if !passed[len(passed)-1] || ups >= nearMaxUp {
			return 0, false
		}
		return from + (ups+1)*step, true
	}
	// Going down: stop at the first pass, or when 10/s failed.
	if passed[len(passed)-1] {
		return 0, false
	}
	prev := downRate(from, step, len(passed)-1)
	if prev <= 10 {
		return 0, false
	}
	return downRate(from, step, len(passed)), true
}

// downRate is the n-th rate of a later round's search going down: from
// less n steps while that stays at or above a step (and 10/s), then
// halving.
func downRate(from, step, n int) int {
	if r := from - n*step; n == 0 || r >= max(10, step) {
		return r
	}
	return max(10, downRate(from, step, n-1)/2)
}

// nearStepOf is a later round's step for round 1's best rate: nearStep of
// it, rounded to the search's grid (50/s from 2000/s, else 10/s), at
// least one grid unit.
func nearStepOf(best int) int {
	grid := 10
	if best >= 2000 {
		grid = 50
	}
	return max(grid, int(math.Round(nearStep*float64(best)/float64(grid)))*grid)
}

// searchNear is a later round's rate search for one server: only the
// load set-up of its round-1 best, from round 1's best rate, by
// nearStepOf steps (see nearRates); a failing rate is run once more and
// fails only when both fail, as in the full search. best is the passing
// run at the highest rate (zero when none passed).
func (p *perfdhcp) searchNear(t *testing.T, name string, from int) (best perfRun, runs []perfRun) {
	t.Helper()
	step := nearStepOf(from)
	var passed []bool
	for {
		rate, ok := nearRates(from, step, passed)
		if !ok {
			break
		}
		var r perfRun
		for try := 0; try < 2; try++ {
			r = p.run(t, name, rate)
			runs = append(runs, r)
			time.Sleep(time.Second)
			if r.pass() {
				break
			}
		}
		passed = append(passed, r.pass())
		if r.pass() && r.rate > best.rate {
			best = r
		}
	}
	return best, runs
}

// ratioLine is the line for one ratio over the rounds: each round's
// figure, the worst of them, and whether the target held in every round.
// A round without a figure (NaN: a server answered nothing) counts as a
// miss.
func ratioLine(what string, ratios []float64, target float64) string {
	worst := math.Inf(1)
	var each, missed []string
	for i, r := range ratios {
		if math.IsNaN(r) {
			each = append(each, fmt.Sprintf("round %d —", i+1))
			missed = append(missed, strconv.Itoa(i+1))
			worst = math.NaN()
			continue
		}
		each = append(each, fmt.Sprintf("round %d %.2f×", i+1, r))
		if !math.IsNaN(worst) {
			worst = min(worst, r)
		}
		if r < target {
			missed = append(missed, strconv.Itoa(i+1))
		}
	}
	verdict := fmt.Sprintf("the target held in every round (%d of %d)", len(ratios), len(ratios))
	if len(missed) > 0 {
		verdict = fmt.Sprintf("the target **did not hold** in round %s (held in %d of %d)", strings.Join(missed, ", "), len(ratios)-len(missed), len(ratios))
	}
	w := "—"
	if !math.IsNaN(worst) && !math.IsInf(worst, 0) {
		w = fmt.Sprintf("%.2f×", worst)
	}
	return fmt.Sprintf("%s: %s; **worst of %d: %s** (target ≥ %g×): %s.", what, strings.Join(each, ", "), len(ratios), w, target, verdict)
}

func TestNearRates(t *testing.T) {
	for _, tc := range []struct {
		name       string
		from, step int
		passed     []bool
		want       []int // the rates tried, in order, given passed
	}{
		{"passes one step up", 9000, 900, []bool{true, true}, []int{9000, 9900}},
		{"fails above", 9000, 900, []bool{true, false}, []int{9000, 9900}},
		{"fails at start, passes one down", 9000, 900, []bool{false, true}, []int{9000, 8100}},
		{"fails three times", 1000, 100, []bool{false, false, false, true}, []int{1000, 900, 800, 700}},
		{"below the steps it halves", 1000, 300, []bool{false, false, false, false, true}, []int{1000, 700, 400, 200, 100}},
		{"ends when 10/s fails", 20, 10, []bool{false, false}, []int{20, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for i := 0; ; i++ {
				rate, ok := nearRates(tc.from, tc.step, tc.passed[:i])
				if !ok {
					break
				}
				got = append(got, rate)
				if i == len(tc.passed) {
					t.Fatalf("search goes on after the given verdicts: %v then %d", got[:i], rate)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("rates %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNearStepOf(t *testing.T) {
	for best, want := range map[int]int{9000: 900, 19000: 1900, 18950: 1900, 2000: 200, 125: 10, 60: 10, 1990: 200} {
		if got := nearStepOf(best); got != want {
			t.Errorf("nearStepOf(%d) = %d, want %d", best, got, want)
		}
	}
}

func TestRatioLine(t *testing.T) {
	for _, tc := range []struct {
		ratios []float64
		want   string
	}{
		{[]float64{2.11, 1.6, 1.9}, "x: round 1 2.11×, round 2 1.60×, round 3 1.90×; **worst of 3: 1.60×** (target ≥ 1.5×): the target held in every round (3 of 3)."},
		{[]float64{2.11, 1.28, 1.49}, "x: round 1 2.11×, round 2 1.28×, round 3 1.49×; **worst of 3: 1.28×** (target ≥ 1.5×): the target **did not hold** in round 2, 3 (held in 1 of 3)."},
		{[]float64{1.5}, "x: round 1 1.50×; **worst of 1: 1.50×** (target ≥ 1.5×): the target held in every round (1 of 1)."},
		{[]float64{2, math.NaN()}, "x: round 1 2.00×, round 2 —; **worst of 2: —** (target ≥ 1.5×): the target **did not hold** in round 2 (held in 1 of 2)."},
	} {
		if got := ratioLine("x", tc.ratios, 1.5); got != tc.want {
			t.Errorf("ratioLine(%v) =\n%s\nwant\n%s", tc.ratios, got, tc.want)
		}
	}
}

// roundsText says in the generated section what each round does.
func roundsText(n int) string {
	if n == 1 {
		return "The comparison runs once (one round: -rounds 1)."
	}
	return fmt.Sprintf("The whole comparison runs %d times in this one run (rounds, one after the other), each round starting every server afresh (a new process, an empty lease database) and giving it its own CPU run (below) before its rate search. "+
		"Round 1 searches each server's rate in full, as above. "+
		"Rounds 2 to %d keep the pass rule and the rerun of a failing rate but not the whole search: each server's search runs only with the load set-up of its round-1 best, "+
		"starts at round 1's best rate and steps by %.0f %% of it (rounded to 50/s, or 10/s below 2000/s): up while runs pass (at most %d step), down while they fail (until one passes); "+
		"the perfdhcp run in the other thread mode is in round 1 only. Each round's ratios compare servers of that round; the worst over the rounds is the figure that counts.",
		n, n, 100*nearStep, nearMaxUp)
}

// ratio is a/b, NaN when either is missing (0).
func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return math.NaN()
	}
	return a / b
}

// times prints a ratio ("—" for NaN).
func times(r float64) string {
	if math.IsNaN(r) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", r)
}

// cpuRuns are the CPU runs of one round's results, in order.
func cpuRuns(results []result) []cpuRun {
	cpus := make([]cpuRun, len(results))
	for i, r := range results {
		cpus[i] = r.cpu
	}
	return cpus
}

// keaCPURatio is the lower CPU per exchange of the Kea settings over
// herd-boots' (runs[0]); NaN when one is missing.
func keaCPURatio(runs []cpuRun) float64 {
	var kea time.Duration
	for _, c := range runs {
		if strings.HasPrefix(c.run.server, "kea-dhcp4") && c.perExchange() > 0 && (kea == 0 || c.perExchange() < kea) {
			kea = c.perExchange()
		}
	}
	return ratio(float64(kea), float64(runs[0].perExchange()))
}

// resultOf is server name's result in results.
func resultOf(results []result, name string) result {
	for _, r := range results {
		if r.name == name {
			return r
		}
	}
	panic("bench: no result of " + name)
}

func TestKeaCPURatio(t *testing.T) {
	mk := func(server string, acks int64, cpu time.Duration) cpuRun {
		return cpuRun{run: perfRun{server: server, acks: acks}, user: cpu}
	}
	runs := []cpuRun{mk("herd-boots", 1000, 50*time.Millisecond), mk("kea-dhcp4 (multi-threaded)", 1000, 200*time.Millisecond),
		mk("kea-dhcp4 (single-threaded)", 1000, 150*time.Millisecond), mk("dnsmasq", 10, 100*time.Millisecond)}
	if got := keaCPURatio(runs); got != 3 {
		t.Errorf("keaCPURatio = %v, want 3 (the single-threaded setting's 150 µs / 50 µs)", got)
	}
	runs[0].run.acks = 0
	if got := keaCPURatio(runs); !math.IsNaN(got) {
		t.Errorf("keaCPURatio without herd-boots ACKs = %v, want NaN", got)
	}
}

// envOr is $name, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
