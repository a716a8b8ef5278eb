package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// serve starts the server on a loopback port over a temp dir holding
// ipxe.efi (random, 300 KiB: many blocks) and snponly.efi, with a secret
// file beside the dir and a symlink to it inside.
func serve(t *testing.T) (addr string, dir string, files map[string][]byte) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "ipxe")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files = map[string][]byte{"ipxe.efi": make([]byte, 300<<10), "snponly.efi": []byte("snp binary"), "undionly.kpxe": make([]byte, 1024)}
	for name, b := range files {
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(base, "secret"), []byte("secret"), 0o600)
	os.Symlink(filepath.Join(base, "secret"), filepath.Join(dir, "link"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)

	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(d, slog.New(slog.NewTextHandler(io.Discard, nil)), nil).Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Error("tftp server did not stop")
		}
		d.Close()
	})
	return conn.LocalAddr().String(), dir, files
}

func TestOpenRefuses(t *testing.T) {
	_, dir, _ := serve(t)
	d, _ := OpenDir(dir)
	defer d.Close()
	for _, name := range []string{"../secret", "/../secret", "sub", "sub/x", ".", "", "..", "nope.efi", "ipxe.efi\x00", `..\secret`, ".hidden"} {
		if f, _, err := d.Open(name); err == nil {
			f.Close()
			t.Errorf("Open(%q) succeeded", name)
		}
	}
	// "link" is a symlink the operator placed in the directory: followed.
	for _, name := range []string{"ipxe.efi", "/ipxe.efi", "snp.efi", "link"} {
		f, _, err := d.Open(name)
		if err != nil {
			t.Errorf("Open(%q): %v", name, err)
			continue
		}
		f.Close()
	}
}

// TestNegotiation uses pin/tftp's client to check blksize and tsize.
func TestNegotiation(t *testing.T) {
	addr, _, files := serve(t)
	for _, blksize := range []int{512, 1456, 8192} {
		c, err := tftp.NewClient(addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetBlockSize(blksize)
		c.RequestTSize(true)
		wt, err := c.Receive("ipxe.efi", "octet")
		if err != nil {
			t.Fatal(err)
		}
		size, ok := wt.(tftp.IncomingTransfer).Size()
		if !ok || size != int64(len(files["ipxe.efi"])) {
			t.Errorf("blksize %d: tsize = %d, %v; want %d", blksize, size, ok, len(files["ipxe.efi"]))
		}
		var b bytes.Buffer
		if _, err := wt.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), files["ipxe.efi"]) {
			t.Errorf("blksize %d: content differs", blksize)
		}
	}
	c, _ := tftp.NewClient(addr)
	if _, err := c.Receive("../secret", "octet"); err == nil {
		t.Error("traversal served")
	}
	if _, err := c.Send("upload", "octet"); err == nil {
		t.Error("write accepted")
	}
}

// TestTFTPHPAClient fetches with the tftp-hpa client.
func TestTFTPHPAClient(t *testing.T) {
	bin := realtest.Command(t, "tftp")
	addr, _, files := serve(t)
	host, port, _ := net.SplitHostPort(addr)
	out := t.TempDir()
	get := func(remote, local string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-4", "-m", "binary", host, port, "-c", "get", remote, local)
		cmd.Dir = out
		msg, err := cmd.CombinedOutput()
		if err == nil && bytes.Contains(msg, []byte("Error")) {
			err = &exec.ExitError{}
		}
		if err != nil {
			return msg, err
		}
		b, err := os.ReadFile(filepath.Join(out, local))
		return b, err
	}
	for remote, want := range map[string][]byte{"ipxe.efi": files["ipxe.efi"], "snp.efi": files["snponly.efi"], "undionly.kpxe": files["undionly.kpxe"]} {
		b, err := get(remote, "got-"+remote)
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("get %s: %v %q (%d bytes, want %d)", remote, err, b[:min(len(b), 80)], len(b), len(want))
		}
	}
	for i, remote := range []string{"../secret", "sub", "nope.efi"} {
		local := "refused-" + strconv.Itoa(i)
		msg, err := get(remote, local)
		if err == nil && !bytes.Contains(msg, []byte("rror")) {
			t.Errorf("get %s: served (%s)", remote, msg)
		}
		if b, _ := os.ReadFile(filepath.Join(out, local)); len(b) > 0 {
			t.Errorf("get %s: got %d bytes", remote, len(b))
		}
	}
}
