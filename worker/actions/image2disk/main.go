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
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
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
}

func configFrom(getenv func(string) string) (config, error) {
	c := config{url: getenv("IMG_URL"), dest: getenv("DEST_DISK"), every: 5 * time.Second}
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
	// Block devices exist; a plain file (tests, images) may not yet.
	f, err := os.OpenFile(c.dest, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("DEST_DISK: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("DEST_DISK: %w", err)
		}
	}

	var read, written atomic.Int64
	sum := sha256.New()
	body := io.TeeReader(&counter{r: res.Body, n: &read}, sum)
	src, err := decompressor(body, c.compressed)
	if err != nil {
		return err
	}
	stopProgress := progress(out, c.every, res.ContentLength, &read, &written)
	_, err = io.Copy(&counterW{w: f, n: &written}, src)
	stopProgress()
	if err != nil {
		return fmt.Errorf("writing %s: %w", c.dest, err)
	}
	// Drain what the decompressor left (trailing padding) so the checksum
	// covers the whole download.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", c.dest, err)
	}
	got := hex.EncodeToString(sum.Sum(nil))
	fmt.Fprintf(out, "wrote %d bytes to %s from %d bytes downloaded (sha256 %s)\n", written.Load(), c.dest, read.Load(), got)
	if c.checksum != "" && got != c.checksum {
		return fmt.Errorf("checksum mismatch: downloaded sha256 %s, CHECKSUM says %s", got, c.checksum)
	}
	return rereadPartitions(f, out)
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

// decompressor returns the raw image: r itself, or r decompressed by the
// format its first bytes announce.
func decompressor(r io.Reader, compressed bool) (io.Reader, error) {
	if !compressed {
		return r, nil
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return xz.NewReader(br)
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("COMPRESSED=true but the image starts with %x: not gzip, xz or zstd", head)
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

type counter struct {
	r io.Reader
	n *atomic.Int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type counterW struct {
	w io.Writer
	n *atomic.Int64
}

func (c *counterW) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
