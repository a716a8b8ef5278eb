//go:build bench

package bench

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// segment is the pattern the raw image repeats, like a filesystem image:
// incompressible data (packed or compressed files), compressible data
// (programs, libraries, text) and zeros (free space).
const (
	segment       = 16 << 20
	randomPart    = 4 << 20
	wordsPart     = 2 << 20
	segmentLayout = "per 16 MiB: 4 MiB random, 2 MiB of text from a 4,096-word vocabulary, 10 MiB of zeros"
)

// format is one compression the bench measures, with Debian's tools for
// both sides: the compressor that makes the file and the decompressor of
// the baseline pipeline.
type format struct {
	name, ext  string
	compress   []string // reads stdin, writes stdout
	decompress string   // the baseline's middle command
}

var formats = []format{
	{"gzip", "gz", []string{"gzip", "-c"}, "gzip -d"},
	// -T0: the multi-threaded compressor, as image builders use it; its
	// blocks would allow a threaded decoder, xz 5.4's -d still uses one.
	{"xz", "xz", []string{"xz", "-c", "-T0"}, "xz -d"},
	{"zstd", "zst", []string{"zstd", "-q", "-c", "-T0"}, "zstd -d -q"},
}

// writeRawImage writes size bytes of the segment pattern to w, the same
// bytes for the same size (fixed seeds), so cached files stay valid.
func writeRawImage(w io.Writer, size int64) error {
	rnd := rand.NewChaCha8([32]byte{'h', 'e', 'r', 'd'})
	words := vocabulary(rand.New(rand.NewPCG(1, 2)))
	pick := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, segment)
	text := make([]byte, 0, wordsPart+16)
	for written := int64(0); written < size; {
		rnd.Read(buf[:randomPart])
		text = text[:0]
		for len(text) < wordsPart {
			text = append(text, words[pick.IntN(len(words))]...)
			text = append(text, " \n"[pick.IntN(10)/9]) // a line every 10 words
		}
		copy(buf[randomPart:randomPart+wordsPart], text)
		clear(buf[randomPart+wordsPart:])
		n := min(int64(len(buf)), size-written)
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		written += n
	}
	return nil
}

func vocabulary(r *rand.Rand) []string {
	words := make([]string, 4096)
	for i := range words {
		b := make([]byte, 2+r.IntN(9))
		for j := range b {
			b[j] = 'a' + byte(r.IntN(26))
		}
		words[i] = string(b)
	}
	return words
}

// image is the raw image and its compressed files, in one directory.
type image struct {
	dir    string
	size   int64
	sha256 map[string]string // file name → SHA-256 of its bytes
	bytes  map[string]int64  // file name → size
}

func (im image) raw() string                   { return fmt.Sprintf("raw-%d.img", im.size) }
func (im image) file(f format) string          { return im.raw() + "." + f.ext }
func (im image) path(name string) string       { return filepath.Join(im.dir, name) }
func (im image) rawSHA() string                { return im.sha256[im.raw()] }
func (im image) compressedSHA(f format) string { return im.sha256[im.file(f)] }

// makeImage writes the raw image and its compressed files into dir,
// keeping files a previous run left there (xz takes minutes over 1 GiB):
// a file is only used once its SHA-256 is known.
func makeImage(dir string, size int64, logf func(string, ...any)) (image, error) {
	im := image{dir: dir, size: size, sha256: map[string]string{}, bytes: map[string]int64{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return im, err
	}
	if err := im.ensure(im.raw(), logf, func(w io.Writer) error { return writeRawImage(w, size) }); err != nil {
		return im, err
	}
	for _, f := range formats {
		err := im.ensure(im.file(f), logf, func(w io.Writer) error {
			in, err := os.Open(im.path(im.raw()))
			if err != nil {
				return err
			}
			defer in.Close()
			cmd := exec.Command(f.compress[0], f.compress[1:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = in, w, os.Stderr
			return cmd.Run()
		})
		if err != nil {
			return im, fmt.Errorf("%s: %w", strings.Join(f.compress, " "), err)
		}
	}
	return im, nil
}

// ensure makes name with make unless it and its ".sha256" are there, and
// records its SHA-256 and size.
func (im image) ensure(name string, logf func(string, ...any), make func(io.Writer) error) error {
	path := im.path(name)
	if sum, err := os.ReadFile(path + ".sha256"); err == nil {
		if st, err := os.Stat(path); err == nil {
			im.sha256[name], im.bytes[name] = strings.TrimSpace(string(sum)), st.Size()
			return nil
		}
	}
	logf("making %s", path)
	f, err := os.Create(path + ".part")
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if err := make(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := os.Rename(path+".part", path); err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	im.sha256[name], im.bytes[name] = sum, st.Size()
	return os.WriteFile(path+".sha256", []byte(sum+"\n"), 0o644)
}
