package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/services/boots/internal/httpd"
)

// rawHTTP sends req as bytes to boots from the client namespace (from
// the address the client has there) and returns the answer's status (0:
// none came).
func rawHTTP(t *testing.T, l *lab, req string) int {
	t.Helper()
	var c net.Conn
	if err := l.cli.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", bootsIP+":8080", 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial boots: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The write may fail halfway when boots answers and closes first (an
	// oversize request): the answer is still there to read.
	go c.Write([]byte(req))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// TestReliabilityBadInputBootsHTTP (issue 16): each HTTP route of a real
// herd-boots (the routes httpd.New mounts) gets, from a known machine's
// own address, headers over --http-max-header-bytes, a body over
// --http-max-body-bytes, invalid UTF-8 in the path and query, a deeply
// nested JSON body and a request that is not HTTP. Each must answer 4xx
// (never 5xx or nothing), and boots must still serve the machine's script
// and /healthz afterwards.
func TestReliabilityBadInputBootsHTTP(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	known := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x41}
	// Below the defaults (16 KiB, 4 KiB), the oversize cases between them
	// and the defaults: a 4xx shows the flags took effect.
	const maxHeader, maxBody = 2 << 10, 1 << 10
	l := newLab(t, known, "--http-max-header-bytes", fmt.Sprint(maxHeader), "--http-max-body-bytes", fmt.Sprint(maxBody))
	l.push(t, hwKnown, known, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	l.cli.IP("addr", "add", "10.77.0.10/24", "dev", "hc0")
	script := "/machines/" + strings.ReplaceAll(known.String(), ":", "-") + "/boot.ipxe"
	routes := []string{"/auto.ipxe", script, "/events", "/ipxe/undionly.kpxe", "/osie/vmlinuz", "/metrics", "/healthz", "/version", "/"}
	deep := strings.Repeat("[", maxBody/2-1) + strings.Repeat("]", maxBody/2-1)
	// Go's server reads 4 KiB past MaxHeaderBytes before it refuses.
	bigHeader := strings.Repeat("a", maxHeader+4096+1024)
	cases := []struct {
		name string
		req  func(p string) string
		ok   func(code int) bool
	}{
		{"oversize header", func(p string) string { return "GET " + p + " HTTP/1.1\r\nHost: x\r\nX-Big: " + bigHeader + "\r\n\r\n" },
			func(c int) bool { return c == 431 }},
		{"oversize body", func(p string) string {
			return "POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(maxBody*3/2) + "\r\n\r\n" + strings.Repeat("a", maxBody*3/2)
		}, func(c int) bool { return c == 413 }},
		{"invalid UTF-8 in path and query", func(p string) string {
			return "GET " + strings.Replace(p, "52-54", "%FF%FE", 1) + "?event=%ff&mac=\xfe HTTP/1.1\r\nHost: x\r\n\r\n"
		}, func(c int) bool { return c > 0 && c < 500 }},
		{"deeply nested JSON body", func(p string) string {
			return "POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(deep)) + "\r\n\r\n" + deep
		}, func(c int) bool { return c >= 400 && c < 500 }},
		{"not HTTP", func(p string) string { return "\x16\x03\x01\x00\xff" + p + "\r\n\r\n" }, func(c int) bool { return c == 400 }},
	}
	requests, bad := 0, 0
	statuses := map[int]int{}
	for _, p := range routes {
		for _, c := range cases {
			code := rawHTTP(t, l, c.req(p))
			requests++
			statuses[code]++
			if !c.ok(code) {
				bad++
				t.Errorf("%s %s: status %d", p, c.name, code)
			}
		}
	}
	hc := l.cli.HTTPClient()
	for _, p := range []string{"/healthz", script} {
		res, err := hc.Get(bootsURL + p)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("GET %s after the bad input: %v %v", p, err, res)
		}
		res.Body.Close()
	}
	if s := l.log.String(); strings.Contains(s, "panic") {
		t.Fatalf("herd-boots log shows a panic:\n%s", s)
	}
	reliability.Record(t, reliability.Row{
		Case:   "Bad input: every HTTP route of herd-boots",
		Done:   fmt.Sprintf("%d routes sent, as raw bytes from a known machine's address, headers over --http-max-header-bytes, a body over --http-max-body-bytes, invalid UTF-8 in path and query, a deeply nested JSON body, a request that is not HTTP", len(routes)),
		Volume: fmt.Sprintf("%d requests", requests),
		Lost:   bad,
		Notes:  fmt.Sprintf("statuses: %v; the machine's script and /healthz served afterwards", statuses),
	})
}

// TestHTTPSizeLimitFlags: the HTTP size limits default to httpd's and are
// set by flag or HERD_* environment.
func TestHTTPSizeLimitFlags(t *testing.T) {
	env := map[string]string{"HERD_HTTP_MAX_BODY_BYTES": "100"}
	s, err := parse([]string{"--public-ip", "10.0.5.1", "--http-max-header-bytes", "2000"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.httpLimits.MaxHeaderBytes != 2000 || s.httpLimits.MaxBodyBytes != 100 {
		t.Fatalf("from a flag and the environment: %+v", s.httpLimits)
	}
	if httpd.DefaultLimits.MaxHeaderBytes != 16<<10 || httpd.DefaultLimits.MaxBodyBytes != 4<<10 {
		t.Fatalf("defaults changed: update docs/reliability.md's Limits: %+v", httpd.DefaultLimits)
	}
}
