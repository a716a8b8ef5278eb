//go:build bench

// Package bench measures herd-metadata: `make bench-metadata` runs it and
// writes its section of docs/benchmarks.md. wrk loads herd-metadata (with
// 10,000 machines in its inventory) and, side by side in the same run,
// nginx serving the very same bytes as static files; then it reports the
// service's memory with 10,000 and 100,000 machines. It is a benchmark,
// not a test: it asserts nothing about speed, it reports.
package bench

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
)

var (
	out         = flag.String("out", "", "markdown file to write the figures into (its bench-metadata section)")
	nRecords    = flag.Int("records", 10000, "hardware records in the inventory while wrk runs")
	nLarge      = flag.Int("records-large", 100000, "hardware records for the second memory figure (0: skip it)")
	rounds      = flag.Int("rounds", 2, "rounds of wrk runs; each round runs every path against every server, the order reversed every other round")
	duration    = flag.Duration("duration", 10*time.Second, "length of one wrk run")
	threads     = flag.Int("threads", 2, "wrk threads (-t)")
	connections = flag.Int("connections", 64, "wrk connections (-c)")
	baselines   = flag.Bool("baselines", true, "also measure bare net/http and fasthttp servers answering the same bytes (see baseline_test.go)")
)

// paths are the requests measured: the smallest EC2 answer and the whole
// metadata document.
var paths = []string{"/2009-04-04/meta-data/hostname", "/metadata"}

// callerIndex is the record of the machine wrk calls as (127.0.0.1).
const callerIndex = 0

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, false)) }

func hwID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }

func mac(i int) string {
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)
}

// ip is record i's interface address, on a 10.x network no traffic goes to.
func ip(i int) string { return fmt.Sprintf("10.%d.%d.%d", 10+i>>16&0xff, i>>8&0xff, i&0xff) }

// record is a machine with a metadata document of a realistic size (ids,
// addresses, a key, OS, facility, user-data). Record callerIndex also
// carries 127.0.0.1 among its metadata addresses: wrk cannot choose its
// source address, and the server refuses loopback interface addresses.
func record(i int) *hardware.Hardware {
	addrs := fmt.Sprintf(`{"address": %q, "address_family": 4, "netmask": "255.0.0.0", "public": false, "management": true}`, ip(i))
	if i == callerIndex {
		addrs += `, {"address": "127.0.0.1", "address_family": 4, "public": false, "management": false}`
	}
	doc := fmt.Sprintf(`{"facility": {"facility_code": "lab1", "plan_slug": "c3.small.x86"}, "instance": {"id": %q, "hostname": "node-%d", `+
		`"ip_addresses": [%s], "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO3bGv1e9Uu6Bqg2b8m3Zp0kqW3d8rX2l9mJpQ%06d ops@herd"], `+
		`"tags": ["rack-%d", "bench"], "operating_system": {"slug": "debian_12", "distro": "debian", "version": "12"}, `+
		`"userdata": "#cloud-config\nhostname: node-%d\n"}}`, hwID(i), i, addrs, i, i/40, i)
	return &hardware.Hardware{
		Id:       hwID(i),
		Metadata: doc,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac(i), Hostname: fmt.Sprintf("node-%d", i), Arch: "x86_64",
				Ip: &hardware.Hardware_DHCP_IP{Address: ip(i), Netmask: "255.0.0.0", Gateway: "10.0.0.1"}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}},
	}
}

// push sends records [from, to) from 32 concurrent clients.
func push(t *testing.T, c hardware.HardwareServiceClient, from, to int) time.Duration {
	return servertest.PushHardware(t, c, from, to, record)
}

// measured is one wrk run.
type measured struct {
	path, server string
	round        int
	bodySize     int
	wrkResult
}

func TestBenchMetadata(t *testing.T) {
	wrkBin, nginxBin := need(t, "wrk"), need(t, "nginx")
	if *nRecords <= callerIndex || (*nLarge != 0 && *nLarge < *nRecords) {
		t.Fatalf("-records %d, -records-large %d: need records > %d and records-large 0 or ≥ records", *nRecords, *nLarge, callerIndex)
	}
	// info, not less: 100,000 pushes logged at debug fill memory.
	s := servertest.Start(t, "--log-level", "info")
	hc := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	bin := buildMetadata(t)

	pushSmall := push(t, hc, 0, *nRecords)
	md := startMetadata(t, bin, s)
	smallSync := md.synced
	rssSmall, heapSmall := md.rss(t), md.metric(t, "go_memstats_heap_inuse_bytes")
	gomaxprocs := int(md.metric(t, "go_sched_gomaxprocs_threads"))
	if gomaxprocs <= 0 {
		gomaxprocs = runtime.GOMAXPROCS(0) // same machine, same Go: the same value
	}

	// The bytes nginx serves are the bytes herd-metadata answers.
	bodies := map[string][]byte{}
	for _, p := range paths {
		bodies[p] = md.get(t, p)
	}
	want := fmt.Sprintf("node-%d", callerIndex)
	if got := string(bodies[paths[0]]); got != want {
		t.Fatalf("herd-metadata answered 127.0.0.1 %q for %s, want %q (the caller's record)", got, paths[0], want)
	}
	ng := startNginx(t, nginxBin, gomaxprocs, bodies)
	bases := map[string]string{"herd-metadata": md.base, "nginx": ng.base}
	servers := []string{"herd-metadata", "nginx"}
	if *baselines {
		for name, base := range startBaselines(t, bodies) {
			bases[name] = base
		}
		servers = append(servers, baseNetHTTP, baseFastHTTP)
	}

	wrkArgs := []string{fmt.Sprintf("-t%d", *threads), fmt.Sprintf("-c%d", *connections), "-d" + duration.String(), "--latency"}
	var runs []measured
	for r := 1; r <= *rounds; r++ {
		for _, p := range paths {
			order := slices.Clone(servers)
			if r%2 == 0 { // alternate who goes first, so drift shows as noise, not as a bias
				slices.Reverse(order)
			}
			for _, srv := range order {
				res := runWrk(t, wrkBin, wrkArgs, bases[srv]+p)
				t.Logf("round %d %s %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms", r, srv, p, res.rps, ms(res.p50), ms(res.p99))
				runs = append(runs, measured{p, srv, r, len(bodies[p]), res})
			}
		}
	}
	rssLoaded := md.rss(t)
	md.stop(t)
	ng.stop(t)

	var pushLarge time.Duration
	var large *metadataProc
	var rssLarge, heapLarge float64
	if *nLarge > *nRecords {
		pushLarge = push(t, hc, *nRecords, *nLarge)
		large = startMetadata(t, bin, s)
		rssLarge, heapLarge = large.rss(t), large.metric(t, "go_memstats_heap_inuse_bytes")
		large.stop(t)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## bench-metadata\n\n`make bench-metadata`, %s, %d CPUs (herd-metadata GOMAXPROCS %d, nginx worker_processes %d), Go %s, %s. "+
		"herd-metadata runs as its own process against a real herd-server (throwaway PostgreSQL) holding %d hardware records; "+
		"nginx serves the same bytes as static files on the same machine. "+
		"Targets: ≥ 0.8× nginx's requests/s, p99 < 5 ms. "+
		"**The figures of one run on a shared, noisy machine**: wrk, herd-metadata and nginx share its CPUs; compare the rounds to judge the noise.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), gomaxprocs, gomaxprocs, runtime.Version(), ng.version, *nRecords)
	fmt.Fprintf(&b, "Each run: `wrk %s URL`, from 127.0.0.1 (one record lists 127.0.0.1 in its metadata `ip_addresses`, so herd-metadata answers that machine; "+
		"a metadata-document address is the slower of its two lookups: interface address index, then document addresses). "+
		"%d rounds; each round runs every path against every server, the order reversed every other round.\n\n",
		strings.Join(wrkArgs, " "), *rounds)
	b.WriteString(throughputTable(runs))
	if *baselines {
		fmt.Fprintf(&b, "\nWhat the serving library costs here: the same bytes and headers from the benchmark's own process (GOMAXPROCS %d, idle while wrk runs), "+
			"with no lookup, routing or metrics (services/metadata/bench/baseline_test.go). herd-metadata serves with fasthttp.\n\n", runtime.GOMAXPROCS(0))
		b.WriteString(serversTable(runs, servers))
	}
	b.WriteString("\nEvery run:\n\n| round | path | server | requests/s | p50 | p99 | errors |\n| --- | --- | --- | ---: | ---: | ---: | --- |\n")
	for _, m := range runs {
		fmt.Fprintf(&b, "| %d | `%s` | %s | %.0f | %.2f ms | %.2f ms | %s |\n", m.round, m.path, m.server, m.rps, ms(m.p50), ms(m.p99), m.errors)
	}
	b.WriteString("\nMemory of herd-metadata (VmRSS from /proc/PID/status, and the Go heap in use from its /metrics), once its inventory synced:\n\n")
	b.WriteString("| hardware records | pushed (32 concurrent gRPC clients) | start → inventory synced | VmRSS | Go heap in use |\n| ---: | --- | ---: | ---: | ---: |\n")
	fmt.Fprintf(&b, "| %d | %d in %.1f s | %.2f s | %s (%s after the wrk runs) | %s |\n", *nRecords, *nRecords, pushSmall.Seconds(), smallSync.Seconds(), mib(rssSmall), mib(rssLoaded), mib(heapSmall))
	if large != nil {
		fmt.Fprintf(&b, "| %d | %d more in %.1f s | %.2f s | %s | %s |\n", *nLarge, *nLarge-*nRecords, pushLarge.Seconds(), large.synced.Seconds(), mib(rssLarge), mib(heapLarge))
	}
	fmt.Fprintf(&b, "\nnginx: %d worker processes, `access_log off`, `sendfile on`, `open_file_cache`, `keepalive_requests` raised to 1,000,000 "+
		"(herd-metadata's server, fasthttp, never closes a keep-alive connection for its count), `etag off`, `server_tokens off`; "+
		"each file has the Content-Type herd-metadata sends.\n", gomaxprocs)
	t.Log("\n" + b.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-metadata", b.String()); err != nil {
			t.Fatal(err)
		}
	}
}

// throughputTable sums the runs up per path: the mean requests/s over the
// rounds, the ratio, the worst p99.
func throughputTable(runs []measured) string {
	var b strings.Builder
	b.WriteString("| path | body | herd-metadata requests/s | nginx requests/s | herd / nginx | herd-metadata p99 (worst round) | nginx p99 (worst round) |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range paths {
		var sum [2]float64
		var n [2]int
		var worst [2]time.Duration
		var size int
		for _, m := range runs {
			if m.path != p {
				continue
			}
			var k int
			switch m.server {
			case "herd-metadata":
				k = 0
			case "nginx":
				k = 1
			default: // the baselines have their own table
				continue
			}
			sum[k] += m.rps
			n[k]++
			worst[k] = max(worst[k], m.p99)
			size = m.bodySize
		}
		if n[0] == 0 || n[1] == 0 {
			continue
		}
		herd, nginx := sum[0]/float64(n[0]), sum[1]/float64(n[1])
		fmt.Fprintf(&b, "| `%s` | %d B | **%.0f** | %.0f | **%.2f×** | **%.2f ms** | %.2f ms |\n", p, size, herd, nginx, herd/nginx, ms(worst[0]), ms(worst[1]))
	}
	return b.String()
}

// serversTable is the mean requests/s and worst p99 of every server, per
// path, and the ratio to nginx.
func serversTable(runs []measured, servers []string) string {
	var b strings.Builder
	b.WriteString("| path | server | requests/s (mean) | / nginx | p99 (worst round) |\n| --- | --- | ---: | ---: | ---: |\n")
	for _, p := range paths {
		mean := map[string]float64{}
		worst := map[string]time.Duration{}
		for _, srv := range servers {
			n := 0
			for _, m := range runs {
				if m.path == p && m.server == srv {
					mean[srv] += m.rps
					worst[srv] = max(worst[srv], m.p99)
					n++
				}
			}
			if n > 0 {
				mean[srv] /= float64(n)
			}
		}
		for _, srv := range servers {
			ratio := 0.0
			if mean["nginx"] > 0 {
				ratio = mean[srv] / mean["nginx"]
			}
			fmt.Fprintf(&b, "| `%s` | %s | %.0f | %.2f× | %.2f ms |\n", p, srv, mean[srv], ratio, ms(worst[srv]))
		}
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func mib(bytes float64) string { return fmt.Sprintf("%.1f MiB", bytes/(1<<20)) }
