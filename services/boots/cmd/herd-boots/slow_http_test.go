package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialFrom opens a TCP connection to boots' HTTP from ip in the client
// namespace; rcvbuf > 0 sets a small receive buffer (a slow reader).
func (l *lab) dialFrom(t *testing.T, ip string, rcvbuf int) net.Conn {
	t.Helper()
	c, err := l.dialer(ip, rcvbuf)(context.Background(), "tcp", strings.TrimPrefix(bootsURL, "http://"))
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (l *lab) dialer(ip string, rcvbuf int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		if rcvbuf > 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			}
		}
		err = l.cli.Do(func() error {
			var e error
			c, e = d.DialContext(ctx, network, addr)
			return e
		})
		return c, err
	}
}

// closedAfter reads c until boots closes it (or limit passes) and says
// how long that took and what was read.
func closedAfter(c net.Conn, limit time.Duration) (time.Duration, string, bool) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(c)
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	return time.Since(start), string(b), !timedOut
}

// TestHTTPSlowClients (issue 14, finding 3): herd-boots with 1 s to send
// headers, 2 s for a whole request, 1 s idle and 2 s per chunk written.
// A client trickling its headers, one trickling an /events body a byte at
// a time, an idle keep-alive connection and a download whose reader
// stalls are each cut well within a generous bound (the previous build
// held the latter three open indefinitely, the first for 10 s), while a
// slow but steady download that outlasts the write timeout completes and
// ordinary requests are answered.
func TestHTTPSlowClients(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x0a}
	osie := t.TempDir()
	const big, steady = 64 << 20, 8 << 20
	for name, size := range map[string]int64{"big.img": big, "steady.img": steady} {
		f, err := os.Create(filepath.Join(osie, name))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size) // sparse
		f.Close()
	}
	l := newLab(t, mac, "--osie-dir", osie, "--http-read-header-timeout", "1s", "--http-read-timeout", "2s",
		"--http-idle-timeout", "1s", "--http-write-timeout", "2s")
	for _, a := range []string{"10.77.0.20", "10.77.0.21", "10.77.0.22", "10.77.0.23", "10.77.0.24"} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	const bound = 6 * time.Second // several times each timeout, under the old 10 s

	t.Run("headers trickled", func(t *testing.T) {
		t.Parallel()
		c := l.dialFrom(t, "10.77.0.20", 0)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: boots\r\n")
		go func() {
			for {
				time.Sleep(200 * time.Millisecond)
				if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
					return
				}
			}
		}()
		if took, _, closed := closedAfter(c, bound); !closed {
			t.Errorf("a client trickling headers still connected after %v", took)
		}
	})
	t.Run("body trickled", func(t *testing.T) {
		t.Parallel()
		c := l.dialFrom(t, "10.77.0.21", 0)
		io.WriteString(c, "POST /events HTTP/1.1\r\nHost: boots\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\nevent=")
		go func() {
			for {
				time.Sleep(200 * time.Millisecond)
				if _, err := io.WriteString(c, "k"); err != nil {
					return
				}
			}
		}()
		if took, _, closed := closedAfter(c, bound+2*time.Second); !closed {
			t.Errorf("a client trickling an /events body still connected after %v", took)
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		t.Parallel()
		c := l.dialFrom(t, "10.77.0.22", 0)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: boots\r\n\r\n")
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Close {
			t.Fatalf("healthz: %d, close %v: want a kept-alive 200", res.StatusCode, res.Close)
		}
		c.SetReadDeadline(time.Now().Add(bound))
		start := time.Now()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("idle keep-alive after %v: %v, want boots to close it", time.Since(start), err)
		}
	})
	t.Run("stalled download", func(t *testing.T) {
		t.Parallel()
		c := l.dialFrom(t, "10.77.0.23", 4096)
		io.WriteString(c, "GET /osie/big.img HTTP/1.1\r\nHost: boots\r\n\r\n")
		time.Sleep(bound) // reads nothing: boots' writes stall
		took, body, closed := closedAfter(c, 30*time.Second)
		if !closed || len(body) >= big {
			t.Errorf("a stalled download was not cut: %d bytes after the stall, then %v more (closed: %v)", len(body), took, closed)
		}
	})
	t.Run("steady download outlasting the write timeout", func(t *testing.T) {
		t.Parallel()
		c := &http.Client{Transport: &http.Transport{DialContext: l.dialer("10.77.0.24", 4096)}}
		start := time.Now()
		res, err := c.Get(bootsURL + "/osie/steady.img")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		n := int64(0)
		buf := make([]byte, 256<<10)
		for {
			k, err := io.ReadFull(res.Body, buf)
			n += int64(k)
			if err != nil {
				break
			}
			time.Sleep(120 * time.Millisecond) // about 2 MiB/s: 8 MiB take over 2 s
		}
		if n != steady {
			t.Errorf("steady download: %d of %d bytes after %v", n, steady, time.Since(start))
		}
		if took := time.Since(start); took < 2*time.Second {
			t.Logf("the steady download took %v, not longer than the write timeout", took)
		}
	})
	t.Run("ordinary request", func(t *testing.T) {
		t.Parallel()
		if code, body := call(t, l.srv.HTTPClient(), "GET", "/auto.ipxe", ""); code != 200 || !strings.HasPrefix(body, "#!ipxe") {
			t.Errorf("auto.ipxe: %d", code)
		}
	})
}

// TestHTTPConnLimit (issue 14, finding 3): with
// --http-max-conns-per-source 3, a host holding three keep-alive
// connections gets a 503 on a fourth, while another address still gets
// in; once one of the three closes, the host gets in again.
func TestHTTPConnLimit(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x0b}
	l := newLab(t, mac, "--http-max-conns-per-source", "3")
	for _, a := range []string{"10.77.0.10", attackerIP} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	get := func(c net.Conn) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: boots\r\n\r\n"); err != nil {
			return err.Error()
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err.Error()
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.Status
	}
	var held []net.Conn
	for range 3 {
		c := l.dialFrom(t, attackerIP, 0)
		if got := get(c); got != "200 OK" {
			t.Fatalf("connection within the limit: %s", got)
		}
		held = append(held, c)
	}
	if got := get(l.dialFrom(t, attackerIP, 0)); !strings.HasPrefix(got, "503") {
		t.Errorf("a fourth connection from %s: %s, want a 503", attackerIP, got)
	}
	if got := get(l.dialFrom(t, "10.77.0.10", 0)); got != "200 OK" {
		t.Errorf("another address: %s", got)
	}
	held[0].Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c := l.dialFrom(t, attackerIP, 0)
		got := get(c)
		c.Close()
		if got == "200 OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing one of its connections, %s still gets %s", attackerIP, got)
		}
	}
	page := l.metrics(t)
	if metric(page, "herd_boots_http_connections_refused_total") < 1 {
		t.Errorf("no refused connection counted")
	}
	if !strings.Contains(l.waitLog("too many connections from one address"), "too many connections from one address") {
		t.Errorf("no warning for the refused connection")
	}
}
