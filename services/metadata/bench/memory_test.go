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
)

var (
	memCompare     = flag.String("memory-compare", "", "TestBenchMemory: another herd-metadata binary measured beside this build (e.g. one built from an earlier commit)")
	memCompareName = flag.String("memory-compare-name", "earlier build", "TestBenchMemory: what -memory-compare is, for the table")
)

// memSettle is how long a process runs after its inventory synced before
// it is measured: the post-sync GC and the scavenger's return of memory
// to the OS finish by then.
const memSettle = 3 * time.Second

// TestBenchMemory measures only herd-metadata's memory (no wrk runs: RSS
// does not depend on the CPU noise of a shared machine, rates do): a fresh
// process per binary with -records, then -records-large machines, side by
// side with -memory-compare when given. Its section of docs/benchmarks.md
// is memory-metadata.
func TestBenchMemory(t *testing.T) {
	counts := []int{*nRecords}
	if *nLarge > *nRecords {
		counts = append(counts, *nLarge)
	}
	if *nRecords <= callerIndex {
		t.Fatalf("-records %d: need records > %d", *nRecords, callerIndex)
	}
	s := servertest.Start(t, "--log-level", "info")
	hc := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	bins := [][2]string{{"this build", buildMetadata(t)}}
	if *memCompare != "" {
		bins = append(bins, [2]string{*memCompareName, *memCompare})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## memory-metadata\n\n`go test -tags bench -run TestBenchMemory -v ./services/metadata/bench -args -out docs/benchmarks.md -memory-compare OLD-BINARY`, %s, Go %s: "+
		"herd-metadata's memory alone, a fresh process per row against a real herd-server (throwaway PostgreSQL) holding the bench-metadata records; "+
		"measured %s after its /healthz said the inventory synced: VmRSS from /proc/PID/status, the Go heap in use from its /metrics.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.Version(), memSettle)
	b.WriteString("| hardware records | binary | start → inventory synced | VmRSS | Go heap in use |\n| ---: | --- | ---: | ---: | ---: |\n")
	pushed := 0
	for _, n := range counts {
		d := push(t, hc, pushed, n)
		t.Logf("pushed records %d to %d in %.1f s", pushed, n, d.Seconds())
		pushed = n
		for _, bin := range bins {
			md := startMetadata(t, bin[1], s)
			time.Sleep(memSettle)
			if got, want := string(md.get(t, paths[0])), fmt.Sprintf("node-%d", callerIndex); got != want {
				t.Fatalf("%s answered %q for %s, want %q", bin[0], got, paths[0], want)
			}
			rss := md.rss(t)
			heap := md.metric(t, "go_memstats_heap_inuse_bytes")
			t.Logf("%d records, %s: synced in %.2f s, VmRSS %s, heap in use %s", n, bin[0], md.synced.Seconds(), mib(rss), mib(heap))
			fmt.Fprintf(&b, "| %d | %s | %.2f s | %s | %s |\n", n, bin[0], md.synced.Seconds(), mib(rss), mib(heap))
			md.stop(t)
		}
	}
	t.Log("\n" + b.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "memory-metadata", b.String()); err != nil {
			t.Fatal(err)
		}
	}
}
