//go:build bench

package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
)

// measurement is one writer's one run of one format.
type measurement struct {
	format, writer string
	run            int
	bytes          int64 // of the raw image
	wall, cpu      time.Duration
}

func (m measurement) mbps() float64 { return mbps(m.bytes, m.wall) }

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }

// row is one format's one run: every writer's measurement by name.
type row struct {
	format string
	run    int
	by     map[string]measurement
}

// ratio is writer's rate over the baseline's in the same row.
func (r row) ratio(writer string) float64 {
	return r.by[writer].mbps() / r.by["baseline"].mbps()
}

// rows groups measurements by format and run, in the order first seen.
func rows(ms []measurement) []row {
	var out []row
	index := map[string]int{}
	for _, m := range ms {
		key := fmt.Sprintf("%s/%d", m.format, m.run)
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, row{format: m.format, run: m.run, by: map[string]measurement{}})
		}
		out[i].by[m.writer] = m
	}
	return out
}

// worst is, per format, the lowest ratio of writer to the baseline over
// the runs: the figure that holds in every run.
func worst(rs []row, writer string) map[string]float64 {
	w := map[string]float64{}
	for _, r := range rs {
		if v, ok := w[r.format]; !ok || r.ratio(writer) < v {
			w[r.format] = r.ratio(writer)
		}
	}
	return w
}

type reportInput struct {
	size         int64
	im           image
	target       string
	runs, cpus   int
	passes       int
	measurements []measurement
	decoders     []decoderRate
}

const buffered = "image2disk DIRECT_IO=false"

func report(in reportInput) string {
	var b strings.Builder
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	fmt.Fprintf(&b, "## image2disk (`make bench-image`)\n\n")
	fmt.Fprintf(&b, "Measured %s on %d CPUs shared with other work, so each run measures every writer side by side: %d passes, the writers taking turns, the order reversed every other pass; a run's rate is its passes' bytes over their time. ", time.Now().UTC().Format("2006-01-02"), in.cpus, in.passes)
	fmt.Fprintf(&b, "The raw image is %s (%s); its files: ", mib(in.size), segmentLayout)
	for i, f := range formats {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s (`%s`)", f.name, mib(in.im.bytes[in.im.file(f)]), strings.Join(f.compress, " "))
	}
	fmt.Fprintf(&b, ", served by Go's net/http file server on loopback. Target: %s.\n\n", in.target)
	b.WriteString("- baseline: `curl -sSf URL | gzip -d | dd of=TARGET bs=4M oflag=direct` (`xz -d`, `zstd -d` for the others): three processes, each on its own core.\n")
	b.WriteString("- image2disk: the static binary as the action image ships it, `COMPRESSED=true`, `CHECKSUM=sha256:` of the file (checked in the same pass); O_DIRECT (the default), and `DIRECT_IO=false` (page cache, fsync at the end).\n")
	b.WriteString("- MB/s: of the raw image (10^6 bytes) over the wall time from process start to exit; CPU: user + system seconds of the writer's processes over the run's passes.\n\n")
	b.WriteString("| format | run | baseline MB/s | image2disk MB/s | ratio | DIRECT_IO=false MB/s | ratio | CPU s: baseline / image2disk / DIRECT_IO=false |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	rs := rows(in.measurements)
	for _, f := range formats {
		for _, r := range rs {
			if r.format != f.name {
				continue
			}
			base, direct, buf := r.by["baseline"], r.by["image2disk"], r.by[buffered]
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.2f× | %.0f | %.2f× | %.2f / %.2f / %.2f |\n", r.format, r.run,
				base.mbps(), direct.mbps(), r.ratio("image2disk"), buf.mbps(), r.ratio(buffered),
				base.cpu.Seconds(), direct.cpu.Seconds(), buf.cpu.Seconds())
		}
	}
	wd, wb := worst(rs, "image2disk"), worst(rs, buffered)
	fmt.Fprintf(&b, "\nWorst of the %d runs (image2disk / baseline, target ≥ 0.90×): ", in.runs)
	for i, f := range formats {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s %.2f× (DIRECT_IO=false %.2f×)", f.name, wd[f.name], wb[f.name])
	}
	b.WriteString(".\n\nEach decoder alone, file to nothing, one run (how much of a gap is the decoder's; CPU seconds hold better than MB/s on a loaded machine; for xz the Go row is one core's decoder, where image2disk runs one per block on up to 4 cores):\n\n")
	b.WriteString("| format | Go decoder image2disk uses: MB/s, CPU s | Debian's tool: MB/s, CPU s | CPU: Go / Debian |\n| --- | ---: | ---: | ---: |\n")
	for _, d := range in.decoders {
		fmt.Fprintf(&b, "| %s | %.0f, %.2f | %.0f, %.2f | %.2f× |\n", d.format, mbps(in.size, d.goDec), d.goDecCPU.Seconds(),
			mbps(in.size, d.debian), d.debianCPU.Seconds(), d.goDecCPU.Seconds()/d.debianCPU.Seconds())
	}
	return b.String()
}

func writeSection(path, body string) error { return benchdoc.WriteSection(path, "bench-image", body) }

func TestRowsAndWorst(t *testing.T) {
	m := func(format, writer string, run int, secs float64) measurement {
		return measurement{format: format, writer: writer, run: run, bytes: 1e9, wall: time.Duration(secs * float64(time.Second))}
	}
	rs := rows([]measurement{
		m("zstd", "baseline", 1, 1), m("zstd", "image2disk", 1, 2),
		m("xz", "baseline", 1, 4), m("xz", "image2disk", 1, 4),
		m("zstd", "image2disk", 2, 1), m("zstd", "baseline", 2, 1),
	})
	if len(rs) != 3 || rs[0].format != "zstd" || rs[1].format != "xz" || rs[2].run != 2 {
		t.Fatalf("rows = %+v", rs)
	}
	if got := rs[0].by["baseline"].mbps(); got != 1000 {
		t.Errorf("1e9 bytes in 1 s = %v MB/s, want 1000", got)
	}
	w := worst(rs, "image2disk")
	if w["zstd"] != 0.5 || w["xz"] != 1 {
		t.Errorf("worst = %v, want zstd 0.5 (run 1, not run 2's 1.0), xz 1", w)
	}
}
