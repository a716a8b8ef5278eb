//go:build bench

// Package bench measures herd-boots' DHCP: `make bench-dhcp` runs it and
// writes its section of docs/benchmarks.md. perfdhcp (Kea's load
// generator) in one network namespace sends relayed DORA exchanges from
// the MACs of 10,000 hardware records to herd-boots in another (its
// inventory fed by a real herd-server on PostgreSQL), then, in the same
// run and on the same veth, to kea-dhcp4 and dnsmasq holding the same
// 10,000 reservations. For each it finds the highest rate with at most
// 1 % of exchanges lost, then reports herd-boots' memory with 10,000 and
// 100,000 records. It is a benchmark, not a test: it asserts nothing
// about speed, it reports.
package bench

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/netnstest"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

var (
	out           = flag.String("out", "", "markdown file to write the figures into (its bench-dhcp section)")
	nRecords      = flag.Int("records", 10000, "hardware records (reservations) while perfdhcp runs")
	nLarge        = flag.Int("records-large", 100000, "hardware records for herd-boots' second memory figure (0: skip it)")
	duration      = flag.Duration("duration", 10*time.Second, "test period of one perfdhcp run (-p)")
	startRate     = flag.Int("start-rate", 250, "first target rate (DORA exchanges/s); doubled while runs meet the drop bound")
	maxRate       = flag.Int("max-rate", 128000, "highest target rate tried")
	bisect        = flag.Int("bisect", 4, "runs bisecting between the last passing and the first failing rate")
	maxDrops      = flag.Float64("max-drops", 1, "drop bound in percent: the share of started exchanges without an ACK")
	abortDrops    = flag.Float64("abort-drops", 5, "perfdhcp -D: percent of drops at which a run is cut short (it fails the bound anyway)")
	bootsLogLevel = flag.String("boots-log-level", "warn", "herd-boots --log-level during the runs (info logs every reply)")
	keaST         = flag.Bool("kea-single-threaded", true, "also measure kea-dhcp4 with multi-threading off")
	cpuRate       = flag.Int("cpu-rate", 2000, "fixed target rate (DORA exchanges/s) of the CPU-per-exchange run of herd-boots and Kea: one they all sustain")
	perfSetups    = flag.String("perfdhcp-procs", "1,2", "the load set-ups every server's rate search runs with, in turn: how many perfdhcp processes share a run's rate (each 1–8), "+
		"each a relay of its own with its own share of the MACs; a server's figure is its best over them")
	perfThreads      = flag.String("perfdhcp-threads", "single", "perfdhcp -g of the runs: single or multi (herd-boots also gets one run at its best rate in the other mode, for comparison)")
	compareBoots     = flag.String("compare-boots", os.Getenv("BENCH_DHCP_COMPARE_BOOTS"), "another herd-boots binary given a CPU run of its own in each round, beside this build (default $BENCH_DHCP_COMPARE_BOOTS)")
	compareBootsName = flag.String("compare-boots-name", envOr("BENCH_DHCP_COMPARE_BOOTS_NAME", "earlier build"), "what -compare-boots is, for the table (default $BENCH_DHCP_COMPARE_BOOTS_NAME)")
	compareBootsWhat = flag.String("compare-boots-what", envOr("BENCH_DHCP_COMPARE_BOOTS_WHAT", "another herd-boots binary"), "how -compare-boots differs from this commit, for the text (default $BENCH_DHCP_COMPARE_BOOTS_WHAT)")
	cpuRateSlow      = flag.Int("cpu-rate-dnsmasq", 50, "fixed target rate of dnsmasq's CPU-per-exchange run: one it sustains")
)

// The lab: herd-server on the host's loopback, the DHCP server under test
// on hb0 (serverIP) in one namespace, perfdhcp on hc0 (relayIP(k) for
// process k, which it puts in giaddr) in another. Both ends sit in the reservations' /16, so
// every server picks the reservations' subnet from giaddr and answers the
// relay on the link.
const (
	subnet     = "10.20.0.0/16"
	subnetBase = "10.20.0.0"
	netmask    = "255.255.0.0"
	serverIP   = "10.20.255.254"
	relayBase  = 253 // perfdhcp process k relays from 10.20.255.(253-k)
	dnsIP      = "10.20.255.53"
	ntpIP      = "10.20.255.123"
	domain     = "lab.example"
	bootsHTTP  = serverIP + ":8080"
	leaseTime  = 24 * time.Hour
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, false)) }

// relayIP is perfdhcp process k's address, the giaddr of its requests.
func relayIP(k int) string { return fmt.Sprintf("10.20.255.%d", relayBase-k) }

// relayIPs are the addresses of processes 0 to n-1.
func relayIPs(n int) []string {
	ips := make([]string, n)
	for k := range ips {
		ips[k] = relayIP(k)
	}
	return ips
}

func hwID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }

// mac is record i's MAC (locally administered, deterministic).
func mac(i int) string { return fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff) }

// ip is record i's reserved address: 65,000 hosts to a /16, from
// 10.20.0.1 on (the measured records: 10.20/16 holds the lab's own
// addresses above them), then 10.21.0.1 on.
func ip(i int) string {
	host := i%hostsPerNet + 1
	return fmt.Sprintf("10.%d.%d.%d", 20+i/hostsPerNet, host>>8, host&0xff)
}

// gateway is the router of record i's /16 (serverIP for the measured ones).
func gateway(i int) string { return fmt.Sprintf("10.%d.255.254", 20+i/hostsPerNet) }

const hostsPerNet = 65000

func hostname(i int) string { return fmt.Sprintf("node-%d", i) }

// record is a machine with one interface reserved as the DHCP servers'
// configurations reserve it (herd-boots splits the domain off the
// hostname).
func record(i int) *hardware.Hardware {
	return &hardware.Hardware{
		Id: hwID(i),
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac(i), Hostname: hostname(i) + "." + domain, Arch: "x86_64", LeaseTime: int64(leaseTime.Seconds()),
				NameServers: []string{dnsIP}, TimeServers: []string{ntpIP},
				Ip: &hardware.Hardware_DHCP_IP{Address: ip(i), Netmask: netmask, Gateway: gateway(i)}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}},
	}
}

// push sends records [from, to) from 32 concurrent clients.
func push(t *testing.T, c hardware.HardwareServiceClient, from, to int) time.Duration {
	return servertest.PushHardware(t, c, from, to, record)
}

// result is one server's measurement.
type result struct {
	name, version string
	best          perfRun
	runs          []perfRun
	ready         time.Duration // start → first DORA answered
	rss           float64       // VmRSS after its runs
	cpu           cpuRun        // the fixed-rate run, before the search
}

func TestBenchDHCP(t *testing.T) {
	realtest.Root(t)
	need(t, "ip")
	perfBin, keaBin, dnsmasqBin := need(t, "perfdhcp"), need(t, "kea-dhcp4"), need(t, "dnsmasq")
	if *nRecords > hostsPerNet || (*nLarge != 0 && *nLarge < *nRecords) {
		t.Fatalf("-records %d, -records-large %d: want records ≤ %d (one /16) and records-large 0 or ≥ records", *nRecords, *nLarge, hostsPerNet)
	}
	// info, not debug: 100,000 pushes logged at debug fill memory.
	s := servertest.Start(t, "--log-level", "info")
	hc := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	bootsBin := buildBoots(t)
	setups, err := parseSetups(*perfSetups)
	if err != nil {
		t.Fatalf("-perfdhcp-procs: %v", err)
	}
	if *perfThreads != "single" && *perfThreads != "multi" {
		t.Fatalf("-perfdhcp-threads %q: want single or multi", *perfThreads)
	}
	pushSmall := push(t, hc, 0, *nRecords)

	srv, cli := netnstest.New(t, "hbbs"), netnstest.New(t, "hbbc")
	netnstest.Veth(t, srv, "hb0", serverIP+"/16", cli, "hc0", nil)
	// herd-server listens on the host's loopback: forward its ports into
	// the server namespace's loopback.
	srv.Forward(s.GRPC, s.GRPC)
	srv.Forward(strings.TrimPrefix(s.HTTP, "http://"), strings.TrimPrefix(s.HTTP, "http://"))
	gens := generators(t, perfBin, cli, srv, setups)
	pd := gens[0] // readiness probes and CPU runs
	// searchAll searches with every load set-up in turn; best is the best
	// over them.
	searchAll := func(name string) (best perfRun, runs []perfRun) {
		for i, g := range gens {
			b, rs := g.search(t, name)
			runs = append(runs, rs...)
			if i == 0 || b.exchanges() > best.exchanges() {
				best = b
			}
		}
		return best, runs
	}

	if *profileDir != "" {
		profileBoots(t, bootsBin, s, srv, pd)
		return
	}

	// Every round starts each server afresh (an empty lease database) and
	// runs its CPU run first, so that does not depend on how many search
	// runs came before it. Round 1 searches each rate in full; later
	// rounds near round 1's best (searchNear).
	var rssSmall float64
	var syncSmall time.Duration
	gomaxprocs := 0
	keaCmd, dnsmasqVer := "", ""
	var dArgs []string
	var dDir string
	all := make([][]result, *rounds)
	compared := make([]cpuRun, *rounds) // -compare-boots' CPU run of each round
	for rd := range *rounds {
		search := func(name string) (perfRun, []perfRun) {
			if rd == 0 {
				return searchAll(name)
			}
			first := resultOf(all[0], name).best
			for _, g := range gens {
				if len(g.relays) == first.procs {
					return g.searchNear(t, name, first.rate)
				}
			}
			t.Fatalf("%s: no load set-up of %d processes", name, first.procs)
			return perfRun{}, nil
		}
		t.Logf("round %d of %d", rd+1, *rounds)
		var results []result
		if *compareBoots != "" {
			// The other build, fresh, right before this one's CPU run (they
			// share the DHCP and HTTP ports): the same machine's state for
			// both figures.
			o := startBoots(t, *compareBoots, s, srv)
			o.name = "herd-boots (" + *compareBootsName + ")"
			waitAnswers(t, o.proc, pd)
			compared[rd] = measureCPU(t, o.proc, pd, *cpuRate)
			o.stop(t)
		}
		// herd-boots.
		b := startBoots(t, bootsBin, s, srv)
		if n := b.metric(t, "herd_boots_inventory_machines"); int(n) != *nRecords {
			t.Fatalf("herd-boots synced %v machines, want %d", n, *nRecords)
		}
		if rd == 0 {
			rssSmall, syncSmall = b.rss(t), b.synced
			gomaxprocs = int(b.metric(t, "go_sched_gomaxprocs_threads"))
		}
		ready := waitAnswers(t, b.proc, pd)
		cpuB := measureCPU(t, b.proc, pd, *cpuRate)
		best, runs := search("herd-boots")
		if rd == 0 {
			// The same rate and set-up with perfdhcp in its other thread
			// mode: what the mode does to the load generator (its CPU, its
			// socket's drops).
			for _, g := range gens {
				if len(g.relays) == best.procs {
					other := *g
					other.threads = map[string]string{"single": "multi", "multi": "single"}[g.threads]
					runs = append(runs, other.run(t, "herd-boots", best.rate))
					time.Sleep(time.Second)
				}
			}
		}
		results = append(results, result{"herd-boots", "this commit (go build)", best, runs, b.synced + ready, b.rss(t), cpuB})
		b.stop(t)

		// Kea, multi-threaded (its fastest setting with a memfile) and, as
		// Kea 2.2 ships it, single-threaded.
		for _, mt := range []bool{true, false} {
			if !mt && !*keaST {
				continue
			}
			k, file := startKea(t, keaBin, srv, mt)
			keaCmd = "kea-dhcp4 -c " + filepath.Base(file)
			ready := waitAnswers(t, k, pd)
			cpuK := measureCPU(t, k, pd, *cpuRate)
			best, runs := search(k.name)
			results = append(results, result{k.name, "Kea " + version(keaBin, "-v"), best, runs, ready, k.rss(t), cpuK})
			k.stop(t)
		}

		// dnsmasq.
		var d *proc
		d, dArgs, dDir = startDnsmasq(t, dnsmasqBin, srv)
		dnsmasqVer = dnsmasqVersion(dnsmasqBin)
		readyD := waitAnswers(t, d, pd)
		cpuD := measureCPU(t, d, pd, *cpuRateSlow)
		bestD, runsD := search("dnsmasq")
		results = append(results, result{"dnsmasq", dnsmasqVer, bestD, runsD, readyD, d.rss(t), cpuD})
		d.stop(t)
		all[rd] = results
	}

	// herd-boots' memory with more records: a fresh process syncs them all.
	var pushLarge time.Duration
	var large *bootsProc
	var rssLarge float64
	if *nLarge > *nRecords {
		pushLarge = push(t, hc, *nRecords, *nLarge)
		large = startBoots(t, bootsBin, s, srv)
		if n := large.metric(t, "herd_boots_inventory_machines"); int(n) != *nLarge {
			t.Fatalf("herd-boots synced %v machines, want %d", n, *nLarge)
		}
		rssLarge = large.rss(t)
		large.stop(t)
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "## bench-dhcp\n\n`make bench-dhcp`, %s, %d CPUs (herd-boots GOMAXPROCS %d), Go %s, %s. "+
		"perfdhcp in one network namespace sends relayed DHCPv4 DORA exchanges over a veth to the server under test in another namespace (%s on hb0), "+
		"each exchange from a MAC drawn at random from the %d reserved ones. One perfdhcp process is one thread, and it can fall behind before the server does, "+
		"so every server's rate search runs with each of these load set-ups in turn: %s. "+
		"Processes that run side by side each take an equal share of the target rate, act as a relay of their own (giaddr %s, source port 67; one process: the first) "+
		"and draw from their own share of the MACs (so no two use one MAC at once); a server's figure is its best over the set-ups. "+"herd-boots runs in reservation mode with its inventory fed by a real herd-server (throwaway PostgreSQL) holding %d hardware records; "+
		"then, one after the other on the same veth, kea-dhcp4 (memfile lease database) and dnsmasq hold the same %d reservations "+
		"(one subnet without a pool: only reserved MACs are answered, as by herd-boots) and send the same options "+
		"(mask, router, DNS, NTP, domain, hostname, lease time). "+
		"A rate passes when perfdhcp sent at least 95 %% of its DISCOVERs (it holds back while a slow server leaves exchanges open) and at most %g %% of the exchanges started end without an ACK; "+
		"a failing rate is run once more and fails only when both runs fail. The target rate doubles from %d/s while runs pass, "+
		"then %d runs bisect between the last passing and the first failing rate. Exchanges/s is ACKs received / test period. "+
		"Kea and dnsmasq keep lease state, herd-boots none: each starts with an empty lease database that the runs fill (MACs drawn at random), "+
		"and dnsmasq rewrites its whole lease file on every change, so it slows as its leases grow: its later runs show it. "+
		"Targets: herd-boots ≥ 1.5× Kea and ≥ 2× dnsmasq. "+
		"perfdhcp runs in its %s-thread mode (`-g %s`); one herd-boots run at its best rate and set-up in the other mode is listed with its runs, for comparison. "+
		"Each run also counts, in each namespace, the UDP datagrams the kernel dropped because a socket's receive queue was full "+
		"(`RcvbufErrors` of /proc/net/snmp; each namespace holds one DHCP socket): a drop in the server's socket is the server falling behind, "+
		"one in perfdhcp's socket is the load generator falling behind. "+
		"%s "+
		"**The figures of a shared, noisy machine**: perfdhcp and the server share its %d CPUs, so a server's figure is also bounded by perfdhcp's own CPU use "+
		"(perfdhcp's CPU per exchange, in the tables, is its user + system CPU time over the whole run, its start and 1 s wait included, divided by the ACKs); see every run below to judge the noise.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), gomaxprocs, runtime.Version(), "perfdhcp "+strings.TrimPrefix(version(perfBin, "-v"), "VERSION: "),
		serverIP, *nRecords, setupNames(gens), strings.Join(relayIPs(slices.Max(setups)), ", "), *nRecords, *nRecords, *maxDrops, *startRate, *bisect, pd.threads, pd.threads, roundsText(*rounds), runtime.NumCPU())
	sb.WriteString("| round | server | version | highest target rate with ≤ 1 % drops | with perfdhcp | DORA exchanges/s | drops | avg DISCOVER→OFFER | avg REQUEST→ACK | herd-boots / this | VmRSS after the runs |\n")
	sb.WriteString("| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var keaRatios, dnsmasqRatios, cpuRatios []float64
	for rd, results := range all {
		herd := results[0].best.exchanges()
		for _, r := range results {
			rate, ex := "none", "—"
			if r.best.acks > 0 {
				rate, ex = fmt.Sprintf("%d/s", r.best.rate), fmt.Sprintf("%.0f", r.best.exchanges())
			}
			fmt.Fprintf(&sb, "| %d | %s | %s | %s | %s | **%s** | %.2f %% | %.2f ms | %.2f ms | **%s** | %s |\n", rd+1, r.name, r.version, rate, procsName(r.best.procs), ex,
				100*r.best.drops(), ms(r.best.doAvg), ms(r.best.raAvg), times(ratio(herd, r.best.exchanges())), mib(r.rss))
		}
		var bestKea float64
		for _, r := range results {
			if strings.HasPrefix(r.name, "kea-dhcp4") {
				bestKea = max(bestKea, r.best.exchanges())
			}
		}
		keaRatios = append(keaRatios, ratio(herd, bestKea))
		dnsmasqRatios = append(dnsmasqRatios, ratio(herd, results[len(results)-1].best.exchanges()))
		cpuRatios = append(cpuRatios, keaCPURatio(cpuRuns(results)))
	}
	fmt.Fprintf(&sb, "\n%s\n\n%s", ratioLine("DORA exchanges/s, herd-boots / the faster Kea setting of the same round", keaRatios, 1.5),
		ratioLine("herd-boots / dnsmasq", dnsmasqRatios, 2))
	fmt.Fprintf(&sb, "\n\nServer CPU time per DORA exchange, a second measure that perfdhcp does not bound: "+
		"DORA/s above can be capped by perfdhcp, which shares the %d CPUs with the server (the socket overflows of every run below show which side fell behind), so its ratios swing from run to run with the noise. "+
		"Here each server, fresh (its lease database empty but for the readiness probes), gets one perfdhcp run at a fixed rate it sustains "+
		"(%d/s for herd-boots and Kea, %d/s for dnsmasq, a rate it sustains), and its process's user + system CPU time (utime + stime of /proc/PID/stat: all its threads) "+
		"read just before and after the run (perfdhcp's start and its 1 s wait for late answers included, so idle work counts too) is divided by the ACKs received. "+
		"The server answers every exchange at that rate whatever share of the CPUs perfdhcp takes, so the figure measures the server's own work. "+
		"The kernel reports CPU time in 10 ms clock ticks: the figure is within 20 ms / ACKs, %.1f µs at %d/s for %s.\n\n",
		runtime.NumCPU(), *cpuRate, *cpuRateSlow, us(20*time.Millisecond)/max(1, float64(*cpuRate)*duration.Seconds()), *cpuRate, *duration)
	for rd, results := range all {
		fmt.Fprintf(&sb, "Round %d of %d:\n\n", rd+1, len(all))
		cpus := cpuRuns(results)
		if *compareBoots != "" {
			cpus = slices.Insert(cpus, 1, compared[rd])
		}
		writeCPUTable(&sb, cpus)
		sb.WriteString("\n\n")
	}
	sb.WriteString(ratioLine("CPU per DORA exchange, Kea's lower-CPU setting of the same round / herd-boots", cpuRatios, 2))
	if *compareBoots != "" {
		var each []string
		for rd, results := range all {
			each = append(each, fmt.Sprintf("round %d %.1f µs vs %.1f µs (%s)", rd+1, us(results[0].cpu.perExchange()), us(compared[rd].perExchange()),
				times(ratio(float64(compared[rd].perExchange()), float64(results[0].cpu.perExchange())))))
		}
		fmt.Fprintf(&sb, "\n\nherd-boots' CPU per exchange, this commit vs %s (%s, its CPU run right before this commit's in each round, a fresh process): %s.",
			*compareBootsName, *compareBootsWhat, strings.Join(each, "; "))
	}
	sb.WriteString("\n\nCommands (in the namespaces; TEMP is a directory of the run's own):\n\n```\n")
	for _, g := range gens {
		n := len(g.relays)
		for k := range g.relays {
			perfArgs := strings.Join(g.args(k, 0), " ")
			rate := "RATE"
			if n > 1 {
				rate += "/" + strconv.Itoa(n)
			}
			perfArgs = strings.Replace(perfArgs, "-r 0 ", "-r "+rate+" ", 1)
			perfArgs = strings.Replace(perfArgs, fmt.Sprintf("-D %d ", abortAfter(0)), fmt.Sprintf("-D max(10,%g%%×%s×%s) ", *abortDrops, rate, duration), 1)
			perfArgs = strings.Replace(perfArgs, g.macFiles[k], fmt.Sprintf("MACS%d-%d", n, k), 1)
			what := fmt.Sprintf("the %d reserved MACs", g.macs[k])
			if n > 1 {
				what = fmt.Sprintf("%d of the reserved MACs (records %d, %d, …)", g.macs[k], k, k+n)
			}
			fmt.Fprintf(&sb, "perfdhcp %s   # %s; MACS%d-%d: %s, one a line\n", perfArgs, procsName(n), n, k, what)
		}
	}
	fmt.Fprintf(&sb, "herd-boots --public-ip %s --dhcp-mode reservation --dhcp-interface hb0 --tftp-addr off --syslog-addr off --log-level %s --server … --token …   # its DHCP socket: 4 MiB kernel buffers (Kea and dnsmasq keep the system's), recvmmsg/sendmmsg batches of up to 32\n", serverIP, *bootsLogLevel)
	fmt.Fprintf(&sb, "KEA_LOCKFILE_DIR=TEMP KEA_PIDFILE_DIR=TEMP %s   # interfaces hb0 with dhcp-socket-type udp, memfile TEMP/kea-leases4.csv (lfc-interval 0), control socket TEMP/kea4-ctrl.sock, "+
		"multi-threading on (thread-pool-size 0: one thread per CPU, packet-queue-size 64) or off, %d reservations by hw-address, reservations-out-of-pool, loggers at WARN\n", keaCmd, *nRecords)
	fmt.Fprintf(&sb, "dnsmasq %s   # the conf: %d dhcp-host=MAC,IP,HOSTNAME lines and the options\n", strings.ReplaceAll(strings.Join(dArgs, " "), dDir, "TEMP"), *nRecords)
	fmt.Fprintf(&sb, "```\n\n(perfdhcp's `-r` is the target rate of each run; `-W 1000000` waits 1 s after the period for late answers; `-D` only cuts a clearly failing run short, at %g %% drops, so such a run may count fewer DISCOVERs.)\n", *abortDrops)
	sb.WriteString("\nEvery run, in order (socket overflows: datagrams dropped at a full receive queue, in the server's namespace / in perfdhcp's):\n\n" +
		"| round | server | perfdhcp | target rate | DISCOVER sent | OFFER received | REQUEST sent | ACK received | exchanges/s | drops | avg DO / RA | socket overflows: server / perfdhcp | perfdhcp CPU per exchange | |\n")
	sb.WriteString("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for rd, results := range all {
		for _, r := range results {
			for _, x := range r.runs {
				verdict := "pass"
				switch {
				case x.drops() > *maxDrops/100:
					verdict = "fail"
				case x.short():
					verdict = fmt.Sprintf("fail (perfdhcp sent %.0f %% of the target's DISCOVERs)", 100*float64(x.discovers)/(float64(x.rate)*x.period.Seconds()))
				}
				if x.threads != pd.threads {
					verdict += ", for comparison"
				}
				fmt.Fprintf(&sb, "| %d | %s | %s, -g %s | %d/s | %d | %d | %d | %d | %.0f | %.2f %% | %.2f / %.2f ms | %d / %d | %.1f µs | %s |\n", rd+1, x.server, procsName(x.procs), x.threads, x.rate,
					x.discovers, x.offers, x.requests, x.acks, x.exchanges(), 100*x.drops(), ms(x.doAvg), ms(x.raAvg), x.srvLost, x.cliLost, us(x.perfCPU()), verdict)
			}
		}
	}
	sb.WriteString("\nMemory of herd-boots (VmRSS from /proc/PID/status) once its inventory synced (/healthz ok), a fresh process each time:\n\n")
	sb.WriteString("| hardware records | pushed (32 concurrent gRPC clients) | start → inventory synced | VmRSS |\n| ---: | --- | ---: | ---: |\n")
	fmt.Fprintf(&sb, "| %d | %d in %.1f s | %.2f s | %s (%s after the perfdhcp runs) |\n", *nRecords, *nRecords, pushSmall.Seconds(), syncSmall.Seconds(), mib(rssSmall), mib(all[0][0].rss))
	if large != nil {
		fmt.Fprintf(&sb, "| %d | %d more in %.1f s | %.2f s | %s |\n", *nLarge, *nLarge-*nRecords, pushLarge.Seconds(), large.synced.Seconds(), mib(rssLarge))
	}
	t.Log("\n" + sb.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-dhcp", sb.String()); err != nil {
			t.Fatal(err)
		}
	}
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
