package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/metadata/internal/ec2"
)

func machine(id, ip, hostname, userdata string) *hardware.Hardware {
	doc := `{"instance": {"id": "` + id + `", "hostname": "` + hostname + `", "ssh_keys": ["ssh-ed25519 AAAA` + id + ` ` + id + `@herd"]` +
		`, "userdata": "` + userdata + `"}, "facility": {"facility_code": "lab"}}`
	return &hardware.Hardware{Id: id, Metadata: doc, Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
		Dhcp: &hardware.Hardware_DHCP{Mac: "08:00:27:00:00:01", Ip: &hardware.Hardware_DHCP_IP{Address: ip}},
	}}}}
}

// fixture: two machines, a handler trusting the proxy 10.9.0.0/24.
func fixture(t testing.TB) (*Handler, *prometheus.Registry) {
	t.Helper()
	tree := ec2.NewTree()
	m1 := tree.Prepare(machine("m1", "10.1.0.11", "node-1", "#cloud-config\\nhostname: node-1"))
	byIP := map[netip.Addr]*ec2.Prepared{
		netip.MustParseAddr("10.1.0.11"): m1,
		netip.MustParseAddr("10.1.0.12"): tree.Prepare(machine("m2", "10.1.0.12", "node-2", "")),
		// The wire tests connect from 127.0.0.2 as m1.
		netip.MustParseAddr("127.0.0.2"): m1,
	}
	reg := prometheus.NewRegistry()
	h := New(Config{
		Lookup:   func(a netip.Addr) (*ec2.Prepared, bool) { p, ok := byIP[a]; return p, ok },
		Trusted:  []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")},
		Registry: reg,
		Log:      slog.New(slog.DiscardHandler),
	})
	return h, reg
}

func TestServe(t *testing.T) {
	h, _ := fixture(t)
	tests := []struct {
		name   string
		method string
		from   string
		path   string
		xff    []string
		code   int
		body   string // checked when not empty
	}{
		{name: "hostname", from: "10.1.0.11:40000", path: "/2009-04-04/meta-data/hostname", code: 200, body: "node-1"},
		{name: "latest", from: "10.1.0.11:40000", path: "/latest/meta-data/instance-id", code: 200, body: "m1"},
		{name: "other machine sees its own", from: "10.1.0.12:40000", path: "/latest/meta-data/hostname", code: 200, body: "node-2"},
		{name: "listing", from: "10.1.0.11:40000", path: "/latest/meta-data/", code: 200, body: "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nplacement/\npublic-keys/"},
		{name: "listing without slash", from: "10.1.0.11:40000", path: "/latest/meta-data", code: 200, body: "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nplacement/\npublic-keys/"},
		{name: "version root", from: "10.1.0.11:40000", path: "/latest/", code: 200, body: "meta-data/\nuser-data"},
		{name: "version root without user-data", from: "10.1.0.12:40000", path: "/latest", code: 200, body: "meta-data/"},
		{name: "root", from: "10.1.0.11:40000", path: "/", code: 200, body: "2009-04-04\nlatest"},
		{name: "public key", from: "10.1.0.11:40000", path: "/latest/meta-data/public-keys/0/openssh-key", code: 200, body: "ssh-ed25519 AAAAm1 m1@herd"},
		{name: "keys listing", from: "10.1.0.11:40000", path: "/latest/meta-data/public-keys/", code: 200, body: "0=m1@herd"},
		{name: "availability zone", from: "10.1.0.11:40000", path: "/latest/meta-data/placement/availability-zone", code: 200, body: "lab"},
		{name: "user-data", from: "10.1.0.11:40000", path: "/2009-04-04/user-data", code: 200, body: "#cloud-config\nhostname: node-1"},
		{name: "no user-data", from: "10.1.0.12:40000", path: "/2009-04-04/user-data", code: 404},
		{name: "metadata document", from: "10.1.0.12:40000", path: "/metadata", code: 200, body: `{"instance": {"id": "m2"`},
		{name: "HEAD", method: "HEAD", from: "10.1.0.11:40000", path: "/latest/meta-data/hostname", code: 200},

		{name: "unknown client", from: "10.1.0.99:40000", path: "/latest/meta-data/hostname", code: 404, body: "not found\n"},
		{name: "unknown client root", from: "10.1.0.99:40000", path: "/", code: 404},
		{name: "unknown client metadata", from: "10.1.0.99:40000", path: "/metadata", code: 404},
		{name: "ipv6 unknown client", from: "[2001:db8::1]:40000", path: "/metadata", code: 404},
		{name: "mapped ipv4 peer", from: "[::ffff:10.1.0.11]:40000", path: "/latest/meta-data/hostname", code: 200, body: "node-1"},
		{name: "unknown path", from: "10.1.0.11:40000", path: "/latest/meta-data/nope", code: 404},
		{name: "unknown version", from: "10.1.0.11:40000", path: "/2021-01-03/meta-data/hostname", code: 404},
		{name: "version prefix only", from: "10.1.0.11:40000", path: "/latestx/meta-data/hostname", code: 404},
		{name: "file with slash", from: "10.1.0.11:40000", path: "/latest/meta-data/hostname/", code: 404},
		{name: "double slash", from: "10.1.0.11:40000", path: "/latest/meta-data//hostname", code: 404},
		{name: "dot segments", from: "10.1.0.11:40000", path: "/latest/meta-data/../meta-data/hostname", code: 404},
		{name: "POST", method: "POST", from: "10.1.0.11:40000", path: "/latest/meta-data/hostname", code: 405},
		{name: "PUT unknown path", method: "PUT", from: "10.1.0.99:40000", path: "/x", code: 405},
		{name: "DELETE", method: "DELETE", from: "10.1.0.11:40000", path: "/metadata", code: 405},

		{name: "forged XFF from a machine is ignored", from: "10.1.0.12:40000", xff: []string{"10.1.0.11"}, path: "/latest/meta-data/hostname", code: 200, body: "node-2"},
		{name: "forged XFF from a stranger is ignored", from: "10.1.0.99:40000", xff: []string{"10.1.0.11"}, path: "/latest/meta-data/hostname", code: 404},
		{name: "trusted proxy", from: "10.9.0.1:40000", xff: []string{"10.1.0.11"}, path: "/latest/meta-data/hostname", code: 200, body: "node-1"},
		{name: "trusted proxy, spoofed left entry", from: "10.9.0.1:40000", xff: []string{"10.1.0.12, 10.1.0.11"}, path: "/latest/meta-data/hostname", code: 200, body: "node-1"},
		{name: "trusted proxy, garbage entry", from: "10.9.0.1:40000", xff: []string{"10.1.0.11, garbage"}, path: "/latest/meta-data/hostname", code: 404},
		{name: "trusted proxy itself is no machine", from: "10.9.0.1:40000", path: "/latest/meta-data/hostname", code: 404},

		{name: "healthz", from: "10.1.0.99:40000", path: "/healthz", code: 200, body: `{"status":"ok"}`},
		{name: "version", from: "10.1.0.99:40000", path: "/version", code: 200, body: `"service":"herd-metadata"`},
		{name: "POST metrics", method: "POST", from: "10.1.0.99:40000", path: "/metrics", code: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			res := do(t, h, method, tt.from, tt.path, tt.xff...)
			if res.code != tt.code {
				t.Fatalf("%s %s from %s: status %d, want %d (body %q)", method, tt.path, tt.from, res.code, tt.code, res.body)
			}
			if tt.body != "" && !strings.Contains(res.body, tt.body) {
				t.Fatalf("body %q, want %q", res.body, tt.body)
			}
			if tt.code == 200 && strings.HasPrefix(tt.body, "node") && res.body != tt.body {
				t.Fatalf("body %q, want exactly %q", res.body, tt.body)
			}
			if method == "HEAD" && (res.body != "" || res.header.Get("Content-Length") != "6") {
				t.Fatalf("HEAD: body %q, Content-Length %q", res.body, res.header.Get("Content-Length"))
			}
			if tt.code == 405 && tt.path != "/metrics" && res.header.Get("Allow") != "GET, HEAD" {
				t.Fatalf("405 without Allow: %v", res.header)
			}
			if tt.code == 200 && tt.path != "/healthz" && tt.path != "/version" && res.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("no nosniff: %v", res.header)
			}
		})
	}
}

type result struct {
	code   int
	header http.Header
	body   string
}

// do runs one request through h, as the server would, and reads the
// answer as it goes on the wire.
func do(t testing.TB, h *Handler, method, from, target string, xff ...string) result {
	t.Helper()
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(target)
	req.Header.SetHost("x")
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	peer, err := net.ResolveTCPAddr("tcp", from)
	if err != nil {
		t.Fatal(err)
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, peer, nil)
	h.Serve(&ctx)
	ctx.Response.SkipBody = ctx.IsHead()
	var wire bytes.Buffer
	bw := bufio.NewWriter(&wire)
	if err := ctx.Response.Write(bw); err != nil || bw.Flush() != nil {
		t.Fatal(err)
	}
	hreq, _ := http.NewRequest(method, "http://x"+target, nil)
	res, err := http.ReadResponse(bufio.NewReader(&wire), hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return result{res.StatusCode, res.Header, string(body)}
}

func TestMetrics(t *testing.T) {
	h, _ := fixture(t)
	for _, p := range []string{"/latest/meta-data/hostname", "/latest/meta-data/hostname", "/nope"} {
		do(t, h, "GET", "10.1.0.11:1", p)
	}
	do(t, h, "GET", "10.1.0.99:1", "/healthz")
	res := do(t, h, "GET", "10.1.0.99:1", "/metrics")
	for _, want := range []string{
		`herd_metadata_requests_total{code="200",route="meta-data/hostname"} 2`,
		`herd_metadata_requests_total{code="404",route="unmatched"} 1`,
		`herd_metadata_request_duration_seconds_count{route="meta-data/hostname"} 2`,
		`herd_metadata_requests_total{code="200",route="ops"} 1`,
	} {
		if !strings.Contains(res.body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRequestPath(t *testing.T) {
	tests := []struct {
		target, want string
		ok           bool
	}{
		{"/latest/meta-data/hostname", "/latest/meta-data/hostname", true},
		{"/latest/meta-data/hostname?x=1", "/latest/meta-data/hostname", true},
		{"/latest/meta-data/hostname#frag", "/latest/meta-data/hostname", true},
		{"/latest/meta-data//hostname", "/latest/meta-data//hostname", true},
		{"/latest/../latest/user-data", "/latest/../latest/user-data", true},
		{"/latest/meta%2Ddata/hostname", "/latest/meta-data/hostname", true},
		{"/latest/%zz", "", false},
		{"http://evil/latest/meta-data/hostname", "/latest/meta-data/hostname", true},
		{"http://evil", "/", true},
		{"http://evil?x", "/", true},
		{"*", "", false},
		{"evil:80", "", false},
		{"", "", false},
		{"?", "", false},
	}
	for _, tt := range tests {
		got, ok := requestPath([]byte(tt.target))
		if got != tt.want || ok != tt.ok {
			t.Errorf("requestPath(%q) = %q, %v; want %q, %v", tt.target, got, ok, tt.want, tt.ok)
		}
	}
}

// The hot path allocates nothing of its own: the answer is prepared.
func TestServeAllocs(t *testing.T) {
	h, _ := fixture(t)
	for _, target := range []string{"/2009-04-04/meta-data/hostname", "/metadata", "/latest/meta-data/", "/nope"} {
		var req fasthttp.Request
		req.SetRequestURI(target)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(10, 1, 0, 11), Port: 40000}, nil)
		h.Serve(&ctx) // warm the response buffers, as a kept-alive connection has them
		if n := testing.AllocsPerRun(200, func() { h.Serve(&ctx) }); n > 0 {
			t.Errorf("%s: Serve allocates %v times per request", target, n)
		}
	}
}

func BenchmarkServe(b *testing.B) {
	byIP := map[netip.Addr]*ec2.Prepared{netip.MustParseAddr("10.1.0.11"): ec2.NewTree().Prepare(machine("m1", "10.1.0.11", "node-1", ""))}
	h := New(Config{Lookup: func(a netip.Addr) (*ec2.Prepared, bool) { p, ok := byIP[a]; return p, ok }, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	var req fasthttp.Request
	req.SetRequestURI("/2009-04-04/meta-data/hostname")
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(10, 1, 0, 11), Port: 40000}, nil)
	b.ReportAllocs()
	for b.Loop() {
		h.Serve(&ctx)
	}
}

// Any request target: no panic, and never another machine's data.
func FuzzServe(f *testing.F) {
	for _, s := range []string{"/latest/meta-data/hostname", "/metadata", "/latest/meta-data/public-keys/0/openssh-key", "/2009-04-04/", "http://x/latest/user-data", "/%2e%2e/", "*"} {
		f.Add(s)
	}
	h, _ := fixture(f)
	f.Fuzz(func(t *testing.T, target string) {
		var req fasthttp.Request
		req.Header.SetRequestURI(target)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(10, 1, 0, 12), Port: 40000}, nil)
		h.Serve(&ctx)
		if body := string(ctx.Response.Body()); strings.Contains(body, "node-1") || strings.Contains(body, "m1") {
			t.Fatalf("%q: machine 2 got machine 1's data: %q", target, body)
		}
	})
}

// startServer serves h on a fresh loopback port until the test ends.
func startServer(t *testing.T, h *Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, NewServer(h, slog.New(slog.DiscardHandler), DefaultLimits), ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dialFrom connects to addr from a loopback source address.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// Bad input on the wire: the server answers it (or closes) and keeps
// serving the next client.
func TestServerBadInput(t *testing.T) {
	h, _ := fixture(t)
	addr := startServer(t, h)
	tests := []struct {
		name string
		raw  string
		code int // 0: the server may just close
	}{
		{"oversize header", "GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*MaxHeaderBytes) + "\r\n\r\n", 431},
		{"many headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", MaxHeaderBytes/4) + "\r\n", 431},
		{"malformed header line", "GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400},
		{"bad request line", "GARBAGE\r\n\r\n", 400},
		{"binary junk", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400},
		{"huge XFF from untrusted peer", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: " + strings.Repeat("1.2.3.4, ", 1000) + "\r\n\r\n", 200},
		{"unknown client over the wire", "GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.0.11\r\n\r\n", 404},
		{"absolute-form target", "GET http://evil/latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n\r\n", 404},
		{"body too large", "POST /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(2*MaxBodyBytes) + "\r\n\r\n" + strings.Repeat("a", 2*MaxBodyBytes), 413},
		{"POST with a small body", "POST /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", addr)
			defer c.Close()
			_, _ = io.WriteString(c, tt.raw)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				if tt.code != 0 {
					t.Fatalf("no response: %v", err)
				}
				return
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
		})
		// Whatever came before, the server still answers.
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatalf("after %s: %v", tt.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after %s: healthz %d", tt.name, resp.StatusCode)
		}
	}
}

// A machine's requests on one kept-alive connection, pipelined, HEAD
// included; and a trusted proxy's X-Forwarded-For over the wire.
func TestServerWire(t *testing.T) {
	h, _ := fixture(t)
	addr := startServer(t, h)
	c := dialFrom(t, "127.0.0.2", addr)
	defer c.Close()
	_, _ = io.WriteString(c, "GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n\r\n"+
		"HEAD /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n\r\n"+
		"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	for i, want := range []struct{ method, body, length string }{{"GET", "node-1", "6"}, {"HEAD", "", "6"}, {"GET", "m1", "2"}} {
		req, _ := http.NewRequest(want.method, "http://x/", nil)
		res, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(body) != want.body || res.Header.Get("Content-Length") != want.length ||
			res.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("answer %d: %d %q %v", i, res.StatusCode, body, res.Header)
		}
	}

	trusting := New(Config{
		Lookup:   h.lookup,
		Trusted:  []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Registry: prometheus.NewRegistry(),
		Log:      slog.New(slog.DiscardHandler),
	})
	addr = startServer(t, trusting)
	for _, tt := range []struct{ xff, code, body string }{
		{"X-Forwarded-For: 10.1.0.12\r\n", "200", "node-2"},
		{"X-Forwarded-For: 10.1.0.11\r\nX-Forwarded-For: 10.1.0.12\r\n", "200", "node-2"},
		{"X-Forwarded-For: 10.1.0.12, 10.1.0.11\r\n", "200", "node-1"},
		{"", "404", ""},
	} {
		c := dialFrom(t, "127.0.0.1", addr)
		_, _ = io.WriteString(c, "GET /latest/meta-data/hostname HTTP/1.1\r\nHost: x\r\n"+tt.xff+"\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		c.Close()
		if strconv.Itoa(res.StatusCode) != tt.code || (tt.body != "" && string(body) != tt.body) {
			t.Errorf("XFF %q: %d %q, want %s %q", tt.xff, res.StatusCode, body, tt.code, tt.body)
		}
	}
}

// Serve ends when its context does: an idle kept-alive connection is
// closed, the listener stops accepting, Serve returns nil.
func TestServeShutdown(t *testing.T) {
	h, _ := fixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, NewServer(h, slog.New(slog.DiscardHandler), DefaultLimits), ln) }()
	c := dialFrom(t, "127.0.0.2", ln.Addr().String())
	defer c.Close()
	_, _ = io.WriteString(c, "GET /metadata HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	io.Copy(io.Discard, res.Body)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(ShutdownTimeout + 2*time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v with only an idle connection", d)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("idle connection still open after shutdown")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("still accepting after shutdown")
	}
}

type takenNotes struct {
	mu  sync.Mutex
	got []string
}

func (n *takenNotes) Record(hwID, message string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, hwID+": "+message)
}

// TestReadNotes: a machine's first answered read is noted for its
// timeline, once a period however many paths it reads; unknown callers
// and unanswered paths make no note.
func TestReadNotes(t *testing.T) {
	h, _ := fixture(t)
	notes := &takenNotes{}
	h.notes = notes
	read := func(from, target, agent string) {
		var req fasthttp.Request
		req.SetRequestURI(target)
		req.Header.SetUserAgent(agent)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.ParseIP(from), Port: 40000}, nil)
		h.Serve(&ctx)
	}
	read("10.1.0.99", "/2009-04-04/meta-data/instance-id", "Cloud-Init/24.1") // no such machine
	read("10.1.0.11", "/nope", "Cloud-Init/24.1")                             // 404
	read("10.1.0.11", "/2009-04-04/meta-data/instance-id", "Cloud-Init/24.1")
	read("10.1.0.11", "/2009-04-04/meta-data/hostname", "Cloud-Init/24.1")
	read("10.1.0.11", "/2009-04-04/user-data", "curl/8")
	read("10.1.0.12", "/metadata", "curl/8")
	want := []string{"m1: metadata read by cloud-init (first: meta-data/instance-id)", "m2: metadata read (first: metadata)"}
	if !slices.Equal(notes.got, want) {
		t.Fatalf("notes %q, want %q", notes.got, want)
	}
}

func TestNoteDue(t *testing.T) {
	var p ec2.Prepared
	for _, step := range []struct {
		now  int64
		want bool
	}{{1000, true}, {1000, false}, {1599, false}, {1600, true}, {1601, false}, {2200, true}} {
		if got := p.NoteDue(step.now, 600); got != step.want {
			t.Fatalf("NoteDue(%d) = %v, want %v", step.now, got, step.want)
		}
	}
}
