//go:build bench

package bench

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// decoderRate is how fast one format decodes on its own, from a file to
// nothing: the Go decoder image2disk uses, in this process, and Debian's
// tool the baseline uses. It says how much of a gap is the decoder's.
type decoderRate struct {
	format              string
	goDec, debian       time.Duration // wall
	goDecCPU, debianCPU time.Duration // user + system
}

// goDecoder opens the decoder image2disk uses for the format, with the
// same options (worker/actions/image2disk/main.go, decompressor).
func goDecoder(format string, r io.Reader) (io.Reader, error) {
	switch format {
	case "gzip":
		return gzip.NewReader(r)
	case "xz":
		return xz.NewReader(r)
	}
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
}

// selfCPU is the user + system time of this process so far (the HTTP
// server is idle while the decoders run).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measureDecoders(t *testing.T, im image) []decoderRate {
	var rates []decoderRate
	for _, f := range formats {
		path := im.path(im.file(f))
		in, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		start, cpu0 := time.Now(), selfCPU()
		dec, err := goDecoder(f.name, bufio.NewReaderSize(in, 1<<20))
		if err == nil {
			_, err = io.Copy(io.Discard, dec)
		}
		in.Close()
		if err != nil {
			t.Fatalf("Go %s decoder: %v", f.name, err)
		}
		r := decoderRate{format: f.name, goDec: time.Since(start), goDecCPU: selfCPU() - cpu0}
		start = time.Now()
		cmd := exec.Command("bash", "-c", f.decompress+" < "+path+" > /dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", f.decompress, err, out)
		}
		r.debian = time.Since(start)
		r.debianCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		t.Logf("decoding %s alone: Go %.1f MB/s (%.2f s CPU), %s %.1f MB/s (%.2f s CPU)", f.name, mbps(im.size, r.goDec), r.goDecCPU.Seconds(),
			f.decompress, mbps(im.size, r.debian), r.debianCPU.Seconds())
		rates = append(rates, r)
	}
	return rates
}
