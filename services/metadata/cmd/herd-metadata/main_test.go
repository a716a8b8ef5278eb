package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, true)) }

// syncBuffer collects the service's log for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMetadata runs herd-metadata in process against s, on addr, and
// waits until its inventory is loaded. It returns the base URL. extra
// flags follow the test's own.
func startMetadata(t *testing.T, s *servertest.Server, addr string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	env := map[string]string{"HERD_GRPC_AUTHORITY": s.GRPC, "HERD_TOKEN": servertest.AdminToken}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	go func() {
		args := append([]string{"--metadata-addr", addr, "--cert-url", s.HTTP + "/cert", "--log-format", "text", "--log-level", "debug"}, extra...)
		done <- run(ctx, args, lookup, logs, func(a net.Addr) { ready <- a })
	}()
	var base string
	select {
	case a := <-ready:
		base = "http://" + a.String()
	case err := <-done:
		cancel()
		t.Fatalf("herd-metadata ended: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("herd-metadata did not listen\n%s", logs)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("herd-metadata: %v\n%s", err, logs)
		}
		if t.Failed() {
			t.Logf("herd-metadata log:\n%s", logs)
		}
	})
	eventually(t, 30*time.Second, "herd-metadata healthy", func() bool {
		code, _ := get(t, "127.0.0.1", base+"/healthz")
		return code == http.StatusOK
	})
	return base
}

// get fetches url from the source address from (a 127.0.0.x alias: all of
// 127.0.0.0/8 is local on Linux, so each alias is a different machine).
func get(t *testing.T, from, url string) (int, string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, from, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, from, err)
	}
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// record is a machine whose interface is on a test-only 10.x network (no
// traffic goes there) and whose metadata document gives it the loopback
// alias it calls from: the server refuses loopback interface addresses.
func record(n int, hostname, extra string) *hardware.Hardware {
	id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
	doc := fmt.Sprintf(`{"facility": {"facility_code": "lab", "plan_slug": "c3.small"}, "instance": {"id": "%s", "hostname": %q, `+
		`"ip_addresses": [{"address": "127.0.0.%d", "address_family": 4, "public": false, "management": true}], `+
		`"ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%d m%d@herd"], "tags": ["t%d"], `+
		`"operating_system": {"slug": "debian_12", "distro": "debian", "version": "12"}%s}}`, id, hostname, 10+n, n, n, n, extra)
	return &hardware.Hardware{Id: id, Metadata: doc, Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
		Dhcp: &hardware.Hardware_DHCP{
			Mac: fmt.Sprintf("08:00:27:00:00:%02x", n), Hostname: hostname, Arch: "x86_64",
			Ip: &hardware.Hardware_DHCP_IP{Address: fmt.Sprintf("10.77.0.%d", 10+n), Netmask: "255.255.255.0", Gateway: "10.77.0.1"},
		},
		Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
	}}}}
}

func alias(n int) string { return fmt.Sprintf("127.0.0.%d", 10+n) }

func push(t *testing.T, c hardware.HardwareServiceClient, hw *hardware.Hardware) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Push(ctx, &hardware.PushRequest{Data: hw}); err != nil {
		t.Fatalf("push %s: %v", hw.GetId(), err)
	}
}

func TestMachinesSeeOnlyTheirOwnData(t *testing.T) {
	s := servertest.Start(t)
	hw := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	push(t, hw, record(1, "node-1", `, "userdata": "#cloud-config\nhostname: node-1\n"`))
	push(t, hw, record(2, "node-2", ""))
	base := startMetadata(t, s, "127.0.0.1:0")

	for n := 1; n <= 2; n++ {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", n)
		want := map[string]string{
			"/2009-04-04/meta-data/hostname":                 fmt.Sprintf("node-%d", n),
			"/latest/meta-data/local-hostname":               fmt.Sprintf("node-%d", n),
			"/latest/meta-data/instance-id":                  id,
			"/latest/meta-data/local-ipv4":                   alias(n),
			"/latest/meta-data/public-keys/0/openssh-key":    fmt.Sprintf("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%d m%d@herd", n, n),
			"/latest/meta-data/public-keys/":                 fmt.Sprintf("0=m%d@herd", n),
			"/latest/meta-data/placement/availability-zone":  "lab",
			"/latest/meta-data/plan":                         "c3.small",
			"/latest/meta-data/tags":                         fmt.Sprintf("t%d", n),
			"/latest/meta-data/operating-system/slug":        "debian_12",
			"/2009-04-04/meta-data/operating-system/version": "12",
		}
		for path, body := range want {
			code, got := get(t, alias(n), base+path)
			if code != http.StatusOK || got != body {
				t.Errorf("machine %d GET %s: %d %q, want %q", n, path, code, got, body)
			}
		}
		code, doc := get(t, alias(n), base+"/metadata")
		if code != http.StatusOK || !strings.Contains(doc, id) || strings.Contains(doc, fmt.Sprintf("node-%d", 3-n)) {
			t.Errorf("machine %d /metadata: %d %s", n, code, doc)
		}
	}
	if code, body := get(t, alias(1), base+"/latest/user-data"); code != http.StatusOK || body != "#cloud-config\nhostname: node-1\n" {
		t.Errorf("machine 1 user-data: %d %q", code, body)
	}
	if code, _ := get(t, alias(2), base+"/latest/user-data"); code != http.StatusNotFound {
		t.Errorf("machine 2 (no user-data) user-data: %d, want 404", code)
	}
	// A caller no record names gets nothing, whatever it sends.
	for _, path := range []string{"/latest/meta-data/hostname", "/metadata", "/latest/user-data", "/", "/latest/meta-data/"} {
		if code, body := get(t, "127.0.0.99", base+path); code != http.StatusNotFound {
			t.Errorf("unknown caller GET %s: %d %q", path, code, body)
		}
	}
	// Forging X-Forwarded-For (no trusted proxies configured) changes nothing.
	req, _ := http.NewRequest("GET", base+"/latest/meta-data/hostname", nil)
	req.Header.Set("X-Forwarded-For", alias(1))
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(alias(2))}}
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: d.DialContext}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "node-2" {
		t.Errorf("machine 2 forging XFF of machine 1 got %q", b)
	}
}

func TestHardwareChangesShowWithinASecond(t *testing.T) {
	s := servertest.Start(t)
	hw := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	push(t, hw, record(1, "node-1", ""))
	base := startMetadata(t, s, "127.0.0.1:0")
	hostname := func(n int) string {
		code, body := get(t, alias(n), base+"/latest/meta-data/hostname")
		return fmt.Sprint(code, " ", body)
	}
	if got := hostname(1); got != "200 node-1" {
		t.Fatalf("before the update: %s", got)
	}

	push(t, hw, record(1, "renamed-1", `, "userdata": "#!/bin/sh\necho hi\n"`))
	eventually(t, time.Second, "updated hostname", func() bool { return hostname(1) == "200 renamed-1" })
	if code, body := get(t, alias(1), base+"/latest/user-data"); code != 200 || body != "#!/bin/sh\necho hi\n" {
		t.Errorf("user-data after the update: %d %q", code, body)
	}

	// A machine added while serving is known at once; a deleted one is not.
	push(t, hw, record(3, "node-3", ""))
	eventually(t, time.Second, "new machine", func() bool { return hostname(3) == "200 node-3" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := hw.Delete(ctx, &hardware.DeleteRequest{Id: record(3, "", "").GetId()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "deleted machine gone", func() bool { return hostname(3) == "404 not found\n" })

	// The metadata address moved to another alias: the old one answers
	// nothing, the new one answers the machine.
	moved := record(1, "renamed-1", "")
	moved.Metadata = strings.Replace(moved.Metadata, alias(1), alias(4), 1)
	push(t, hw, moved)
	eventually(t, time.Second, "address moved", func() bool { return hostname(4) == "200 renamed-1" })
	if got := hostname(1); got != "404 not found\n" {
		t.Errorf("old address after the move: %s", got)
	}
}

// While herd-server is away the service keeps answering from memory.
func TestServesWhileServerIsAway(t *testing.T) {
	s := servertest.Start(t)
	hw := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	push(t, hw, record(1, "node-1", ""))
	base := startMetadata(t, s, "127.0.0.1:0")
	s.Stop()
	if code, body := get(t, alias(1), base+"/latest/meta-data/hostname"); code != 200 || body != "node-1" {
		t.Fatalf("with the server stopped: %d %q", code, body)
	}
	s.Restart()
	push(t, hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken)), record(1, "back-1", ""))
	eventually(t, 15*time.Second, "update after the server came back", func() bool {
		code, body := get(t, alias(1), base+"/latest/meta-data/hostname")
		return code == 200 && body == "back-1"
	})
}

func TestFlags(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // error substring, "" = ok
	}{
		{"no server", []string{"--token", "x"}, nil, "no herd-server address"},
		{"no token", []string{"--server", "127.0.0.1:1"}, nil, "no token"},
		{"bad proxies", []string{"--trusted-proxies", "10.0.0.0/99"}, nil, "trusted proxy"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "log level"},
		{"stray argument", []string{"serve"}, nil, "unexpected arguments"},
		{"grpc authority from the environment", []string{"--trusted-proxies", "x"}, map[string]string{"HERD_GRPC_AUTHORITY": "h:1"}, "trusted proxy"},
	}
	for _, tt := range tests {
		lookup := none
		if tt.env != nil {
			lookup = func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
		}
		err := run(context.Background(), tt.args, lookup, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.want)
		}
	}
	s, err := parse(nil, func(k string) (string, bool) {
		v, ok := map[string]string{"HERD_GRPC_AUTHORITY": "h:1", "HERD_TOKEN": "tok", "HERD_TRUSTED_PROXIES": "10.0.0.0/8"}[k]
		return v, ok
	}, io.Discard)
	if err != nil || s.conn.Server != "h:1" || s.conn.Token != "tok" || s.trustedProxies != "10.0.0.0/8" || s.httpAddr != ":50061" {
		t.Errorf("environment fallbacks: %+v, %v", s, err)
	}
	s, _ = parse([]string{"--server", "flag:1"}, func(k string) (string, bool) {
		v, ok := map[string]string{"HERD_SERVER": "env:1", "HERD_GRPC_AUTHORITY": "h:1"}[k]
		return v, ok
	}, io.Discard)
	if s.conn.Server != "flag:1" {
		t.Errorf("flag should win over the environment: %q", s.conn.Server)
	}
}
