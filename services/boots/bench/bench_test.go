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
	cpuRateSlow   = flag.Int("cpu-rate-dnsmasq", 50, "fixed target rate of dnsmasq's CPU-per-exchange run: one it sustains")
)

// The lab: herd-server on the host's loopback, the DHCP server under test
// on hb0 (serverIP) in one namespace, perfdhcp on hc0 (relayIP, which it
// puts in giaddr) in another. Both ends sit in the reservations' /16, so
// every server picks the reservations' subnet from giaddr and answers the
// relay on the link.
const (
	subnet     = "10.20.0.0/16"
	subnetBase = "10.20.0.0"
	netmask    = "255.255.0.0"
	serverIP   = "10.20.255.254"
	relayIP    = "10.20.255.253"
	dnsIP      = "10.20.255.53"
	ntpIP      = "10.20.255.123"
	domain     = "lab.example"
	bootsHTTP  = serverIP + ":8080"
	leaseTime  = 24 * time.Hour
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, false)) }

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
	macFile := filepath.Join(t.TempDir(), "macs")
	var macs strings.Builder
	for i := range *nRecords {
		macs.WriteString(mac(i) + "\n")
	}
	if err := os.WriteFile(macFile, []byte(macs.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	pushSmall := push(t, hc, 0, *nRecords)

	srv, cli := netnstest.New(t, "hbbs"), netnstest.New(t, "hbbc")
	netnstest.Veth(t, srv, "hb0", serverIP+"/16", cli, "hc0", nil)
	cli.IP("addr", "add", relayIP+"/16", "dev", "hc0")
	// herd-server listens on the host's loopback: forward its ports into
	// the server namespace's loopback.
	srv.Forward(s.GRPC, s.GRPC)
	srv.Forward(strings.TrimPrefix(s.HTTP, "http://"), strings.TrimPrefix(s.HTTP, "http://"))
	pd := &perfdhcp{bin: perfBin, macFile: macFile, iface: "hc0", server: serverIP, ns: cli}

	var results []result
	// herd-boots.
	b := startBoots(t, bootsBin, s, srv)
	if n := b.metric(t, "herd_boots_inventory_machines"); int(n) != *nRecords {
		t.Fatalf("herd-boots synced %v machines, want %d", n, *nRecords)
	}
	rssSmall, syncSmall := b.rss(t), b.synced
	gomaxprocs := int(b.metric(t, "go_sched_gomaxprocs_threads"))
	ready := waitAnswers(t, b.proc, pd)
	// Each server's CPU run comes first, on a fresh lease database, so it
	// does not depend on how many search runs came before it.
	cpuB := measureCPU(t, b.proc, pd, *cpuRate)
	best, runs := pd.search(t, "herd-boots")
	results = append(results, result{"herd-boots", "this commit (go build)", best, runs, b.synced + ready, b.rss(t), cpuB})
	b.stop(t)

	// Kea, multi-threaded (its fastest setting with a memfile) and, as
	// Kea 2.2 ships it, single-threaded.
	keaCmd := ""
	for _, mt := range []bool{true, false} {
		if !mt && !*keaST {
			continue
		}
		k, file := startKea(t, keaBin, srv, mt)
		keaCmd = "kea-dhcp4 -c " + filepath.Base(file)
		ready := waitAnswers(t, k, pd)
		cpuK := measureCPU(t, k, pd, *cpuRate)
		best, runs := pd.search(t, k.name)
		results = append(results, result{k.name, "Kea " + version(keaBin, "-v"), best, runs, ready, k.rss(t), cpuK})
		k.stop(t)
	}

	// dnsmasq.
	d, dArgs, dDir := startDnsmasq(t, dnsmasqBin, srv)
	readyD := waitAnswers(t, d, pd)
	cpuD := measureCPU(t, d, pd, *cpuRateSlow)
	bestD, runsD := pd.search(t, "dnsmasq")
	results = append(results, result{"dnsmasq", dnsmasqVersion(dnsmasqBin), bestD, runsD, readyD, d.rss(t), cpuD})
	d.stop(t)

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
		"perfdhcp in one network namespace sends relayed DHCPv4 DORA exchanges (it acts as the relay: giaddr %s, source port 67) "+
		"over a veth to the server under test in another namespace (%s on hb0), each exchange from a MAC drawn at random from the %d reserved ones. "+
		"herd-boots runs in reservation mode with its inventory fed by a real herd-server (throwaway PostgreSQL) holding %d hardware records; "+
		"then, one after the other on the same veth, kea-dhcp4 (memfile lease database) and dnsmasq hold the same %d reservations "+
		"(one subnet without a pool: only reserved MACs are answered, as by herd-boots) and send the same options "+
		"(mask, router, DNS, NTP, domain, hostname, lease time). "+
		"A rate passes when perfdhcp sent at least 95 %% of its DISCOVERs (it holds back while a slow server leaves exchanges open) and at most %g %% of the exchanges started end without an ACK; "+
		"a failing rate is run once more and fails only when both runs fail. The target rate doubles from %d/s while runs pass, "+
		"then %d runs bisect between the last passing and the first failing rate. Exchanges/s is ACKs received / test period. "+
		"Kea and dnsmasq keep lease state, herd-boots none: each starts with an empty lease database that the runs fill (MACs drawn at random), "+
		"and dnsmasq rewrites its whole lease file on every change, so it slows as its leases grow: its later runs show it. "+
		"Targets: herd-boots ≥ 1.5× Kea and ≥ 2× dnsmasq. "+
		"**The figures of one run on a shared, noisy machine**: perfdhcp and the server share its %d CPUs, so a server's figure is also bounded by perfdhcp's own CPU use; "+
		"see every run below to judge the noise.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), gomaxprocs, runtime.Version(), "perfdhcp "+strings.TrimPrefix(version(perfBin, "-v"), "VERSION: "),
		relayIP, serverIP, *nRecords, *nRecords, *nRecords, *maxDrops, *startRate, *bisect, runtime.NumCPU())
	sb.WriteString("| server | version | highest target rate with ≤ 1 % drops | DORA exchanges/s | drops | avg DISCOVER→OFFER | avg REQUEST→ACK | herd-boots / this | VmRSS after the runs |\n")
	sb.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	herd := results[0].best.exchanges()
	for _, r := range results {
		fmt.Fprintf(&sb, "| %s | %s | %d/s | **%.0f** | %.2f %% | %.2f ms | %.2f ms | **%.2f×** | %s |\n", r.name, r.version, r.best.rate, r.best.exchanges(),
			100*r.best.drops(), ms(r.best.doAvg), ms(r.best.raAvg), herd/r.best.exchanges(), mib(r.rss))
	}
	var bestKea float64
	for _, r := range results {
		if strings.HasPrefix(r.name, "kea-dhcp4") {
			bestKea = max(bestKea, r.best.exchanges())
		}
	}
	fmt.Fprintf(&sb, "\nherd-boots / Kea (the faster Kea setting): **%.2f×** (target ≥ 1.5×); herd-boots / dnsmasq: **%.2f×** (target ≥ 2×).",
		herd/bestKea, herd/bestD.exchanges())
	fmt.Fprintf(&sb, "\n\nServer CPU time per DORA exchange, a second measure that perfdhcp does not bound: "+
		"DORA/s above is capped by perfdhcp, which shares the %d CPUs with the server and becomes the limit first, so its ratios swing from run to run with the noise. "+
		"Here each server, fresh (its lease database empty but for the readiness probes), gets one perfdhcp run at a fixed rate it sustains "+
		"(%d/s for herd-boots and Kea, %d/s for dnsmasq, a rate it sustains), and its process's user + system CPU time (utime + stime of /proc/PID/stat: all its threads) "+
		"read just before and after the run (perfdhcp's start and its 1 s wait for late answers included, so idle work counts too) is divided by the ACKs received. "+
		"The server answers every exchange at that rate whatever share of the CPUs perfdhcp takes, so the figure measures the server's own work. "+
		"The kernel reports CPU time in 10 ms clock ticks: the figure is within 20 ms / ACKs, %.1f µs at %d/s for %s.\n\n",
		runtime.NumCPU(), *cpuRate, *cpuRateSlow, us(20*time.Millisecond)/max(1, float64(*cpuRate)*duration.Seconds()), *cpuRate, *duration)
	cpus := make([]cpuRun, len(results))
	for i, r := range results {
		cpus[i] = r.cpu
	}
	writeCPUTable(&sb, cpus)
	sb.WriteString("\n\nCommands (in the namespaces; TEMP is a directory of the run's own):\n\n```\n")
	perfArgs := strings.Join(pd.args(0), " ")
	perfArgs = strings.Replace(perfArgs, "-r 0 ", "-r RATE ", 1)
	perfArgs = strings.Replace(perfArgs, fmt.Sprintf("-D %d ", abortAfter(0)), fmt.Sprintf("-D max(10,%g%%×RATE×%s) ", *abortDrops, duration), 1)
	perfArgs = strings.Replace(perfArgs, macFile, "MACS", 1)
	fmt.Fprintf(&sb, "perfdhcp %s   # MACS: the %d reserved MACs, one a line\n", perfArgs, *nRecords)
	fmt.Fprintf(&sb, "herd-boots --public-ip %s --dhcp-mode reservation --dhcp-interface hb0 --tftp-addr off --syslog-addr off --log-level %s --server … --token …   # its DHCP socket: 4 MiB kernel buffers (Kea and dnsmasq keep the system's), recvmmsg/sendmmsg batches of up to 32\n", serverIP, *bootsLogLevel)
	fmt.Fprintf(&sb, "KEA_LOCKFILE_DIR=TEMP KEA_PIDFILE_DIR=TEMP %s   # interfaces hb0 with dhcp-socket-type udp, memfile TEMP/kea-leases4.csv (lfc-interval 0), control socket TEMP/kea4-ctrl.sock, "+
		"multi-threading on (thread-pool-size 0: one thread per CPU, packet-queue-size 64) or off, %d reservations by hw-address, reservations-out-of-pool, loggers at WARN\n", keaCmd, *nRecords)
	fmt.Fprintf(&sb, "dnsmasq %s   # the conf: %d dhcp-host=MAC,IP,HOSTNAME lines and the options\n", strings.ReplaceAll(strings.Join(dArgs, " "), dDir, "TEMP"), *nRecords)
	fmt.Fprintf(&sb, "```\n\n(perfdhcp's `-r` is the target rate of each run; `-W 1000000` waits 1 s after the period for late answers; `-D` only cuts a clearly failing run short, at %g %% drops, so such a run may count fewer DISCOVERs.)\n", *abortDrops)
	sb.WriteString("\nEvery run, in order:\n\n| server | target rate | DISCOVER sent | OFFER received | REQUEST sent | ACK received | exchanges/s | drops | avg DO / RA | |\n")
	sb.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, r := range results {
		for _, x := range r.runs {
			verdict := "pass"
			switch {
			case x.drops() > *maxDrops/100:
				verdict = "fail"
			case x.short():
				verdict = fmt.Sprintf("fail (perfdhcp sent %.0f %% of the target's DISCOVERs)", 100*float64(x.discovers)/(float64(x.rate)*x.period.Seconds()))
			}
			fmt.Fprintf(&sb, "| %s | %d/s | %d | %d | %d | %d | %.0f | %.2f %% | %.2f / %.2f ms | %s |\n", x.server, x.rate, x.discovers, x.offers, x.requests, x.acks,
				x.exchanges(), 100*x.drops(), ms(x.doAvg), ms(x.raAvg), verdict)
		}
	}
	sb.WriteString("\nMemory of herd-boots (VmRSS from /proc/PID/status) once its inventory synced (/healthz ok), a fresh process each time:\n\n")
	sb.WriteString("| hardware records | pushed (32 concurrent gRPC clients) | start → inventory synced | VmRSS |\n| ---: | --- | ---: | ---: |\n")
	fmt.Fprintf(&sb, "| %d | %d in %.1f s | %.2f s | %s (%s after the perfdhcp runs) |\n", *nRecords, *nRecords, pushSmall.Seconds(), syncSmall.Seconds(), mib(rssSmall), mib(results[0].rss))
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
