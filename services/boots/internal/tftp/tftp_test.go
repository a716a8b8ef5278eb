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
	"strings"
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
	files = map[string][]byte{"ipxe.efi": make([]byte, 300<<10), "snponly.efi": []byte("snp binary"), "undionly.kpxe": make([]byte, 1024)}
	addr, dir = serveFiles(t, files)
	return addr, dir, files
}

// serveFiles fills files with random bytes and serves them.
func serveFiles(t *testing.T, files map[string][]byte, tune ...func(*Server)) (addr string, dir string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "ipxe")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
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
	srv := New(d, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for _, f := range tune {
		f(srv)
	}
	go func() { done <- srv.Serve(ctx, conn) }()
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
	return conn.LocalAddr().String(), dir
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

// TestWindowsize reads with the package's client: what is granted, the
// content, and recovery from lost blocks (in a window's middle and at its
// start, where only the timeout helps).
func TestWindowsize(t *testing.T) {
	addr, _, files := serve(t)
	server, _ := net.ResolveUDPAddr("udp4", addr)
	want := files["ipxe.efi"]
	for _, tc := range []struct {
		name                string
		c                   Client
		blksize, windowsize int
		lost                []int64
	}{
		{"lock step", Client{Blksize: 1468}, 1468, 1, nil},
		{"window 16", Client{Blksize: 1468, Windowsize: 16}, 1468, 16, nil},
		{"window clamped", Client{Blksize: 1468, Windowsize: 65535}, 1468, 64, nil},
		{"only windowsize", Client{Windowsize: 4}, 512, 4, nil},
		{"loss", Client{Blksize: 1468, Windowsize: 8, Timeout: 200 * time.Millisecond}, 1468, 8, []int64{3, 9, 17, 18, 209}},
		{"loss lock step", Client{Blksize: 1468, Timeout: 200 * time.Millisecond}, 1468, 1, []int64{1, 2, 100}},
	} {
		lost := map[int64]bool{}
		for _, b := range tc.lost {
			lost[b] = true
		}
		c := tc.c
		c.lose = func(b int64) bool {
			if lost[b] {
				delete(lost, b) // lost once, the resent block arrives
				return true
			}
			return false
		}
		var b bytes.Buffer
		got, err := c.Get(context.Background(), server, "ipxe.efi", &b)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got.Blksize != tc.blksize || got.Windowsize != tc.windowsize || got.Bytes != int64(len(want)) || !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s: granted %d × %d, %d bytes (equal %v); want %d × %d, %d bytes", tc.name, got.Blksize, got.Windowsize, got.Bytes, bytes.Equal(b.Bytes(), want), tc.blksize, tc.windowsize, len(want))
		}
		if len(lost) > 0 {
			t.Errorf("%s: blocks %v never arrived", tc.name, lost)
		}
	}
}

// TestBlockRollover reads a file of more than 65535 blocks: block numbers
// roll over to 0, and a file of a whole number of blocks ends with an
// empty one.
func TestBlockRollover(t *testing.T) {
	files := map[string][]byte{"big.img": make([]byte, 70000*512)}
	// Generous timers on both sides: this test is about block numbers past
	// 65535, and on a loaded machine (make test beside other work) a
	// starved process must not end the transfer (1 s x 6 did once).
	addr, _ := serveFiles(t, files, func(s *Server) { s.timeout = 5 * time.Second })
	server, _ := net.ResolveUDPAddr("udp4", addr)
	var b bytes.Buffer
	got, err := Client{Windowsize: 64, Timeout: 5 * time.Second}.Get(context.Background(), server, "big.img", &b)
	if err != nil || got.Bytes != int64(len(files["big.img"])) || !bytes.Equal(b.Bytes(), files["big.img"]) {
		t.Fatalf("got %d bytes, %v; want %d", got.Bytes, err, len(files["big.img"]))
	}
}

// TestHostileRequests sends raw requests a hostile client could: each is
// clamped or refused with the right packet, and the server keeps serving.
func TestHostileRequests(t *testing.T) {
	addr, _, files := serve(t)
	server, _ := net.ResolveUDPAddr("udp4", addr)
	conn := rawSocket(t)
	ask := func(pkt string) string { return rawAsk(conn, server, pkt) }
	rrq := func(name, mode string, opts ...string) string {
		return "\x00\x01" + name + "\x00" + mode + "\x00" + strings.Join(append(opts, ""), "\x00")
	}
	for _, tc := range []struct{ name, pkt, want string }{
		// Loopback's MTU is 65536: blksize 65464 fits, the window shrinks to 128 KiB.
		{"largest", rrq("ipxe.efi", "octet", "blksize", "65464", "windowsize", "65535", "tsize", "0"), "\x00\x06blksize\x0065464\x00windowsize\x002\x00tsize\x00307200\x00"},
		{"blksize 8", rrq("ipxe.efi", "octet", "blksize", "8"), "\x00\x05\x00\x08option blksize 8: below 512, the smallest block this server sends\x00"},
		{"windowsize 0", rrq("ipxe.efi", "octet", "windowsize", "0"), "\x00\x05\x00\x08option windowsize 0: outside 1..65535 (RFC 7440)\x00"},
		{"blksize not a number", rrq("ipxe.efi", "octet", "blksize", "1e3"), "\x00\x05\x00\x08option blksize \"1e3\": not a decimal number\x00"},
		{"netascii", rrq("ipxe.efi", "netascii"), "\x00\x05\x00\x04mode \"netascii\" not served: boot files are binary, ask octet\x00"},
		{"traversal", rrq("../secret", "octet"), "\x00\x05\x00\x01\"../secret\": no such boot file\x00"},
		{"unterminated", "\x00\x01ipxe.efi\x00octet", "\x00\x05\x00\x04malformed request: not NUL-terminated\x00"},
		{"write", "\x00\x02up\x00octet\x00", "\x00\x05\x00\x02read-only server: write requests are refused\x00"},
	} {
		if got := ask(tc.pkt); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	var b bytes.Buffer
	if _, err := (Client{Blksize: 1468, Windowsize: 8}).Get(context.Background(), server, "ipxe.efi", &b); err != nil || !bytes.Equal(b.Bytes(), files["ipxe.efi"]) {
		t.Errorf("after the hostile requests: %v", err)
	}
}

// TestATFTPWindowsize fetches with atftp, a real client that asks
// windowsize (RFC 7440) and reports the OACK in its trace.
func TestATFTPWindowsize(t *testing.T) {
	bin := realtest.Command(t, "atftp")
	addr, _, files := serve(t)
	host, port, _ := net.SplitHostPort(addr)
	out := t.TempDir()
	for _, w := range []string{"1", "8", "65535"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		local := filepath.Join(out, "ipxe.efi."+w)
		msg, err := exec.CommandContext(ctx, bin, "--trace", "--option", "windowsize "+w, "--option", "blksize 1468",
			"--get", "-r", "ipxe.efi", "-l", local, host, port).CombinedOutput()
		cancel()
		granted := map[string]string{"65535": "64"}[w]
		if granted == "" {
			granted = w
		}
		if err != nil || !bytes.Contains(msg, []byte("received OACK <windowsize: "+granted+", blksize: 1468,")) {
			t.Errorf("windowsize %s: %v\n%s", w, err, msg[:min(len(msg), 2000)])
			continue
		}
		if b, err := os.ReadFile(local); err != nil || !bytes.Equal(b, files["ipxe.efi"]) {
			t.Errorf("windowsize %s: content differs (%d bytes, %v)", w, len(b), err)
		}
	}
}

// TestCacheFollowsChanges replaces a served file, with another size and
// then with the same size: each read gets what is on disk.
func TestCacheFollowsChanges(t *testing.T) {
	addr, dir, files := serve(t)
	server, _ := net.ResolveUDPAddr("udp4", addr)
	path := filepath.Join(dir, "undionly.kpxe")
	get := func() []byte {
		var b bytes.Buffer
		if _, err := (Client{Blksize: 1468}).Get(context.Background(), server, "undionly.kpxe", &b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	if !bytes.Equal(get(), files["undionly.kpxe"]) {
		t.Fatal("first read differs")
	}
	for i, next := range [][]byte{bytes.Repeat([]byte("a"), 5000), bytes.Repeat([]byte("b"), 5000)} {
		if err := os.WriteFile(path, next, 0o644); err != nil {
			t.Fatal(err)
		}
		// A later modification time, as a real replacement has.
		mod := time.Now().Add(time.Duration(i+1) * time.Second)
		os.Chtimes(path, mod, mod)
		if got := get(); !bytes.Equal(got, next) {
			t.Errorf("after change %d: got %q…, want %q…", i+1, got[:min(len(got), 8)], next[:8])
		}
	}
}

// rawSocket is an unconnected client socket: replies come from each
// transfer's own port.
func rawSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawAsk sends pkt to server and returns the first reply (or the error).
func rawAsk(c *net.UDPConn, server *net.UDPAddr, pkt string) string {
	c.WriteToUDP([]byte(pkt), server)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 70000)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return err.Error()
	}
	return string(buf[:n])
}
