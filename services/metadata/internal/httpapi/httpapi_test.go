package httpapi

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
func fixture(t *testing.T) (*Handler, *prometheus.Registry) {
	t.Helper()
	byIP := map[netip.Addr]*ec2.Prepared{
		netip.MustParseAddr("10.1.0.11"): ec2.Prepare(machine("m1", "10.1.0.11", "node-1", "#cloud-config\\nhostname: node-1")),
		netip.MustParseAddr("10.1.0.12"): ec2.Prepare(machine("m2", "10.1.0.12", "node-2", "")),
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
			r := httptest.NewRequest(method, tt.path, nil)
			r.RemoteAddr = tt.from
			if tt.xff != nil {
				r.Header["X-Forwarded-For"] = tt.xff
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code {
				t.Fatalf("%s %s from %s: status %d, want %d (body %q)", method, tt.path, tt.from, w.Code, tt.code, w.Body)
			}
			if tt.body != "" && !strings.Contains(w.Body.String(), tt.body) {
				t.Fatalf("body %q, want %q", w.Body, tt.body)
			}
			if tt.code == 200 && strings.HasPrefix(tt.body, "node") && w.Body.String() != tt.body {
				t.Fatalf("body %q, want exactly %q", w.Body, tt.body)
			}
			if method == "HEAD" && (w.Body.Len() != 0 || w.Header().Get("Content-Length") != "6") {
				t.Fatalf("HEAD: body %q, Content-Length %q", w.Body, w.Header().Get("Content-Length"))
			}
			if tt.code == 405 && tt.path != "/metrics" && w.Header().Get("Allow") != "GET, HEAD" {
				t.Fatalf("405 without Allow: %v", w.Header())
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	h, _ := fixture(t)
	for _, p := range []string{"/latest/meta-data/hostname", "/latest/meta-data/hostname", "/nope"} {
		r := httptest.NewRequest("GET", p, nil)
		r.RemoteAddr = "10.1.0.11:1"
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	r := httptest.NewRequest("GET", "/metrics", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	for _, want := range []string{
		`herd_metadata_requests_total{code="200",route="meta-data/hostname"} 2`,
		`herd_metadata_requests_total{code="404",route="unmatched"} 1`,
		`herd_metadata_request_duration_seconds_count{route="meta-data/hostname"} 2`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

// The hot path allocates nothing of its own: the answer is prepared.
func TestServeAllocs(t *testing.T) {
	h, _ := fixture(t)
	r := httptest.NewRequest("GET", "/2009-04-04/meta-data/hostname", nil)
	r.RemoteAddr = "10.1.0.11:40000"
	w := &discardWriter{h: http.Header{}}
	if n := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, r) }); n > 0 {
		t.Errorf("ServeHTTP allocates %v times per request", n)
	}
}

func BenchmarkServe(b *testing.B) {
	byIP := map[netip.Addr]*ec2.Prepared{netip.MustParseAddr("10.1.0.11"): ec2.Prepare(machine("m1", "10.1.0.11", "node-1", ""))}
	h := New(Config{Lookup: func(a netip.Addr) (*ec2.Prepared, bool) { p, ok := byIP[a]; return p, ok }, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	r := httptest.NewRequest("GET", "/2009-04-04/meta-data/hostname", nil)
	r.RemoteAddr = "10.1.0.11:40000"
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// Bad input on the wire: the server answers it (or closes) and keeps
// serving the next client.
func TestServerBadInput(t *testing.T) {
	h, _ := fixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, NewServer(h, slog.New(slog.DiscardHandler)), ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := ln.Addr().String()
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
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
