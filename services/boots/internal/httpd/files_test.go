package httpd

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herd-metal/herd/pkg/observe"
)

// fileLab is herd-boots' HTTP side as herd-boots serves it: its handler
// behind DefaultLimits' server and the per-source listener, on loopback,
// with an OSIE directory and a file outside it.
type fileLab struct {
	addr, osie, outside string
	data                []byte
}

func newFileLab(t *testing.T) *fileLab {
	t.Helper()
	top := t.TempDir()
	l := &fileLab{osie: filepath.Join(top, "osie"), outside: filepath.Join(top, "secret"), data: make([]byte, 3*downloadChunk+4321)}
	for i := range l.data {
		l.data[i] = byte(i*7 + i>>11)
	}
	os.MkdirAll(filepath.Join(l.osie, "sub"), 0o755)
	os.WriteFile(filepath.Join(l.osie, "initramfs"), l.data, 0o644)
	os.WriteFile(filepath.Join(l.osie, "sub", "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(l.osie, ".hidden"), []byte("hidden"), 0o644)
	os.WriteFile(l.outside, []byte("outside the osie directory"), 0o644)
	os.Symlink(l.outside, filepath.Join(l.osie, "link-out"))
	os.Symlink("sub/vmlinuz", filepath.Join(l.osie, "link-in"))
	s := newServerWith(t, observe.NewRegistry(), func(c *Config) { c.OSIEDir, c.WriteTimeout = l.osie, time.Second })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := DefaultLimits.Server(s)
	go srv.Serve(LimitListener(ln, DefaultLimits.PerSource, slog.New(slog.NewTextHandler(io.Discard, nil)), observe.NewRegistry()))
	t.Cleanup(func() { srv.Close() })
	l.addr = ln.Addr().String()
	return l
}

// do sends method path with headers as they are written (no client-side
// path cleaning) and returns the response with its body read.
func (l *fileLab) do(t *testing.T, method, path string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := method + " " + path + " HTTP/1.1\r\nHost: boots\r\nConnection: close\r\n"
	for i := 0; i+1 < len(headers); i += 2 {
		req += headers[i] + ": " + headers[i+1] + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return res, b
}

// TestFileRanges: whole files, HEAD, single, open-ended and suffix
// ranges, a range past the end (416), multiple ranges (multipart) and
// too many of them (the whole file), and If-Range.
func TestFileRanges(t *testing.T) {
	l := newFileLab(t)
	size := len(l.data)
	whole, b := l.do(t, "GET", "/osie/initramfs")
	if whole.StatusCode != 200 || !bytes.Equal(b, l.data) || whole.ContentLength != int64(size) || whole.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("whole: %s, %d bytes, Content-Length %d, Accept-Ranges %q", whole.Status, len(b), whole.ContentLength, whole.Header.Get("Accept-Ranges"))
	}
	tag := whole.Header.Get("ETag")
	if !strings.HasPrefix(tag, `"`) {
		t.Fatalf("ETag %q: want a strong one", tag)
	}
	modified := whole.Header.Get("Last-Modified")
	head, b := l.do(t, "HEAD", "/osie/initramfs")
	if head.StatusCode != 200 || len(b) != 0 || head.Header.Get("Content-Length") != strconv.Itoa(size) || head.Header.Get("ETag") != tag {
		t.Fatalf("HEAD: %s, body %d bytes, Content-Length %q, ETag %q", head.Status, len(b), head.Header.Get("Content-Length"), head.Header.Get("ETag"))
	}
	old := strings.Replace(tag, "-", "-0", 1)
	for _, tt := range []struct {
		name    string
		headers []string
		code    int
		body    []byte // nil: not checked
		crange  string
	}{
		{"single range", []string{"Range", "bytes=10-19"}, 206, l.data[10:20], "bytes 10-19/" + strconv.Itoa(size)},
		{"range across chunks", []string{"Range", "bytes=100-" + strconv.Itoa(2*downloadChunk+99)}, 206, l.data[100 : 2*downloadChunk+100], ""},
		{"open-ended range", []string{"Range", "bytes=" + strconv.Itoa(size-5) + "-"}, 206, l.data[size-5:], ""},
		{"suffix range", []string{"Range", "bytes=-100"}, 206, l.data[size-100:], "bytes " + strconv.Itoa(size-100) + "-" + strconv.Itoa(size-1) + "/" + strconv.Itoa(size)},
		{"suffix range longer than the file", []string{"Range", "bytes=-" + strconv.Itoa(10*size)}, 206, l.data, ""},
		{"range ending past the end", []string{"Range", "bytes=" + strconv.Itoa(size-3) + "-" + strconv.Itoa(size+1000)}, 206, l.data[size-3:], ""},
		{"range starting past the end", []string{"Range", "bytes=" + strconv.Itoa(size) + "-"}, 416, nil, "bytes */" + strconv.Itoa(size)},
		{"malformed range", []string{"Range", "bytes=9-2"}, 416, nil, ""},
		{"too many ranges: the whole file", []string{"Range", "bytes=" + strings.Repeat("0-0,", maxRanges) + "1-1"}, 200, l.data, ""},
		{"If-Range with the current ETag", []string{"Range", "bytes=0-9", "If-Range", tag}, 206, l.data[:10], ""},
		{"If-Range with another ETag: the whole file", []string{"Range", "bytes=0-9", "If-Range", old}, 200, l.data, ""},
		{"If-Range with the modification time", []string{"Range", "bytes=0-9", "If-Range", modified}, 206, l.data[:10], ""},
		{"If-Range with an older time: the whole file", []string{"Range", "bytes=0-9", "If-Range", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, l.data, ""},
		{"HEAD of a range", []string{"Range", "bytes=0-9"}, 206, nil, "bytes 0-9/" + strconv.Itoa(size)},
	} {
		method := "GET"
		if strings.HasPrefix(tt.name, "HEAD") {
			method = "HEAD"
		}
		res, b := l.do(t, method, "/osie/initramfs", tt.headers...)
		if res.StatusCode != tt.code || (tt.body != nil && !bytes.Equal(b, tt.body)) || (tt.crange != "" && res.Header.Get("Content-Range") != tt.crange) {
			t.Errorf("%s: %s, %d bytes, Content-Range %q; want %d, %d bytes, %q", tt.name, res.Status, len(b), res.Header.Get("Content-Range"), tt.code, len(tt.body), tt.crange)
		}
	}

	res, b := l.do(t, "GET", "/osie/initramfs", "Range", "bytes=0-9,"+strconv.Itoa(2*downloadChunk)+"-"+strconv.Itoa(2*downloadChunk+9))
	mt, params, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if res.StatusCode != 206 || mt != "multipart/byteranges" {
		t.Fatalf("two ranges: %s, %s", res.Status, res.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(bytes.NewReader(b), params["boundary"])
	for _, want := range [][]byte{l.data[:10], l.data[2*downloadChunk : 2*downloadChunk+10]} {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("two ranges: %v", err)
		}
		got, _ := io.ReadAll(p)
		if !bytes.Equal(got, want) {
			t.Errorf("two ranges: part %q: %x, want %x", p.Header.Get("Content-Range"), got, want)
		}
	}
}

// TestFileConditional: If-None-Match and If-Modified-Since answer 304 for
// the file as it is, and the ETag changes when the file is rewritten or
// replaced by another of the same size and time.
func TestFileConditional(t *testing.T) {
	l := newFileLab(t)
	res, _ := l.do(t, "HEAD", "/osie/initramfs")
	tag, modified := res.Header.Get("ETag"), res.Header.Get("Last-Modified")
	for _, tt := range []struct {
		name    string
		headers []string
		code    int
	}{
		{"If-None-Match, current", []string{"If-None-Match", tag}, 304},
		{"If-None-Match, one of several", []string{"If-None-Match", `"x", ` + tag}, 304},
		{"If-None-Match, *", []string{"If-None-Match", "*"}, 304},
		{"If-None-Match, another", []string{"If-None-Match", `"x"`}, 200},
		{"If-Modified-Since, its time", []string{"If-Modified-Since", modified}, 304},
		{"If-Modified-Since, earlier", []string{"If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200},
		{"If-None-Match wins over If-Modified-Since", []string{"If-None-Match", `"x"`, "If-Modified-Since", modified}, 200},
	} {
		res, b := l.do(t, "GET", "/osie/initramfs", tt.headers...)
		if res.StatusCode != tt.code || (tt.code == 304 && len(b) != 0) {
			t.Errorf("%s: %s, %d bytes; want %d", tt.name, res.Status, len(b), tt.code)
		}
	}

	path := filepath.Join(l.osie, "initramfs")
	st, _ := os.Stat(path)
	later := st.ModTime().Add(time.Second)
	os.WriteFile(path, bytes.ToUpper(l.data), 0o644) // same size
	os.Chtimes(path, later, later)
	res, _ = l.do(t, "GET", "/osie/initramfs", "If-None-Match", tag)
	rewritten := res.Header.Get("ETag")
	if res.StatusCode != 200 || rewritten == tag {
		t.Fatalf("rewritten: %s, ETag %q (was %q)", res.Status, rewritten, tag)
	}
	// Replaced by a rename, with the same size and time: another inode.
	next := filepath.Join(l.osie, "next")
	os.WriteFile(next, l.data, 0o644)
	os.Chtimes(next, later, later)
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	res, _ = l.do(t, "GET", "/osie/initramfs", "If-None-Match", rewritten)
	if res.StatusCode != 200 || res.Header.Get("ETag") == rewritten {
		t.Fatalf("replaced: %s, ETag %q (was %q)", res.Status, res.Header.Get("ETag"), rewritten)
	}
}

// TestFileEscapes: names that leave the OSIE directory (dot-dot, encoded
// or not, a symlink pointing out), hidden files and directories are
// refused; a symlink inside it is served.
func TestFileEscapes(t *testing.T) {
	l := newFileLab(t)
	for _, path := range []string{
		"/osie/../secret", "/osie/..%2fsecret", "/osie/sub/..%2f..%2fsecret", "/osie/%2e%2e/secret", "/osie/sub/../../secret",
		"/osie/link-out", "/osie/.hidden", "/osie/sub", "/osie/sub/", "/osie/", "/osie/initramfs%00", "/osie/sub%5c..%5c..%5csecret",
		"/osie//etc/passwd", "/osie/missing",
	} {
		for _, method := range []string{"GET", "HEAD"} {
			res, b := l.do(t, method, path)
			if res.StatusCode < 300 || bytes.Contains(b, []byte("outside")) || bytes.Contains(b, []byte("hidden")) {
				t.Errorf("%s %s: %s %q; want it refused", method, path, res.Status, b)
			}
		}
	}
	if res, b := l.do(t, "GET", "/osie/link-in"); res.StatusCode != 200 || string(b) != "kernel" {
		t.Errorf("symlink inside: %s %q", res.Status, b)
	}
	if res, b := l.do(t, "GET", "/osie/sub/vmlinuz"); res.StatusCode != 200 || string(b) != "kernel" || res.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("file in a subdirectory: %s %q %s", res.Status, b, res.Header.Get("Content-Type"))
	}
	// /ipxe/ answers the same way.
	res, b := l.do(t, "GET", "/ipxe/ipxe.efi", "Range", "bytes=-6")
	if res.StatusCode != 206 || string(b) != "binary" || res.Header.Get("ETag") == "" {
		t.Errorf("/ipxe/ range: %s %q, ETag %q", res.Status, b, res.Header.Get("ETag"))
	}
}

func TestFileName(t *testing.T) {
	for name, want := range map[string]bool{
		"vmlinuz": true, "x86_64/initramfs": true, "a.b-c_d": true,
		"": false, ".": false, "..": false, "../x": false, "a/../b": false, "a/./b": false, "/abs": false, "a//b": false,
		".hidden": false, "a/.git/x": false, "a\\b": false, "a\x00": false, "a/": false,
	} {
		if got := fileName(name); got != want {
			t.Errorf("fileName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestETag(t *testing.T) {
	t0 := time.Unix(1700000000, 5)
	base := etag(100, t0, 7)
	for _, tt := range []struct {
		name string
		tag  string
	}{
		{"other size", etag(101, t0, 7)},
		{"other time", etag(100, t0.Add(time.Nanosecond), 7)},
		{"other inode", etag(100, t0, 8)},
	} {
		if tt.tag == base {
			t.Errorf("%s: %s, same as %s", tt.name, tt.tag, base)
		}
	}
	if etag(100, t0, 7) != base || !strings.HasPrefix(base, `"`) || !strings.HasSuffix(base, `"`) {
		t.Errorf("etag %s: want the same strong tag for the same file", base)
	}
}

// TestDownloadTuning: after a download over plain TCP, the server's side
// of the connection bounds its unsent bytes (TCP_NOTSENT_LOWAT) and is no
// longer corked (a corked keep-alive connection would hold the next
// response's last bytes back).
func TestDownloadTuning(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), make([]byte, 1<<20), 0o644)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	conns := make(chan net.Conn, 1)
	srv := DefaultLimits.Server(download(http.StripPrefix("/x", osieFiles{root}), time.Second))
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateIdle {
			select {
			case conns <- c:
			default:
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(LimitListener(ln, 4, slog.New(slog.NewTextHandler(io.Discard, nil)), observe.NewRegistry()))
	defer srv.Close()
	res, err := http.Get("http://" + ln.Addr().String() + "/x/osie/f")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || n != 1<<20 {
		t.Fatalf("download: %s, %d bytes", res.Status, n)
	}
	c := (<-conns).(*countedConn).Conn.(*net.TCPConn)
	rc, _ := c.SyscallConn()
	var lowat, corked int
	rc.Control(func(fd uintptr) {
		lowat, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
		corked, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK)
	})
	if lowat != notsentLowat || corked != 0 {
		t.Fatalf("after the download: TCP_NOTSENT_LOWAT %d, TCP_CORK %d; want %d, 0", lowat, corked, notsentLowat)
	}
}
