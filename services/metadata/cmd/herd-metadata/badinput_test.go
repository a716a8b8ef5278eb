package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/metadata/internal/httpapi"
)

// crawlPaths is every path a machine sees under the roots, following the
// directory listings (lines ending in "/" are directories): the routes
// of the EC2 data table, found without listing them by hand.
func crawlPaths(t *testing.T, from, base string, roots ...string) []string {
	seen := map[string]bool{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		if !strings.HasSuffix(p, "/") {
			continue
		}
		code, body := get(t, from, base+p)
		if code != 200 {
			continue
		}
		for _, line := range strings.Split(body, "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if k, _, ok := strings.Cut(line, "="); ok && strings.HasSuffix(p, "public-keys/") {
				line = k + "/" // "0=name" lists key 0's directory
			}
			queue = append(queue, p+line)
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// raw sends one request as bytes from the source address from and
// returns the status code of the answer (0: the connection closed
// without one).
func raw(t *testing.T, from, hostport, req string) int {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", hostport)
	if err != nil {
		t.Fatalf("dial %s: %v", hostport, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The write may fail halfway when the server answers and closes
	// first (an oversize request): the answer is still there to read.
	go c.Write([]byte(req))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// TestReliabilityBadInputMetadata (issue 16): every path of herd-metadata
// a machine sees (crawled from its listings) and /healthz, /metrics,
// /version get headers over --http-max-header-bytes, a body over
// --http-max-body-bytes, invalid UTF-8 in the path, a deeply nested JSON
// body, a POST and a request line that is not HTTP, sent as raw bytes
// from the machine's own address to the real server on a real socket.
// Each must answer 4xx (never 5xx or no answer), and the machine's
// metadata must be served unchanged afterwards.
func TestReliabilityBadInputMetadata(t *testing.T) {
	// Below the defaults, and the oversize cases between them and the
	// defaults: a 4xx shows the flags took effect.
	const maxHeader, maxBody = 8 << 10, 1 << 10
	s := servertest.Start(t)
	hw := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	push(t, hw, record(1, "node-1", `, "userdata": "#cloud-config\nhostname: node-1\n"`))
	base := startMetadata(t, s, "127.0.0.1:0", "--http-max-header-bytes", fmt.Sprint(maxHeader), "--http-max-body-bytes", fmt.Sprint(maxBody))
	hostport := strings.TrimPrefix(base, "http://")
	from := alias(1)
	paths := crawlPaths(t, from, base, "/", "/latest/", "/2009-04-04/")
	if len(paths) < 20 {
		t.Fatalf("crawled only %d paths: %v", len(paths), paths)
	}
	_, hostBefore := get(t, from, base+"/latest/meta-data/hostname")
	paths = append(paths, "/healthz", "/metrics", "/version")
	deep := strings.Repeat("[", maxBody/2-1) + strings.Repeat("]", maxBody/2-1)
	type badCase struct {
		name string
		req  func(p string) string
		// want: the statuses that say what is wrong.
		want []int
	}
	cases := []badCase{
		{"oversize header", func(p string) string {
			return "GET " + p + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxHeader*3/2) + "\r\n\r\n"
		}, []int{431}},
		{"oversize body", func(p string) string {
			return "GET " + p + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(maxBody*3/2) + "\r\n\r\n" + strings.Repeat("a", maxBody*3/2)
		}, []int{413}},
		{"invalid UTF-8 in the path", func(p string) string { return "GET " + p + "\xff\xfe%ff HTTP/1.1\r\nHost: x\r\n\r\n" }, []int{400, 404}},
		{"deeply nested JSON body", func(p string) string {
			return "POST " + p + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(deep)) + "\r\n\r\n" + deep
		}, []int{405}},
		{"not HTTP", func(p string) string { return "\x16\x03\x01\x00\xff" + p + "\r\n\r\n" }, []int{400}},
	}
	requests, bad := 0, 0
	statuses := map[int]int{}
	for _, p := range paths {
		for _, c := range cases {
			code := raw(t, from, hostport, c.req(p))
			requests++
			statuses[code]++
			ok := false
			for _, w := range c.want {
				ok = ok || code == w
			}
			// The operator endpoints take every method as the ops mux
			// does: a POST there is 405 from it too, or 404.
			if !ok && c.name == "deeply nested JSON body" && (p == "/healthz" || p == "/metrics" || p == "/version") {
				ok = code == 404 || code == 405
			}
			if !ok {
				bad++
				t.Errorf("%s %s: status %d, want one of %v", p, c.name, code, c.want)
			}
		}
	}
	if code, _ := get(t, "127.0.0.1", base+"/healthz"); code != 200 {
		t.Fatalf("/healthz after the bad input: %d", code)
	}
	if code, host := get(t, from, base+"/latest/meta-data/hostname"); code != 200 || host != hostBefore {
		t.Errorf("hostname after the bad input: %d %q, want %q", code, host, hostBefore)
		bad++
	}
	reliability.Record(t, reliability.Row{
		Case:   "Bad input: every HTTP path of herd-metadata (:50061)",
		Done:   fmt.Sprintf("%d paths (crawled from the EC2 listings, /healthz, /metrics, /version) sent, as raw bytes from the machine's address, headers over --http-max-header-bytes, a body over --http-max-body-bytes, invalid UTF-8 in the path, a deeply nested JSON body, a request that is not HTTP", len(paths)),
		Volume: fmt.Sprintf("%d requests", requests),
		Lost:   bad,
		Notes:  fmt.Sprintf("statuses: %v; metadata served unchanged afterwards", statuses),
	})
}

// TestLimitFlags: the request size limits default to httpapi's and are
// set by flag or HERD_* environment.
func TestLimitFlags(t *testing.T) {
	env := map[string]string{"HERD_GRPC_AUTHORITY": "h:1", "HERD_TOKEN": "tok"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	s, err := parse(nil, lookup, io.Discard)
	if err != nil || s.limits != httpapi.DefaultLimits {
		t.Fatalf("defaults: %+v %v", s.limits, err)
	}
	env["HERD_HTTP_MAX_BODY_BYTES"] = "100"
	s, err = parse([]string{"--http-max-header-bytes", "2000"}, lookup, io.Discard)
	if err != nil || s.limits != (httpapi.Limits{MaxHeaderBytes: 2000, MaxBodyBytes: 100}) {
		t.Fatalf("from the environment and a flag: %+v %v", s.limits, err)
	}
}
