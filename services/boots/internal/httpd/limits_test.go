package httpd

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herd-metal/herd/pkg/observe"
)

// TestLimitListener: on loopback, a source holding max connections gets
// a 503 on the next; closing one lets it in again.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := DefaultLimits.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	go srv.Serve(LimitListener(ln, 2, slog.New(slog.NewTextHandler(io.Discard, nil)), observe.NewRegistry()))
	defer srv.Close()
	get := func(c net.Conn) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err.Error()
		}
		b, _ := io.ReadAll(io.LimitReader(res.Body, 100))
		return res.Status + " " + string(b)
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := get(c); got != "200 OK ok" {
			t.Fatalf("within the limit: %s", got)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := get(c); !strings.HasPrefix(got, "503 ") || !strings.Contains(got, "too many connections") {
		t.Fatalf("beyond the limit: %s", got)
	}
	c.Close()
	held[0].Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		got := get(c)
		c.Close()
		if got == "200 OK ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing one: %s", got)
		}
	}
}

// TestDownloadChunks: a download through the chunking writer is the file,
// whole and by range.
func TestDownloadChunks(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3*downloadChunk+12345)
	for i := range data {
		data[i] = byte(i * 7)
	}
	os.WriteFile(filepath.Join(dir, "f"), data, 0o644)
	ts := httptest.NewServer(download(http.FileServer(http.Dir(dir)), time.Second))
	defer ts.Close()
	res, err := http.Get(ts.URL + "/f")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if sha256.Sum256(b) != sha256.Sum256(data) {
		t.Fatalf("whole: %d bytes, want %d", len(b), len(data))
	}
	req, _ := http.NewRequest("GET", ts.URL+"/f", nil)
	req.Header.Set("Range", "bytes=100-"+strconv.Itoa(2*downloadChunk+99))
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 206 || !bytes.Equal(b, data[100:2*downloadChunk+100]) {
		t.Fatalf("range: %d, %d bytes", res.StatusCode, len(b))
	}
}

// TestSizeLimits: a declared body over MaxBodyBytes is refused with 413
// before the handler runs, a chunked one is cut where it passes the limit,
// and headers over MaxHeaderBytes get 431.
func TestSizeLimits(t *testing.T) {
	lim := DefaultLimits
	lim.MaxHeaderBytes, lim.MaxBodyBytes = 1024, 10
	srv := httptest.NewUnstartedServer(nil)
	hs := lim.Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
	}))
	srv.Config = hs
	srv.Start()
	defer srv.Close()
	for _, tt := range []struct {
		name    string
		body    string
		chunked bool
		header  int
		want    int
	}{
		{"small body", "12345", false, 0, 200},
		{"declared body over the limit", "12345678901", false, 0, 413},
		{"chunked body over the limit", "12345678901", true, 0, 400},
		{"headers over the limit", "", false, 8 << 10, 431},
	} {
		var body io.Reader = strings.NewReader(tt.body)
		if tt.chunked {
			body = io.MultiReader(body) // no length known: chunked
		}
		req, _ := http.NewRequest("POST", srv.URL+"/events", body)
		if tt.header > 0 {
			req.Header.Set("X-Big", strings.Repeat("a", tt.header))
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, res.StatusCode, tt.want)
		}
	}
}

// TestSourceLimitShared: HTTP and HTTPS share one budget per source: a
// source holding its one connection on the HTTP listener is refused on
// the TLS one, which closes the connection without the plain-text 503 a
// TLS client could not read.
func TestSourceLimitShared(t *testing.T) {
	lim := NewSourceLimit(1, slog.New(slog.NewTextHandler(io.Discard, nil)), observe.NewRegistry())
	var addrs []string
	for _, tlsNext := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := lim.Listener(ln, tlsNext)
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close() // held until the test ends
			}
		}()
		addrs = append(addrs, ln.Addr().String())
	}
	held, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for deadline := time.Now().Add(10 * time.Second); lim.total() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first connection was never accepted")
		}
	}
	c, err := net.Dial("tcp", addrs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || len(b) != 0 {
		t.Fatalf("over the shared budget on the TLS listener: read %q, %v; want it closed without a word", b, err)
	}
	if lim.total() != 1 {
		t.Fatalf("open connections %v, want 1", lim.total())
	}
}

// TestDownloadPacedByClient: a download's write timeout bounds each
// chunk, not the whole: a client reading slowly but steadily keeps its
// download for several times the timeout, and one that stops reading is
// cut once the timeout passes. herd-boots' way: one --http-write-timeout
// for the server and for the download's chunks, behind the per-source
// listener, the client's receive buffer small so that the server waits on
// its pace.
func TestDownloadPacedByClient(t *testing.T) {
	const timeout = time.Second
	size := 16 * downloadChunk // 4 MiB: ~3.3 s at the steady pace below
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "initramfs"), make([]byte, size), 0o644)
	s := newServerWith(t, observe.NewRegistry(), func(c *Config) { c.OSIEDir, c.WriteTimeout = dir, timeout })
	lim := DefaultLimits
	lim.Write = timeout
	srv := lim.Server(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(LimitListener(ln, lim.PerSource, slog.New(slog.NewTextHandler(io.Discard, nil)), observe.NewRegistry()))
	t.Cleanup(func() { srv.Close() })

	// download reads the file at 64 KiB every pause, after stallFor
	// without reading once the headers are in; it returns the body bytes
	// read and the error that ended the body.
	download := func(t *testing.T, pause, stallFor time.Duration) (int64, error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 16<<10) })
		}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		io.WriteString(c, "GET /osie/initramfs HTTP/1.1\r\nHost: boots\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 || res.ContentLength != int64(size) {
			t.Fatalf("%s, Content-Length %d", res.Status, res.ContentLength)
		}
		time.Sleep(stallFor)
		var n int64
		for {
			k, err := io.CopyN(io.Discard, res.Body, 64<<10)
			n += k
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			time.Sleep(pause)
		}
	}
	t.Run("steady", func(t *testing.T) {
		t.Parallel()
		if n, err := download(t, 50*time.Millisecond, 0); n != int64(size) || err != nil {
			t.Fatalf("a steady reader got %d of %d bytes: %v", n, size, err)
		}
	})
	t.Run("stalled", func(t *testing.T) {
		t.Parallel()
		if n, err := download(t, 0, 4*timeout); n == int64(size) || err == nil {
			t.Fatalf("a reader that stopped for 4× the write timeout got %d of %d bytes (%v): want it cut", n, size, err)
		}
	})
}
