package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/httpd"
	"github.com/herd-metal/herd/services/boots/internal/netnstest"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

var bootsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herd-boots-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bootsBin = filepath.Join(dir, "herd-boots")
	_, here, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-race", "-o", bootsBin, ".")
	cmd.Dir = filepath.Dir(here)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// HERD_TEST_BOOTS_BIN runs the tests against another build (an older
	// one, to see a security test fail on it) instead of this source's.
	if other := os.Getenv("HERD_TEST_BOOTS_BIN"); other != "" {
		bootsBin, cmd = other, exec.Command("true")
	}
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building herd-boots:", err)
		os.Exit(1)
	}
	code := servertest.Main(m, true)
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestRegistryCredentials(t *testing.T) {
	const secret = "pw-s3cret"
	env := map[string]string{"HERD_REGISTRY": "10.0.5.1:5000", "HERD_REGISTRY_USER": "herd", "HERD_REGISTRY_PASSWORD": secret}
	s, err := parse([]string{"--public-ip", "10.0.5.1"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.registry != "10.0.5.1:5000" || s.registryUser != "herd" || s.registryPassword != secret {
		t.Fatalf("registry settings from the environment: %q %q (password set: %v)", s.registry, s.registryUser, s.registryPassword != "")
	}
	tests := []struct {
		name, registry, user, password, wantErr string
	}{
		{"none", "", "", "", ""},
		{"registry only", "r:5000", "", "", ""},
		{"both", "r:5000", "herd", secret, ""},
		{"user without password", "r:5000", "herd", "", "go together"},
		{"password without user", "r:5000", "", secret, "go together"},
		{"credentials without registry", "", "herd", secret, "need --registry"},
		{"password with a blank", "r:5000", "herd", "pw s3cret", "--registry-password holds a blank"},
		{"password with a $", "r:5000", "herd", "pw$s3cret", "--registry-password holds a $"},
		{"user with a quote", "r:5000", `he"rd`, secret, "--registry-user holds a double quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkRegistry(tt.registry, tt.user, tt.password)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if err != nil && tt.password != "" && strings.Contains(err.Error(), tt.password) {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	// run refuses them before it dials anything.
	args := []string{"--server", "x:1", "--token", "t", "--public-ip", "10.0.5.1", "--registry-user", "herd"}
	if err := run(context.Background(), args, func(string) (string, bool) { return "", false }, io.Discard); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("run with a user and no password: %v", err)
	}
}

func TestParse(t *testing.T) {
	env := map[string]string{"HERD_GRPC_AUTHORITY": "10.0.5.1:42113", "HERD_IPXE_PARAMS": "off"}
	s, err := parse([]string{"--public-ip", "10.0.5.1"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.conn.Server != "10.0.5.1:42113" || s.ipxeParams != "off" || s.dhcpMode != "reservation" || s.publicIP != "10.0.5.1" {
		t.Fatalf("%+v", s)
	}
	// The limits of issue 14: documented defaults, HERD_* overrides.
	if s.httpLimits != httpd.DefaultLimits || s.syslogRate != 100 || s.syslogBurst != 500 {
		t.Fatalf("defaults: http %+v, syslog %v/%v", s.httpLimits, s.syslogRate, s.syslogBurst)
	}
	env = map[string]string{"HERD_HTTP_IDLE_TIMEOUT": "5s", "HERD_HTTP_MAX_CONNS_PER_SOURCE": "8", "HERD_SYSLOG_RATE": "0"}
	s, err = parse([]string{"--http-read-timeout", "3s"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.httpLimits.Idle != 5*time.Second || s.httpLimits.PerSource != 8 || s.httpLimits.Read != 3*time.Second || s.syslogRate != 0 {
		t.Fatalf("from flags and the environment: http %+v, syslog rate %v", s.httpLimits, s.syslogRate)
	}
	for _, args := range [][]string{
		{"--server", "x:1", "--token", "t"}, // no public ip
		{"--server", "x:1", "--token", "t", "--public-ip", "10.0.5.1", "--dhcp-mode", "nope"},
		{"--server", "x:1", "--token", "t", "--public-ip", "10.0.5.1", "--ipxe-params", "maybe"},
		{"--server", "x:1", "--token", "t", "--public-ip", "10.0.5.1"}, // no dhcp interface
	} {
		if err := run(context.Background(), args, func(string) (string, bool) { return "", false }, io.Discard); err == nil {
			t.Errorf("run %v: no error", args)
		}
	}
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// lab is herd-server on the host, herd-boots in namespace srv on 10.77.0.1,
// and a client namespace joined to it by a veth pair.
type lab struct {
	server   *servertest.Server
	srv, cli *netnstest.NS
	log      *syncBuffer
	hw       hardware.HardwareServiceClient
}

const (
	hwKnown  = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a01"
	hwLate   = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a02"
	bootsIP  = "10.77.0.1"
	bootsURL = "http://10.77.0.1:8080"
)

func newLab(t *testing.T, clientMAC net.HardwareAddr, extra ...string) *lab {
	t.Helper()
	return newLabWith(t, clientMAC, func(*servertest.Server) []string { return extra })
}

// newLabWith is newLab with herd-boots' extra arguments made once
// herd-server runs (from its state directory, say).
func newLabWith(t *testing.T, clientMAC net.HardwareAddr, extra func(*servertest.Server) []string) *lab {
	t.Helper()
	realtest.Root(t)
	l := &lab{server: servertest.Start(t)}
	l.srv = netnstest.New(t, "hbs")
	if clientMAC != nil {
		l.cli = netnstest.New(t, "hbc")
		netnstest.Veth(t, l.srv, "hb0", bootsIP+"/24", l.cli, "hc0", clientMAC)
	} else {
		// A bridge hb0 in the boots namespace with a tap tp0 for a VM
		// (and room for more peers, e.g. another DHCP server).
		l.srv.IP("link", "add", "hb0", "type", "bridge")
		l.srv.IP("addr", "add", bootsIP+"/24", "dev", "hb0")
		l.srv.IP("link", "set", "hb0", "up")
		l.srv.IP("tuntap", "add", "dev", "tp0", "mode", "tap")
		l.srv.IP("link", "set", "tp0", "master", "hb0")
		l.srv.IP("link", "set", "tp0", "up")
	}
	// herd-server listens on the host's loopback: forward its ports into
	// the boots namespace's loopback.
	l.srv.Forward(l.server.GRPC, l.server.GRPC)
	httpHost := strings.TrimPrefix(l.server.HTTP, "http://")
	l.srv.Forward(httpHost, httpHost)
	l.hw = hardware.NewHardwareServiceClient(l.server.Dial(servertest.AdminToken))

	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"--server", l.server.GRPC, "--cert-url", l.server.HTTP + "/cert", "--token", servertest.AdminToken,
		"--public-ip", bootsIP, "--dhcp-interface", "hb0", "--http-addr", bootsIP + ":8080", "--log-format", "text", "--log-level", "debug"}, extra(l.server)...)
	cmd := l.srv.Command(ctx, bootsBin, args...)
	l.log = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = l.log, l.log
	cmd.Env = append(os.Environ(), "HERD_TOKEN=") // flags only
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("herd-boots log:\n%s", l.log.String())
		}
	})
	// Ready when /healthz says the inventory is synced.
	c := l.srv.HTTPClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := c.Get(bootsURL + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-boots not healthy: %v\n%s", err, l.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return l
}

func (l *lab) push(t *testing.T, id string, mac net.HardwareAddr, ip string, allowPXE bool, metadata string) {
	t.Helper()
	_, err := l.hw.Push(context.Background(), &hardware.PushRequest{Data: &hardware.Hardware{Id: id, Metadata: metadata,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac.String(), Hostname: "node1.lab.example", LeaseTime: 600, Arch: "x86_64",
				NameServers: []string{"10.77.0.53"}, TimeServers: []string{"10.77.0.123"},
				Ip: &hardware.Hardware_DHCP_IP{Address: ip, Netmask: "255.255.255.0", Gateway: bootsIP}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: allowPXE, AllowWorkflow: true},
		}}}}})
	if err != nil {
		t.Fatalf("push %s: %v", id, err)
	}
}

// waitMachines waits until boots' inventory holds n machines.
func (l *lab) waitMachines(t *testing.T, n int) {
	t.Helper()
	c := l.srv.HTTPClient()
	want := fmt.Sprintf("herd_boots_inventory_machines %d\n", n)
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := c.Get(bootsURL + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(b), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("boots' inventory never reached %d machines", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// udhcpcScript records udhcpc's events; it configures the address inside
// the client namespace only, and never touches resolv.conf.
const udhcpcScript = `#!/bin/sh
out="$(dirname "$0")/udhcpc.out"
echo "event=$1" >> "$out"
[ "$1" = bound ] || exit 0
for v in interface ip subnet router dns ntpsrv hostname domain lease serverid boot_file siaddr broadcast; do
	eval "echo $v=\${$v}" >> "$out"
done
ip addr add "$ip/$mask" dev "$interface" 2>/dev/null || ip addr add "$ip/24" dev "$interface"
`

// udhcpc runs busybox udhcpc as a BIOS PXE client in the client namespace
// with our script; it returns the recorded variables (nil: no lease).
// extra are more udhcpc arguments (-x OPTION:HEX to send options).
func (l *lab) udhcpc(t *testing.T, extra ...string) map[string]string {
	t.Helper()
	bb := realtest.Command(t, "busybox")
	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := l.cli.Command(ctx, bb, append([]string{"udhcpc", "-i", "hc0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-A", "1",
		"-s", script, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"}, extra...)...)
	out, err := cmd.CombinedOutput()
	b, _ := os.ReadFile(filepath.Join(dir, "udhcpc.out"))
	if err != nil {
		t.Logf("udhcpc: %v\n%s\n%s", err, out, b)
		return nil
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

func TestRealDHCPClients(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	realtest.Command(t, "busybox")
	known := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x01}
	const registryPassword = "pw-s3cret.9"
	l := newLab(t, known, "--registry", bootsIP+":5000", "--registry-user", "herd", "--registry-password", registryPassword)
	l.push(t, hwKnown, known, "10.77.0.10", true, "")
	l.waitMachines(t, 1)

	// A workflow waits for the machine: its timeline notes each step.
	l.server.MustHerd("version: \"0.1\"\nname: boot-note\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: a\n        image: noop\n", "template", "create")
	wf := l.server.CreateWorkflow("boot-note", `{"device_1":"`+known.String()+`"}`)
	vars := l.udhcpc(t)
	want := map[string]string{"ip": "10.77.0.10", "subnet": "255.255.255.0", "router": bootsIP, "dns": "10.77.0.53",
		"ntpsrv": "10.77.0.123", "hostname": "node1", "domain": "lab.example", "lease": "600", "serverid": bootsIP,
		"boot_file": "undionly.kpxe", "siaddr": bootsIP, "broadcast": "10.77.0.255"}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("udhcpc %s = %q, want %q (all: %v)", k, vars[k], v, vars)
		}
	}

	// With a workflow waiting and the address configured, the machine gets
	// its own script, with its worker credential, over HTTP from the client
	// namespace, and the workflow's events note it.
	c := l.cli.HTTPClient()
	res, err := c.Get(bootsURL + "/machines/52-54-00-aa-00-01/boot.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "herd.token="+l.server.WorkerToken(hwKnown)) {
		t.Errorf("machine script: %d\n%s", res.StatusCode, body)
	}
	// The registry's credentials reach the OSIE under Tinkerbell v0.6's
	// names, and the password no log line.
	if !strings.Contains(string(body), "docker_registry="+bootsIP+":5000 registry_username=herd registry_password="+registryPassword+" ") {
		t.Errorf("machine script lacks the registry credentials:\n%s", body)
	}
	if strings.Contains(l.log.String(), registryPassword) {
		t.Errorf("herd-boots logged the registry password")
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		events := l.server.MustHerd("", "workflow", "events", wf)
		if strings.Contains(events, "ipxe script served") && strings.Contains(events, "dhcp offer 10.77.0.10: tftp undionly.kpxe") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workflow %s lacks the DHCP offer's or the script's note:\n%s", wf, events)
		}
	}
	res, err = c.Get(bootsURL + "/auto.ipxe")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("auto.ipxe: %v", err)
	}
	res.Body.Close()

	// An unknown MAC gets nothing; once pushed, the same MAC gets its
	// reservation without restarting boots (the Watch stream).
	l.cli.IP("addr", "flush", "dev", "hc0")
	unknown := net.HardwareAddr{0x52, 0x54, 0x00, 0xbb, 0x00, 0x02}
	l.cli.IP("link", "set", "hc0", "address", unknown.String())
	if vars := l.udhcpc(t); vars != nil {
		t.Fatalf("unknown MAC got a lease: %v", vars)
	}
	l.push(t, hwLate, unknown, "10.77.0.20", false, "")
	l.waitMachines(t, 2)
	vars = l.udhcpc(t)
	if vars["ip"] != "10.77.0.20" || vars["boot_file"] != "" {
		t.Fatalf("late machine (allow_pxe=false): %v", vars)
	}

	if !strings.Contains(l.log.String(), "unknown MAC") {
		t.Errorf("no log line for the unknown MAC")
	}
	t.Run("dhclient", func(t *testing.T) { dhclient(t, l) })
}

// dhclient runs ISC dhclient once with our script (-sf), its own lease and
// pid files, in the client namespace.
func dhclient(t *testing.T, l *lab) {
	bin := realtest.Command(t, "dhclient")
	dir := t.TempDir()
	l.cli.IP("addr", "flush", "dev", "hc0")
	script := filepath.Join(dir, "dhclient.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
echo "reason=$reason" >> "$(dirname "$0")/dhclient.out"
[ "$reason" = BOUND ] && echo "ip=$new_ip_address file=$new_filename host=$new_host_name" >> "$(dirname "$0")/dhclient.out"
exit 0
`), 0o755)
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte("timeout 15;\nretry 1;\nsend vendor-class-identifier \"PXEClient:Arch:00000:UNDI:002001\";\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := l.cli.Command(ctx, bin, "-1", "-v", "-sf", script, "-cf", conf, "-lf", filepath.Join(dir, "leases"),
		"-pf", filepath.Join(dir, "pid"), "hc0")
	out, err := cmd.CombinedOutput()
	// dhclient daemonizes after BOUND unless -d; stop it by its pid file.
	if b, e := os.ReadFile(filepath.Join(dir, "pid")); e == nil {
		exec.Command("kill", strings.TrimSpace(string(b))).Run()
	}
	rec, _ := os.ReadFile(filepath.Join(dir, "dhclient.out"))
	if err != nil || !strings.Contains(string(rec), "ip=10.77.0.20 file= host=node1") {
		t.Fatalf("dhclient: %v\n%s\nscript saw:\n%s", err, out, rec)
	}
}
