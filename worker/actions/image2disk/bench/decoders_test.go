//go:build bench

package bench

import (
	"bufio"
	"io"
	"os"
	"os/exec"
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
	format        string
	goDec, debian time.Duration
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

func measureDecoders(t *testing.T, im image) []decoderRate {
	var rates []decoderRate
	for _, f := range formats {
		path := im.path(im.file(f))
		in, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		dec, err := goDecoder(f.name, bufio.NewReaderSize(in, 1<<20))
		if err == nil {
			_, err = io.Copy(io.Discard, dec)
		}
		in.Close()
		if err != nil {
			t.Fatalf("Go %s decoder: %v", f.name, err)
		}
		r := decoderRate{format: f.name, goDec: time.Since(start)}
		start = time.Now()
		if out, err := exec.Command("bash", "-c", f.decompress+" < "+path+" > /dev/null").CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", f.decompress, err, out)
		}
		r.debian = time.Since(start)
		t.Logf("decoding %s alone: Go %.1f MB/s, %s %.1f MB/s", f.name, mbps(im.size, r.goDec), f.decompress, mbps(im.size, r.debian))
		rates = append(rates, r)
	}
	return rates
}
