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
	"path/filepath"
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
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("plain bytes"))
	}))
	defer srv.Close()
	dest := filepath.Join(t.TempDir(), "disk")
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"missing image", map[string]string{"IMG_URL": srv.URL + "/missing"}, "404"},
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
	for _, env := range []map[string]string{{}, {"IMG_URL": "x"}, {"IMG_URL": "x", "DEST_DISK": "y", "CHECKSUM": "nothex"}, {"IMG_URL": "x", "DEST_DISK": "y", "COMPRESSED": "maybe"}} {
		if _, err := configFrom(func(k string) string { return env[k] }); err == nil {
			t.Errorf("config %v accepted", env)
		}
	}
}
