package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func compress(t *testing.T, format string, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch format {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "xz":
		w, err = xz.NewWriter(&buf)
	case "zstd":
		w, err = zstd.NewWriter(&buf)
	default:
		return raw
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestImage2Disk(t *testing.T) {
	raw := make([]byte, 3<<20+17)
	rand.Read(raw[:1<<20]) // part random, part zeros: like a disk image
	want := sha256.Sum256(raw)
	for _, format := range []string{"raw", "gzip", "xz", "zstd"} {
		t.Run(format, func(t *testing.T) {
			body := compress(t, format, raw)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/disk.img" {
					http.NotFound(w, r)
					return
				}
				w.Write(body)
			}))
			defer srv.Close()
			sum := sha256.Sum256(body)
			dest := filepath.Join(t.TempDir(), "disk")
			// A file longer than the image: the action truncates plain files.
			os.WriteFile(dest, bytes.Repeat([]byte{1}, 5<<20), 0o644)
			env := map[string]string{"IMG_URL": srv.URL + "/disk.img", "DEST_DISK": dest,
				"COMPRESSED": map[bool]string{true: "true", false: "false"}[format != "raw"],
				"CHECKSUM":   "sha256:" + hex.EncodeToString(sum[:])}
			c, err := configFrom(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			c.every = time.Millisecond
			var out bytes.Buffer
			if err := run(context.Background(), c, &out); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			got, _ := os.ReadFile(dest)
			if sha256.Sum256(got) != want {
				t.Errorf("the disk holds %d bytes that differ from the image", len(got))
			}
			if !strings.Contains(out.String(), "wrote 3145745 bytes") {
				t.Errorf("output %q", out.String())
			}
		})
	}
}

func TestImage2DiskFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/broken":
			http.Error(w, "disk on fire", http.StatusInternalServerError)
		default:
			w.Write([]byte("plain bytes"))
		}
	}))
	defer srv.Close()
	dest := filepath.Join(t.TempDir(), "disk")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"missing image", map[string]string{"IMG_URL": srv.URL + "/missing"}, "404"},
		{"server error", map[string]string{"IMG_URL": srv.URL + "/broken"}, "HTTP status 500 Internal Server Error"},
		{"wrong checksum", map[string]string{"IMG_URL": srv.URL + "/x", "CHECKSUM": strings.Repeat("ab", 32)}, "checksum mismatch"},
		{"not compressed", map[string]string{"IMG_URL": srv.URL + "/x", "COMPRESSED": "true"}, "not gzip, xz or zstd"},
		{"no server", map[string]string{"IMG_URL": "http://127.0.0.1:1/x"}, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.env["DEST_DISK"] = dest
			c, err := configFrom(func(k string) string { return tc.env[k] })
			if err == nil {
				err = run(context.Background(), c, io.Discard)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	for _, env := range []map[string]string{{}, {"IMG_URL": "x"}, {"IMG_URL": "x", "DEST_DISK": "y", "CHECKSUM": "nothex"}, {"IMG_URL": "x", "DEST_DISK": "y", "COMPRESSED": "maybe"}, {"IMG_URL": "x", "DEST_DISK": "y", "DIRECT_IO": "often"}} {
		if _, err := configFrom(func(k string) string { return env[k] }); err == nil {
			t.Errorf("config %v accepted", env)
		}
	}
}

// serve answers /disk.img with body; with cut > 0 it announces the whole
// length but sends only cut bytes, as a server that dies mid-download.
func serve(t *testing.T, body []byte, cut int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cut > 0 {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write(body[:cut])
			return
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/disk.img"
}

func runEnv(t *testing.T, env map[string]string) (string, error) {
	t.Helper()
	c, err := configFrom(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = run(context.Background(), c, &out)
	return out.String(), err
}

// testImage is 3 MiB + 17 bytes, part random: not a multiple of any
// sector size, so the O_DIRECT path writes an unaligned tail.
func testImage() []byte {
	raw := make([]byte, 3<<20+17)
	rand.Read(raw[:1<<20])
	return raw
}

func TestTruncatedImage(t *testing.T) {
	raw := testImage()
	for _, tc := range []struct{ format, want string }{
		{"gzip", "the gzip image ends early"},
		{"xz", "the xz image ends early"},
		{"zstd", "the zstd image ends early"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			// The whole of a file that is itself cut short.
			body := compress(t, tc.format, raw)
			body = body[:len(body)/2]
			_, err := runEnv(t, map[string]string{"IMG_URL": serve(t, body, 0), "DEST_DISK": filepath.Join(t.TempDir(), "disk"), "COMPRESSED": "true"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	for _, format := range []string{"raw", "zstd"} {
		t.Run("connection lost/"+format, func(t *testing.T) {
			body := compress(t, format, raw)
			env := map[string]string{"IMG_URL": serve(t, body, len(body)/2), "DEST_DISK": filepath.Join(t.TempDir(), "disk"),
				"COMPRESSED": strconv.FormatBool(format != "raw")}
			_, err := runEnv(t, env)
			if err == nil || !strings.Contains(err.Error(), "download: unexpected EOF") {
				t.Errorf("err = %v, want the download's unexpected EOF", err)
			}
		})
	}
}

// loopDevice attaches a file of size bytes to a loop device, detached at
// the end of the test.
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	if _, err := exec.LookPath("losetup"); err != nil || os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("a loop device needs losetup (mount) and root: %v", err)
		}
		t.Skip("a loop device needs losetup and root")
	}
	file := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	return dev
}

// TestBlockDevice writes to a real block device, with O_DIRECT and
// without, an image whose size is not a multiple of the sector size.
func TestBlockDevice(t *testing.T) {
	raw := testImage()
	dev := loopDevice(t, 4<<20)
	for _, tc := range []struct{ format, direct string }{{"raw", "true"}, {"zstd", "true"}, {"gzip", "false"}} {
		t.Run(tc.format+"/DIRECT_IO="+tc.direct, func(t *testing.T) {
			// Stale bytes where the image goes: they must all be replaced.
			if err := os.WriteFile(dev, bytes.Repeat([]byte{0xee}, 4<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := runEnv(t, map[string]string{"IMG_URL": serve(t, compress(t, tc.format, raw), 0), "DEST_DISK": dev,
				"COMPRESSED": strconv.FormatBool(tc.format != "raw"), "DIRECT_IO": tc.direct})
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			f, err := os.Open(dev)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := make([]byte, 4<<20)
			if _, err := io.ReadFull(f, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:len(raw)], raw) {
				t.Error("the device does not hold the image")
			}
			if !bytes.Equal(got[len(raw):], bytes.Repeat([]byte{0xee}, len(got)-len(raw))) {
				t.Error("bytes past the image's end changed")
			}
		})
	}
}

func TestDiskTooSmall(t *testing.T) {
	raw := testImage()
	dev := loopDevice(t, 2<<20)
	for _, format := range []string{"raw", "gzip", "xz", "zstd"} {
		t.Run(format, func(t *testing.T) {
			_, err := runEnv(t, map[string]string{"IMG_URL": serve(t, compress(t, format, raw), 0), "DEST_DISK": dev,
				"COMPRESSED": strconv.FormatBool(format != "raw")})
			want := "the image is larger than DEST_DISK " + dev + ": it holds 2097152 bytes"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want %q", err, want)
			}
		})
	}
}

// xzTool compresses raw with Debian's xz and args (-T2 --block-size:
// blocks with their sizes in their headers, decoded concurrently).
func xzTool(t *testing.T, raw []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("xz missing (xz-utils): %v", err)
		}
		t.Skipf("xz missing: %v", err)
	}
	cmd := exec.Command("xz", append([]string{"-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

func TestXZBlocks(t *testing.T) {
	raw := testImage()
	multi := xzTool(t, raw, "-T2", "--block-size=1MiB")
	if !xzParallel(multi[:min(len(multi), 2048)]) {
		t.Fatal("xz -T2 output not taken for concurrent decoding")
	}
	if single := xzTool(t, raw, "-T1"); xzParallel(single) {
		t.Fatal("single-threaded xz output (no sizes in its block header) taken for concurrent decoding")
	}
	// Two streams one after the other, with stream padding between.
	second := xzTool(t, raw[:1<<20+5], "-T2", "--block-size=300KiB", "--check=sha256")
	twoStreams := append(append(append([]byte{}, multi...), 0, 0, 0, 0), second...)
	corrupt := bytes.Clone(multi)
	corrupt[len(corrupt)/3] ^= 0x40
	for _, tc := range []struct {
		name      string
		body      []byte
		want      []byte
		wantError string
	}{
		{"blocks", multi, raw, ""},
		{"two streams", twoStreams, append(bytes.Clone(raw), raw[:1<<20+5]...), ""},
		{"corrupt", corrupt, nil, "decompressing the xz image"},
		{"truncated", multi[:len(multi)-100], nil, "the xz image ends early"},
		{"no index", multi[:len(multi)/2], nil, "the xz image ends early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "disk")
			out, err := runEnv(t, map[string]string{"IMG_URL": serve(t, tc.body, 0), "DEST_DISK": dest, "COMPRESSED": "true"})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("err = %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got, _ := os.ReadFile(dest); !bytes.Equal(got, tc.want) {
				t.Errorf("the disk holds %d bytes that differ from the image's %d", len(got), len(tc.want))
			}
		})
	}
}
