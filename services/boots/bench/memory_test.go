//go:build bench

package bench

import (
	"flag"
	"fmt"
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
	memCompare     = flag.String("memory-compare", "", "TestBenchMemory: another herd-boots binary measured beside this build (e.g. one built from an earlier commit)")
	memCompareName = flag.String("memory-compare-name", "earlier build", "TestBenchMemory: what -memory-compare is, for the table")
)

// memSettle is how long a process runs after its inventory synced before
// it is measured: the post-sync GC and the scavenger's return of memory
// to the OS finish by then.
const memSettle = 3 * time.Second

// TestBenchMemory measures only herd-boots' memory (no perfdhcp runs: RSS
// does not depend on the CPU noise of a shared machine, rates do): a
// fresh process per binary with -records, then -records-large machines,
// side by side with -memory-compare when given, each serving DHCP on hb0
// as in TestBenchDHCP. Its section of docs/benchmarks.md is memory-boots.
func TestBenchMemory(t *testing.T) {
	realtest.Root(t)
	need(t, "ip")
	counts := []int{*nRecords}
	if *nLarge > *nRecords {
		counts = append(counts, *nLarge)
	}
	s := servertest.Start(t, "--log-level", "info")
	hc := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	bins := [][2]string{{"this build", buildBoots(t)}}
	if *memCompare != "" {
		bins = append(bins, [2]string{*memCompareName, *memCompare})
	}
	srv, cli := netnstest.New(t, "hbms"), netnstest.New(t, "hbmc")
	netnstest.Veth(t, srv, "hb0", serverIP+"/16", cli, "hc0", nil)
	srv.Forward(s.GRPC, s.GRPC)
	srv.Forward(strings.TrimPrefix(s.HTTP, "http://"), strings.TrimPrefix(s.HTTP, "http://"))

	var b strings.Builder
	fmt.Fprintf(&b, "## memory-boots\n\n`go test -tags bench -run TestBenchMemory -v ./services/boots/bench -args -out docs/benchmarks.md -memory-compare OLD-BINARY`, %s, Go %s: "+
		"herd-boots' memory alone, a fresh process per row (reservation mode on hb0, as in bench-dhcp) against a real herd-server (throwaway PostgreSQL) holding the bench-dhcp records; "+
		"measured %s after its /healthz said the inventory synced: VmRSS from /proc/PID/status, the Go heap in use from its /metrics.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), memSettle)
	b.WriteString("| hardware records | binary | start → inventory synced | VmRSS | Go heap in use |\n| ---: | --- | ---: | ---: | ---: |\n")
	pushed := 0
	for _, n := range counts {
		d := push(t, hc, pushed, n)
		t.Logf("pushed records %d to %d in %.1f s", pushed, n, d.Seconds())
		pushed = n
		for _, bin := range bins {
			bp := startBoots(t, bin[1], s, srv)
			time.Sleep(memSettle)
			if got := bp.metric(t, "herd_boots_inventory_machines"); int(got) != n {
				t.Fatalf("%s synced %v machines, want %d", bin[0], got, n)
			}
			rss := bp.rss(t)
			heap := bp.metric(t, "go_memstats_heap_inuse_bytes")
			t.Logf("%d records, %s: synced in %.2f s, VmRSS %s, heap in use %s", n, bin[0], bp.synced.Seconds(), mib(rss), mib(heap))
			fmt.Fprintf(&b, "| %d | %s | %.2f s | %s | %s |\n", n, bin[0], bp.synced.Seconds(), mib(rss), mib(heap))
			bp.stop(t)
		}
	}
	t.Log("\n" + b.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "memory-boots", b.String()); err != nil {
			t.Fatal(err)
		}
	}
}
