//go:build bench

// Package bench measures image2disk: `make bench-image` runs it and writes
// its section of docs/benchmarks.md. A raw disk image is compressed with
// Debian's gzip, xz and zstd and served from a local HTTP server; for each
// format, in the same run and to the same target (a loop device over a
// tmpfs file), it times the image2disk binary (with its SHA-256 check)
// and the pipeline `curl | DECOMPRESSOR | dd bs=4M oflag=direct`. It is a
// benchmark, not a test: it asserts nothing about speed, it reports.
package bench

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var (
	out = flag.String("out", "", "markdown file to write the figures into (its bench-image section)")
	// 256 MiB: xz's compressor takes about 17 CPU seconds per 64 MiB of
	// this image, which on 2 shared cores is tens of minutes for 1 GiB.
	sizeMiB   = flag.Int64("size", 256, "raw image size in MiB")
	runs      = flag.Int("runs", 3, "runs of every format; each run measures every writer")
	passes    = flag.Int("passes", 3, "writes of the image by each writer in one run, the writers taking turns, the order reversed every other pass: a run's rate is its passes' bytes over their time, so a burst of other load falls on every writer alike")
	cacheDir  = flag.String("cache", filepath.Join(os.TempDir(), "herd-bench-image"), "directory of the image files, kept between runs (compressing 1 GiB with xz takes minutes)")
	targetDir = flag.String("target-dir", "/dev/shm", "directory of the file behind the loop device (tmpfs: the disk is not what is measured)")
)

// writer is one way of putting the image on the target.
type writer struct {
	name string
	cmd  func(t *testing.T, url string, f format) *exec.Cmd
}

func TestBenchImage(t *testing.T) {
	for _, tool := range []string{"curl", "gzip", "xz", "zstd", "dd", "losetup", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing (worker/actions/image2disk/bench/deps.txt): %v", tool, err)
		}
	}
	size := *sizeMiB << 20
	bin := buildImage2Disk(t)
	im, err := makeImage(*cacheDir, size, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(im.dir)))
	defer srv.Close()
	tgt := newTarget(t, size)
	t.Logf("target: %s", tgt.describe())

	image2disk := func(direct bool) func(*testing.T, string, format) *exec.Cmd {
		return func(t *testing.T, url string, f format) *exec.Cmd {
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), "IMG_URL="+url, "DEST_DISK="+tgt.path, "COMPRESSED=true",
				"CHECKSUM=sha256:"+im.compressedSHA(f), "PROGRESS_EVERY=1h", fmt.Sprintf("DIRECT_IO=%t", direct))
			return cmd
		}
	}
	writers := []writer{
		{"baseline", func(t *testing.T, url string, f format) *exec.Cmd {
			return exec.Command("bash", "-c", "set -o pipefail; curl -sSf "+url+" | "+f.decompress+" | dd of="+tgt.path+" bs=4M"+tgt.ddFlags()+" status=none")
		}},
		{"image2disk", image2disk(true)},
		{"image2disk DIRECT_IO=false", image2disk(false)},
	}

	var all []measurement
	for run := 1; run <= *runs; run++ {
		for _, f := range formats {
			sums := map[string]*measurement{}
			for pass := 1; pass <= *passes; pass++ {
				order := writers
				if (run+pass)%2 == 1 {
					order = reversed(writers)
				}
				for _, w := range order {
					m := measure(t, w, f, srv.URL+"/"+im.file(f), size)
					if run == 1 && pass == 1 {
						tgt.verify(t, im, w.name, f.name)
					}
					if sums[w.name] == nil {
						sums[w.name] = &measurement{format: f.name, writer: w.name, run: run}
					}
					sum := sums[w.name]
					sum.bytes, sum.wall, sum.cpu = sum.bytes+m.bytes, sum.wall+m.wall, sum.cpu+m.cpu
				}
			}
			for _, w := range writers {
				m := *sums[w.name]
				t.Logf("run %d %-5s %-27s %7.1f MB/s, %.2f s CPU", run, f.name, w.name, m.mbps(), m.cpu.Seconds())
				all = append(all, m)
			}
		}
	}
	decoders := measureDecoders(t, im)

	body := report(reportInput{
		size: size, im: im, target: tgt.describe(), runs: *runs, passes: *passes, cpus: runtime.NumCPU(),
		measurements: all, decoders: decoders,
	})
	fmt.Println(body)
	if *out != "" {
		if err := writeSection(*out, body); err != nil {
			t.Fatal(err)
		}
	}
}

// measure runs one writer once and takes its wall time and CPU (the
// pipeline's CPU is its three processes', which bash waits for).
func measure(t *testing.T, w writer, f format, url string, size int64) measurement {
	t.Helper()
	cmd := w.cmd(t, url, f)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", w.name, f.name, err, stderr.String())
	}
	wall := time.Since(start)
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return measurement{format: f.name, writer: w.name, bytes: size, wall: wall, cpu: cpu}
}

func reversed(ws []writer) []writer {
	r := make([]writer, len(ws))
	for i, w := range ws {
		r[len(ws)-1-i] = w
	}
	return r
}

// buildImage2Disk builds the action's static binary as `make
// action-images` does.
func buildImage2Disk(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "image2disk")
	_, here, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = filepath.Join(filepath.Dir(here), "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building image2disk: %v\n%s", err, out)
	}
	return bin
}

// target is what the writers write: a loop device over a file in
// targetDir, or that file itself when no loop device can be had.
type target struct {
	file, path string
	loop       bool
	fsType     string
}

func newTarget(t *testing.T, size int64) *target {
	tg := &target{file: filepath.Join(*targetDir, fmt.Sprintf("herd-bench-image-%d.disk", os.Getpid()))}
	f, err := os.Create(tg.file)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(tg.file) })
	// Room for the image and 1 MiB more, so the last write is not at the
	// device's very end.
	if err := os.Truncate(tg.file, size+1<<20); err != nil {
		t.Fatal(err)
	}
	tg.fsType = fsType(*targetDir)
	tg.path = tg.file
	out, err := exec.Command("losetup", "-f", "--show", tg.file).CombinedOutput()
	if err != nil {
		t.Logf("no loop device (%v: %s): writing the file itself", err, bytes.TrimSpace(out))
		return tg
	}
	tg.path, tg.loop = strings.TrimSpace(string(out)), true
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", tg.path).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", tg.path, err, out)
		}
	})
	return tg
}

func (tg *target) describe() string {
	if tg.loop {
		return fmt.Sprintf("a loop device (%s) over a file on %s (%s)", tg.path, tg.fsType, filepath.Dir(tg.file))
	}
	return fmt.Sprintf("a file on %s (%s); no loop device could be had", tg.fsType, filepath.Dir(tg.file))
}

// ddFlags is oflag=direct where the target allows it (a file on tmpfs
// does not).
func (tg *target) ddFlags() string {
	if tg.loop || tg.fsType != "tmpfs" {
		return " oflag=direct"
	}
	return ""
}

// verify checks that the target holds the raw image: a benchmark of a
// writer that writes the wrong bytes would be worth nothing.
func (tg *target) verify(t *testing.T, im image, writer, format string) {
	t.Helper()
	f, err := os.Open(tg.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, im.size); err != nil {
		t.Fatalf("reading %s back: %v", tg.path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != im.rawSHA() {
		t.Fatalf("%s %s: the target holds sha256 %s, the raw image is %s", writer, format, got, im.rawSHA())
	}
}

func fsType(dir string) string {
	out, err := exec.Command("stat", "-f", "-c", "%T", dir).Output()
	if err != nil {
		return "an unknown filesystem"
	}
	return strings.TrimSpace(string(out))
}
