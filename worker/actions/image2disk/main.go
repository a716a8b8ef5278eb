// Command image2disk is herd's image2disk action: it streams a raw disk
// image from an HTTP(S) URL straight onto a block device (or a file),
// decompressing gzip, xz or zstd on the way, optionally checks a SHA-256
// checksum of what it downloaded, and prints its progress.
//
// Environment (Tinkerbell hub's names where they exist):
//
//	IMG_URL     the image URL (required)
//	DEST_DISK   the block device or file to write (required), e.g. /dev/sda
//	COMPRESSED  "true": the image is compressed; the format is detected
//	            from its first bytes (gzip, xz, zstd)
//	CHECKSUM    optional SHA-256 of the downloaded bytes, hex, with or
//	            without a "sha256:" prefix; a mismatch fails the action
//	PROGRESS_EVERY  optional interval of progress lines (default 5s)
//	DIRECT_IO   "false": write through the page cache (and fsync at the
//	            end) instead of O_DIRECT (default true; a target that has
//	            no O_DIRECT, such as a file on tmpfs, falls back by itself)
//
// Download, decompression and disk writes run concurrently, as stages
// handing 4 MiB buffers on (pipeline.go); the SHA-256 is taken in the
// download stage, so the check costs no second pass.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := configFrom(os.Getenv)
	if err == nil {
		err = run(ctx, cfg, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image2disk:", err)
		stop()
		os.Exit(1)
	}
}

type config struct {
	url, dest  string
	compressed bool
	checksum   string
	every      time.Duration
	direct     bool
}

func configFrom(getenv func(string) string) (config, error) {
	c := config{url: getenv("IMG_URL"), dest: getenv("DEST_DISK"), every: 5 * time.Second, direct: true}
	if c.url == "" || c.dest == "" {
		return c, errors.New("IMG_URL and DEST_DISK must be set")
	}
	if v := getenv("COMPRESSED"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("COMPRESSED=%q: want true or false", v)
		}
		c.compressed = b
	}
	if v := getenv("CHECKSUM"); v != "" {
		v = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(v), "sha256:"))
		if b, err := hex.DecodeString(v); err != nil || len(b) != sha256.Size {
			return c, fmt.Errorf("CHECKSUM %q: want a SHA-256 in hex", v)
		}
		c.checksum = v
	}
	if v := getenv("DIRECT_IO"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("DIRECT_IO=%q: want true or false", v)
		}
		c.direct = b
	}
	if v := getenv("PROGRESS_EVERY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("PROGRESS_EVERY=%q: want a duration such as 5s", v)
		}
		c.every = d
	}
	return c, nil
}

func run(ctx context.Context, c config, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return fmt.Errorf("IMG_URL %q: %w", c.url, err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: HTTP status %s", c.url, res.Status)
	}
	d, err := openDisk(c.dest, c.direct)
	if err != nil {
		return err
	}
	defer d.f.Close()
	if !c.compressed && d.capacity > 0 && res.ContentLength > d.capacity {
		return d.tooSmall(res.ContentLength)
	}

	var read, written atomic.Int64
	sum := sha256.New()
	downloaded := newStage(4)
	go downloaded.fill(ctx, downloadReader{res.Body}, func(b []byte) {
		sum.Write(b)
		read.Add(int64(len(b)))
	})
	stopProgress := progress(out, c.every, res.ContentLength, &read, &written)
	toDisk, drained := downloaded, make(chan error, 1)
	if c.compressed {
		toDisk = newStage(4)
		go func() { drained <- decompress(ctx, &stageReader{s: downloaded}, toDisk) }()
	} else {
		drained <- nil
	}
	err = writeAll(d, toDisk, &written)
	if err != nil {
		cancel() // stops the other stages
	}
	if derr := <-drained; err == nil {
		err = derr
	}
	stopProgress()
	if err != nil {
		return err
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", c.dest, err)
	}
	got := hex.EncodeToString(sum.Sum(nil))
	fmt.Fprintf(out, "wrote %d bytes to %s from %d bytes downloaded (sha256 %s)\n", written.Load(), c.dest, read.Load(), got)
	if c.checksum != "" && got != c.checksum {
		return fmt.Errorf("checksum mismatch: downloaded sha256 %s, CHECKSUM says %s", got, c.checksum)
	}
	return rereadPartitions(d.f, out)
}

// writeAll writes the stage's buffers to the disk in order until the
// stage ends, giving each buffer back; it returns the first write error,
// or why the stage ended early.
func writeAll(d *disk, s *stage, written *atomic.Int64) error {
	for b := range s.full {
		if err := d.write(b); err != nil {
			// Let the producer run to its end (the caller cancels it).
			go func() {
				for range s.full {
				}
			}()
			return fmt.Errorf("writing %s: %w", d.name, err)
		}
		written.Add(int64(len(b)))
		s.free <- b[:cap(b)]
	}
	return s.err
}

// decompress fills dst with the image src holds compressed, then reads
// what the decoder left of src (trailing padding) so the checksum covers
// the whole download. A failure to decode ends dst with its error.
func decompress(ctx context.Context, src *stageReader, dst *stage) error {
	dec, err := decompressor(src)
	if err != nil {
		dst.err = err
		close(dst.full)
		return nil
	}
	defer dec.Close()
	dst.fill(ctx, dec, nil)
	if dst.err != nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, src); err != nil {
		return err
	}
	return nil
}

// rereadPartitions asks the kernel to read the new partition table of a
// whole disk, so the next action finds /dev/vda2 and friends. Plain files
// (tests, images) have none to read.
func rereadPartitions(f *os.File, out io.Writer) error {
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		return nil
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		// EINVAL: a partition, not a whole disk; nothing to reread.
		if errors.Is(err, unix.EINVAL) {
			return nil
		}
		return fmt.Errorf("re-reading the partition table of %s: %w", f.Name(), err)
	}
	fmt.Fprintf(out, "partition table of %s re-read\n", f.Name())
	return nil
}

// decompressor returns the raw image: r decompressed by the format its
// first bytes announce, with errors that name the format and the cause.
func decompressor(r *stageReader) (*decoder, error) {
	head, err := r.peek(6)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		z, err := gzip.NewReader(r)
		return &decoder{r: z, close: z.Close, format: "gzip"}, decodeError("gzip", err)
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		if head, err := r.peek(xzStreamHeader + 1024); err == nil && xzParallel(head) {
			return &decoder{r: newXZBlocksReader(r), close: func() error { return nil }, format: "xz"}, nil
		}
		x, err := xz.NewReader(r)
		return &decoder{r: x, close: func() error { return nil }, format: "xz"}, decodeError("xz", err)
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		// One goroutine: the stages around it already use the other cores,
		// and the synchronous decoder measured faster here.
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, decodeError("zstd", err)
		}
		return &decoder{r: z, close: func() error { z.Close(); return nil }, format: "zstd"}, nil
	}
	return nil, fmt.Errorf("COMPRESSED=true but the image starts with %x: not gzip, xz or zstd", head)
}

// decoder is a decompressing reader whose errors say what went wrong.
type decoder struct {
	r      io.Reader
	close  func() error
	format string
}

func (d *decoder) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = decodeError(d.format, err)
	}
	return n, err
}

func (d *decoder) Close() error { return d.close() }

// decodeError names the cause of a decoder's failure: the download's own
// failure, a stream that ends early, or bytes that are not valid format.
func decodeError(format string, err error) error {
	var dl downloadError
	switch {
	case err == nil, errors.As(err, &dl):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("the %s image ends early: truncated download or file: %w", format, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("decompressing the %s image: %w", format, err)
}

// downloadReader marks the body's failures as the download's.
type downloadReader struct{ r io.Reader }

func (d downloadReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		err = downloadError{err}
	}
	return n, err
}

// progress prints a line every interval until the returned func is called.
func progress(out io.Writer, every time.Duration, total int64, read, written *atomic.Int64) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r := read.Load()
				line := fmt.Sprintf("downloaded %d", r)
				if total > 0 {
					line += fmt.Sprintf(" of %d bytes (%d%%)", total, r*100/total)
				} else {
					line += " bytes"
				}
				secs := time.Since(start).Seconds()
				fmt.Fprintf(out, "%s, wrote %d bytes, %.1f MB/s\n", line, written.Load(), float64(written.Load())/secs/1e6)
			}
		}
	}()
	return func() { close(done); <-stopped }
}
