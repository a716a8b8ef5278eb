//go:build bench

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/boots/internal/netnstest"
)

// perfRun is one perfdhcp run at a fixed target rate.
type perfRun struct {
	server  string
	rate    int           // target DORA exchanges/s (-r)
	period  time.Duration // -p
	elapsed time.Duration // wall clock of the run, exit wait included
	// Counters from perfdhcp's final report.
	discovers, offers, requests, acks int64
	doAvg, raAvg                      time.Duration // average DISCOVER→OFFER, REQUEST→ACK delays
	// Datagrams the kernel dropped over the run because a socket's
	// receive queue was full, in the server's namespace and in perfdhcp's:
	// which side fell behind.
	srvLost, cliLost int64
	threads          string        // perfdhcp -g
	procs            int           // perfdhcp processes sharing the rate
	cpu              time.Duration // perfdhcp's own user + system CPU time
}

// exchanges is the completed DORA exchanges per second of the test period.
func (r perfRun) exchanges() float64 { return float64(r.acks) / r.period.Seconds() }

// drops is the share of started exchanges (DISCOVERs sent) that did not
// end with an ACK: lost DISCOVERs, OFFERs, REQUESTs or ACKs alike.
func (r perfRun) drops() float64 {
	if r.discovers == 0 {
		return 1
	}
	return 1 - float64(r.acks)/float64(r.discovers)
}

// perfCPU is perfdhcp's own CPU time per completed exchange (0: no ACK).
func (r perfRun) perfCPU() time.Duration {
	if r.acks == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.acks)
}

// short says perfdhcp sent under 95 % of the target rate's DISCOVERs: it
// holds back while a slow server leaves many exchanges open, and it shares
// the CPUs with the server. Such a run did not show the target rate.
func (r perfRun) short() bool {
	return float64(r.discovers) < 0.95*float64(r.rate)*r.period.Seconds()
}

// pass: the run sustained its target rate within the drop bound.
func (r perfRun) pass() bool { return !r.short() && r.drops() <= *maxDrops/100 }

var (
	perfSection = regexp.MustCompile(`\*\*\*Statistics for: (DISCOVER-OFFER|REQUEST-ACK)\*\*\*`)
	perfSent    = regexp.MustCompile(`(?m)^sent packets: ([0-9]+)\s*$`)
	perfRecv    = regexp.MustCompile(`(?m)^received packets: ([0-9]+)\s*$`)
	perfAvg     = regexp.MustCompile(`(?m)^avg delay: ([0-9.]+) ms\s*$`)
)

// parsePerfdhcp reads the counters of perfdhcp's final report (Kea 2.2's
// format: one "Statistics for" block per exchange type).
func parsePerfdhcp(out string) (perfRun, error) {
	var r perfRun
	idx := perfSection.FindAllStringSubmatchIndex(out, -1)
	seen := 0
	for k, m := range idx {
		end := len(out)
		if k+1 < len(idx) {
			end = idx[k+1][0]
		}
		block := out[m[1]:end]
		num := func(re *regexp.Regexp) int64 {
			if mm := re.FindStringSubmatch(block); mm != nil {
				v, _ := strconv.ParseInt(mm[1], 10, 64)
				return v
			}
			return -1
		}
		var avg time.Duration
		if mm := perfAvg.FindStringSubmatch(block); mm != nil {
			v, _ := strconv.ParseFloat(mm[1], 64)
			avg = time.Duration(v * float64(time.Millisecond))
		}
		sent, recv := num(perfSent), num(perfRecv)
		if sent < 0 || recv < 0 {
			return r, fmt.Errorf("no sent/received packets in the %s block", out[m[2]:m[3]])
		}
		switch out[m[2]:m[3]] {
		case "DISCOVER-OFFER":
			r.discovers, r.offers, r.doAvg = sent, recv, avg
			seen |= 1
		case "REQUEST-ACK":
			r.requests, r.acks, r.raAvg = sent, recv, avg
			seen |= 2
		}
	}
	if seen&1 == 0 {
		return r, errors.New("no DISCOVER-OFFER statistics in perfdhcp's report")
	}
	// No REQUEST-ACK block: no OFFER came back, so no REQUEST was sent.
	return r, nil
}

// perfdhcp runs perfdhcp in the client namespace: relayed DORA exchanges
// to server. One perfdhcp is one thread sending and receiving, and it can
// fall behind before the server does, so a run may be split over several
// processes (see generators), each a relay of its own (its local address
// in giaddr, source port 67) with an equal share of the rate and its own
// share of the MACs (two processes never use one MAC at once, as two
// clients would not).
type perfdhcp struct {
	bin, server string
	threads     string        // -g: single or multi
	relays      []string      // one process each
	macFiles    []string      // process k's MACs, one a line
	macs        []int         // how many MACs macFiles[k] holds
	ns          *netnstest.NS // perfdhcp's
	srv         *netnstest.NS // the server's
}

// parseSetups reads -perfdhcp-procs: a comma-separated list of process
// counts, each 1 to 8, no repeats.
func parseSetups(v string) ([]int, error) {
	var setups []int
	seen := map[int]bool{}
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 8 {
			return nil, fmt.Errorf("%q: want process counts from 1 to 8, comma-separated", f)
		}
		if seen[n] {
			return nil, fmt.Errorf("%d twice", n)
		}
		seen[n] = true
		setups = append(setups, n)
	}
	return setups, nil
}

// generators makes a load set-up for each process count: process k of
// every set-up relays from relayIP(k) (added to hc0 in the client
// namespace cli) and draws from records k, k+n, k+2n, … (written to MAC
// files here).
func generators(t *testing.T, bin string, cli, srv *netnstest.NS, setups []int) []*perfdhcp {
	t.Helper()
	dir := t.TempDir()
	for _, ip := range relayIPs(slices.Max(setups)) {
		cli.IP("addr", "add", ip+"/16", "dev", "hc0")
	}
	gens := make([]*perfdhcp, len(setups))
	for i, n := range setups {
		g := &perfdhcp{bin: bin, server: serverIP, threads: *perfThreads, ns: cli, srv: srv}
		for k := range n {
			var macs strings.Builder
			count := 0
			for r := k; r < *nRecords; r += n {
				macs.WriteString(mac(r) + "\n")
				count++
			}
			file := filepath.Join(dir, fmt.Sprintf("macs%d-%d", n, k))
			if err := os.WriteFile(file, []byte(macs.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			g.relays, g.macFiles, g.macs = append(g.relays, relayIP(k)), append(g.macFiles, file), append(g.macs, count)
		}
		gens[i] = g
	}
	return gens
}

// procsName says how many perfdhcp processes made a run.
func procsName(n int) string {
	if n == 1 {
		return "1 process"
	}
	return fmt.Sprintf("%d processes", n)
}

// setupNames lists the load set-ups for the text.
func setupNames(gens []*perfdhcp) string {
	names := make([]string, len(gens))
	for i, g := range gens {
		names[i] = "perfdhcp as " + procsName(len(g.relays))
	}
	return strings.Join(names, ", then ")
}

// shares splits a target rate over n processes.
func shares(rate, n int) []int {
	s := make([]int, n)
	for k := range s {
		s[k] = rate / n
		if k < rate%n {
			s[k]++
		}
	}
	return s
}

// args is process k's command line in a run at its share rate.
func (p *perfdhcp) args(k, rate int) []string {
	return []string{"-4", "-g", p.threads, "-l", p.relays[k], "-r", strconv.Itoa(rate), "-p", strconv.Itoa(int(duration.Seconds())),
		"-W", "1000000", "-R", strconv.Itoa(p.macs[k]), "-M", p.macFiles[k], "-D", strconv.Itoa(abortAfter(rate)), p.server}
}

// abortAfter is perfdhcp's -D for a process running at rate: -abort-drops
// percent of its exchanges, as a count. (-D with a percentage cuts runs
// short at their start here: perfdhcp 2.2 counts the exchanges in flight.)
func abortAfter(rate int) int {
	return max(10, int(*abortDrops/100*float64(rate)*duration.Seconds()))
}

// merge sums the processes' runs into one: counters and CPU add up, the
// average delays are weighted by the answers they average over.
func merge(rs []perfRun) perfRun {
	var m perfRun
	var do, ra float64
	for _, r := range rs {
		m.discovers += r.discovers
		m.offers += r.offers
		m.requests += r.requests
		m.acks += r.acks
		m.cpu += r.cpu
		do += float64(r.doAvg) * float64(r.offers)
		ra += float64(r.raAvg) * float64(r.acks)
	}
	if m.offers > 0 {
		m.doAvg = time.Duration(do / float64(m.offers))
	}
	if m.acks > 0 {
		m.raAvg = time.Duration(ra / float64(m.acks))
	}
	return m
}

// run runs perfdhcp once at rate (all processes together) against server
// name.
func (p *perfdhcp) run(t *testing.T, name string, rate int) perfRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	srv0, cli0 := rcvbufErrors(t, p.srv), rcvbufErrors(t, p.ns)
	start := time.Now()
	cmds := make([]*exec.Cmd, len(p.relays))
	outs := make([]bytes.Buffer, len(p.relays))
	for k, share := range shares(rate, len(p.relays)) {
		cmds[k] = p.ns.Command(ctx, p.bin, p.args(k, share)...)
		cmds[k].Stdout, cmds[k].Stderr = &outs[k], &outs[k]
		if err := cmds[k].Start(); err != nil {
			t.Fatalf("perfdhcp against %s: %v", name, err)
		}
	}
	runs := make([]perfRun, len(cmds))
	for k, cmd := range cmds {
		err := cmd.Wait()
		out := outs[k].String()
		// 3: "one or more exchanges were not successfully completed", the
		// normal end of a run with drops (or one ended by -D).
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
			t.Fatalf("perfdhcp %d against %s at %d/s: %v\n%s", k, name, rate, err, out)
		}
		r, perr := parsePerfdhcp(out)
		if perr != nil {
			t.Fatalf("perfdhcp %d against %s at %d/s: %v\n%s", k, name, rate, perr, out)
		}
		// ip netns exec execs perfdhcp in place: this is perfdhcp's rusage.
		r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		runs[k] = r
	}
	elapsed := time.Since(start)
	srv1, cli1 := rcvbufErrors(t, p.srv), rcvbufErrors(t, p.ns)
	r := merge(runs)
	r.server, r.rate, r.period, r.elapsed, r.threads, r.procs = name, rate, *duration, elapsed, p.threads, len(cmds)
	r.srvLost, r.cliLost = srv1-srv0, cli1-cli0
	t.Logf("%s at %d/s (%d× perfdhcp -g %s): %d DISCOVER, %d OFFER, %d REQUEST, %d ACK in %s → %.0f exchanges/s, drops %.2f%%, DO %.2f ms, RA %.2f ms; "+
		"socket overflows: server %d, perfdhcp %d; perfdhcp CPU %.1f µs/exchange",
		name, rate, len(cmds), p.threads, r.discovers, r.offers, r.requests, r.acks, elapsed.Round(time.Millisecond), r.exchanges(), 100*r.drops(),
		ms(r.doAvg), ms(r.raAvg), r.srvLost, r.cliLost, us(r.perfCPU()))
	return r
}

// search steps the target rate up from -start-rate, doubling while runs
// meet the drop bound, then bisects between the last rate that met it and
// the first that did not. best is the passing run at the highest rate.
func (p *perfdhcp) search(t *testing.T, name string) (best perfRun, runs []perfRun) {
	t.Helper()
	do := func(rate int) perfRun {
		var r perfRun
		// A failing rate is run again once (the machine is shared and
		// noisy): it fails only when both runs fail.
		for try := 0; try < 2; try++ {
			r = p.run(t, name, rate)
			runs = append(runs, r)
			time.Sleep(time.Second) // let queues drain between runs
			if r.pass() {
				break
			}
		}
		return r
	}
	lo, hi := 0, 0 // highest passing, lowest failing target rate (0: none yet)
	note := func(r perfRun) {
		if r.pass() {
			if r.rate > lo {
				lo, best = r.rate, r
			}
		} else if hi == 0 || r.rate < hi {
			hi = r.rate
		}
	}
	for rate := *startRate; ; rate *= 2 {
		r := do(rate)
		note(r)
		if !r.pass() || rate*2 > *maxRate {
			break
		}
	}
	for rate := *startRate / 2; lo == 0 && rate >= 10; rate /= 2 {
		note(do(rate))
	}
	if lo == 0 {
		t.Fatalf("%s: no rate down to 10/s met ≤ %g%% drops", name, *maxDrops)
	}
	for i := 0; i < *bisect && hi > 0 && hi-lo > max(lo/20, 10); i++ {
		step := 10
		if lo >= 2000 {
			step = 50
		}
		mid := (lo + (hi-lo)/2) / step * step
		if mid <= lo || mid >= hi {
			break
		}
		note(do(mid))
	}
	return best, runs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func TestParsePerfdhcp(t *testing.T) {
	out := `Running: perfdhcp -4 -l hc0 -r 200 -p 5 -R 10000 -M macs 10.20.255.254
Scenario: basic.
Multi-thread mode enabled.
***Rate statistics***
Rate: 166.48 4-way exchanges/second, expected rate: 200

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 999
received packets: 995
drops: 4
drops ratio: 0.4004 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.479 ms
avg delay: 12.101 ms
max delay: 109.971 ms
std deviation: 16.019 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 995
received packets: 992
drops: 3
drops ratio: 0.302 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.614 ms
avg delay: 13.342 ms
max delay: 112.620 ms
std deviation: 14.576 ms
collected packets: 0
`
	r, err := parsePerfdhcp(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.discovers != 999 || r.offers != 995 || r.requests != 995 || r.acks != 992 || r.doAvg != 12101*time.Microsecond || r.raAvg != 13342*time.Microsecond {
		t.Errorf("parsePerfdhcp = %+v", r)
	}
	if _, err := parsePerfdhcp("Error running perfdhcp: no such interface\n"); err == nil {
		t.Error("parsePerfdhcp accepted a failed run")
	}
	if !strings.Contains(out, "DISCOVER-OFFER") {
		t.Fatal("sample")
	}
}

func TestShares(t *testing.T) {
	for _, tc := range []struct {
		rate, n int
		want    []int
	}{
		{8000, 2, []int{4000, 4000}},
		{125, 2, []int{63, 62}},
		{10, 3, []int{4, 3, 3}},
		{7, 1, []int{7}},
	} {
		got := shares(tc.rate, tc.n)
		sum := 0
		for _, v := range got {
			sum += v
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || sum != tc.rate {
			t.Errorf("shares(%d, %d) = %v, want %v", tc.rate, tc.n, got, tc.want)
		}
	}
}

func TestMerge(t *testing.T) {
	m := merge([]perfRun{
		{discovers: 100, offers: 100, requests: 100, acks: 90, doAvg: time.Millisecond, raAvg: 2 * time.Millisecond, cpu: time.Second},
		{discovers: 100, offers: 50, requests: 50, acks: 10, doAvg: 4 * time.Millisecond, raAvg: 12 * time.Millisecond, cpu: 3 * time.Second},
	})
	want := perfRun{discovers: 200, offers: 150, requests: 150, acks: 100, doAvg: 2 * time.Millisecond, raAvg: 3 * time.Millisecond, cpu: 4 * time.Second}
	if m != want {
		t.Errorf("merge = %+v, want %+v", m, want)
	}
	if m := merge([]perfRun{{discovers: 5}}); m.doAvg != 0 || m.raAvg != 0 || m.drops() != 1 {
		t.Errorf("merge of a run without answers = %+v", m)
	}
}

func TestParseSetups(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  bool
	}{
		{"1,2", []int{1, 2}, false},
		{"2", []int{2}, false},
		{" 1, 4 ", []int{1, 4}, false},
		{"0", nil, true},
		{"9", nil, true},
		{"1,1", nil, true},
		{"", nil, true},
		{"two", nil, true},
	} {
		got, err := parseSetups(tc.in)
		if (err != nil) != tc.err || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseSetups(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
