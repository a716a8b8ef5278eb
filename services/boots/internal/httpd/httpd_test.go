package httpd

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/script"
	"github.com/herd-metal/herd/services/boots/internal/tftp"
)

type fakeMachines []inventory.Machine

func (f fakeMachines) ByMAC(mac net.HardwareAddr) (inventory.Machine, bool) {
	for _, m := range f {
		for _, i := range m.Hardware().GetNetwork().GetInterfaces() {
			if i.GetDhcp().GetMac() == mac.String() {
				return m, true
			}
		}
	}
	return inventory.Machine{}, false
}

func (f fakeMachines) ByIP(ip netip.Addr) (inventory.Machine, bool) {
	for _, m := range f {
		for _, i := range m.Hardware().GetNetwork().GetInterfaces() {
			if i.GetDhcp().GetIp().GetAddress() == ip.String() {
				return m, true
			}
		}
	}
	return inventory.Machine{}, false
}

func mk(id, mac, ip, metadata string, allow bool) inventory.Machine {
	return inventory.NewMachine(&hardware.Hardware{Id: id, Metadata: metadata,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp:    &hardware.Hardware_DHCP{Mac: mac, Ip: &hardware.Hardware_DHCP_IP{Address: ip}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: allow, AllowWorkflow: true},
		}}}}, id+".tok", nil)
}

// The OVH machine: net0 public (not in the inventory), net1 on herd's
// network with a reserved address.
var machines = fakeMachines{
	mk("hw-1", "52:54:00:00:00:01", "10.0.5.10", "", true),
	mk("hw-2", "52:54:00:00:00:02", "10.0.5.11", `{"boots": {"ipxe_params": "off"}}`, true),
	mk("hw-3", "52:54:00:00:00:03", "10.0.5.12", "", false),
}

func newServer(t *testing.T, requireIP bool) *Server {
	t.Helper()
	return newServerWith(t, observe.NewRegistry(), func(c *Config) { c.RequireIP = requireIP })
}

// newServerWith is newServer with its registry and settings changed by set.
func newServerWith(t *testing.T, reg *prometheus.Registry, set func(*Config)) *Server {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ipxe.efi"), []byte("EFI binary"), 0o644)
	bin, err := tftp.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bin.Close() })
	osie := t.TempDir()
	os.WriteFile(filepath.Join(osie, "vmlinuz-x86_64"), []byte("kernel"), 0o644)
	cfg := Config{Script: script.Config{BaseURL: "http://10.0.5.1:8080", OSIEBaseURL: "http://10.0.5.1:8080/osie", Kernel: "vmlinuz-{arch}", Initrd: "initramfs-{arch}"},
		Params: script.ParamsAuto, Binaries: bin, OSIEDir: osie}
	set(&cfg)
	s, err := New(cfg, machines, slog.New(slog.NewTextHandler(io.Discard, nil)), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(s http.Handler, method, target, remote string) (int, string) {
	r := httptest.NewRequest(method, target, nil)
	if method == "POST" {
		r = httptest.NewRequest(method, target, strings.NewReader("event=kernel_fetched&mac=52-54-00-00-00-01"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestRoutes(t *testing.T) {
	s := newServer(t, false)
	tests := []struct {
		name, method, target, remote string
		code                         int
		want, notWant                string
	}{
		{"auto", "GET", "/auto.ipxe", "10.0.5.10:1000", 200, "chain --autofree http://10.0.5.1:8080/machines/${herdmac}/boot.ipxe", ""},
		{"own script by IP and MAC", "GET", "/machines/52-54-00-00-00-01/boot.ipxe", "10.0.5.10:1000", 200, "herd.token=hw-1.tok", ""},
		{"own script, auto params", "GET", "/machines/52-54-00-00-00-01/boot.ipxe", "10.0.5.10:1000", 200, "params || goto", ""},
		{"per-hardware params off", "GET", "/machines/52-54-00-00-00-02/boot.ipxe", "10.0.5.11:1000", 200, "events?event=kernel_fetched", "params"},
		{"identified by source IP, MAC unknown (net0 of OVH)", "GET", "/machines/aa-bb-cc-dd-ee-ff/boot.ipxe", "10.0.5.10:1000", 200, "worker_id=hw-1", ""},
		{"known IP naming another machine's MAC: 404", "GET", "/machines/52-54-00-00-00-02/boot.ipxe", "10.0.5.10:1000", 404, "", "hw-2"},
		{"unknown IP names a MAC (proxy mode, OVH)", "GET", "/machines/52-54-00-00-00-01/boot.ipxe", "192.0.2.7:1000", 200, "worker_id=hw-1", ""},
		{"unknown IP and MAC: 404", "GET", "/machines/aa-bb-cc-dd-ee-ff/boot.ipxe", "192.0.2.7:1000", 404, "", "worker"},
		{"bad MAC from unknown IP: 404", "GET", "/machines/zz/boot.ipxe", "192.0.2.7:1000", 404, "", ""},
		{"unknown caller, auto.ipxe's query: a script that says so and fails", "GET", "/machines/aa-bb-cc-dd-ee-ff/boot.ipxe?iface=net0&net0=aa-bb-cc-dd-ee-ff&net1=52-54-00-00-00-01&net2=&net3=", "192.0.2.7:1000", 200,
			"echo herd: herd-boots has no hardware for this caller (unknown_mac):\necho herd: MAC aa:bb:cc:dd:ee:ff, interface net0, from 192.0.2.7\necho herd: net1's MAC 52:54:00:00:00:01 is known to herd", "worker"},
		{"known caller, auto.ipxe's query: its script", "GET", "/machines/52-54-00-00-00-01/boot.ipxe?iface=net1&net0=aa-bb-cc-dd-ee-ff&net1=52-54-00-00-00-01", "192.0.2.7:1000", 200, "worker_id=hw-1", "herdunknown"},
		{"unknown caller without auto.ipxe's query: 404 with the hint", "GET", "/machines/aa-bb-cc-dd-ee-ff/boot.ipxe", "192.0.2.7:1000", 404, "no hardware record has MAC aa:bb:cc:dd:ee:ff", "herdunknown"},
		{"not allowed", "GET", "/machines/52-54-00-00-00-03/boot.ipxe", "10.0.5.12:1000", 200, "netboot is not allowed", "kernel"},
		{"event GET", "GET", "/events?event=kernel_fetched&mac=52-54-00-00-00-01", "10.0.5.10:1000", 200, "#!ipxe", ""},
		{"event POST", "POST", "/events", "10.0.5.10:1000", 200, "#!ipxe", ""},
		{"event by the caller's address alone", "GET", "/events?event=initrd_fetched", "10.0.5.10:1000", 200, "#!ipxe", ""},
		{"event bad name", "GET", "/events?event=DROP%20TABLE", "10.0.5.10:1000", 400, "", ""},
		{"event unknown caller", "GET", "/events?event=kernel_fetched&mac=aa-bb-cc-dd-ee-ff", "192.0.2.7:1000", 404, "", ""},
		// Issue 14, finding 2: a MAC alone identifies no one for events.
		{"event naming a machine's MAC from an address no hardware owns", "GET", "/events?event=kernel_fetched&mac=52-54-00-00-00-01", "192.0.2.7:1000", 404, "", "#!ipxe"},
		{"event POST naming a machine's MAC from elsewhere", "POST", "/events", "192.0.2.7:1000", 404, "", "#!ipxe"},
		{"event naming a machine's MAC from another machine's address", "GET", "/events?event=kernel_fetched&mac=52-54-00-00-00-01", "10.0.5.11:1000", 404, "", "#!ipxe"},
		{"event name outside the fixed set", "GET", "/events?event=pwned_1&mac=52-54-00-00-00-01", "10.0.5.10:1000", 400, "event: want one of kernel_fetched, initrd_fetched", ""},
		{"binary", "GET", "/ipxe/ipxe.efi", "10.0.5.10:1000", 200, "EFI binary", ""},
		{"binary traversal", "GET", "/ipxe/..%2fsecret", "10.0.5.10:1000", 404, "", ""},
		{"osie", "GET", "/osie/vmlinuz-x86_64", "10.0.5.10:1000", 200, "kernel", ""},
		{"healthz", "GET", "/healthz", "10.0.5.10:1000", 200, "ok", ""},
		{"metrics", "GET", "/metrics", "10.0.5.10:1000", 200, "herd_boots_script_renders_total", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(s, tt.method, tt.target, tt.remote)
			if code != tt.code || !strings.Contains(body, tt.want) || (tt.notWant != "" && strings.Contains(body, tt.notWant)) {
				t.Fatalf("%d %q\n%s", code, tt.want, body)
			}
		})
	}
	s = newServer(t, true)
	if code, _ := get(s, "GET", "/machines/52-54-00-00-00-01/boot.ipxe", "192.0.2.7:1000"); code != 404 {
		t.Fatalf("require-ip: unknown address got %d", code)
	}
}

// fakeLeases is proxy mode's learned addresses.
type fakeLeases map[string]netip.Addr

func (f fakeLeases) Address(mac net.HardwareAddr) (netip.Addr, bool) {
	a, ok := f[mac.String()]
	return a, ok
}

// TestEventsFromOwnAddress (issue 14, finding 2): boot events are taken
// from the machine's own address only — its reservation, or in proxy mode
// the address its DHCP request asked for — and only under the fixed names;
// whatever names requests send, herd_boots_events_total keeps its four
// series.
func TestEventsFromOwnAddress(t *testing.T) {
	reg := observe.NewRegistry()
	s := newServerWith(t, reg, func(c *Config) {
		c.Leases = fakeLeases{"52:54:00:00:00:01": netip.MustParseAddr("10.0.9.150")}
	})
	for _, tt := range []struct {
		target, remote string
		code           int
	}{
		{"/events?event=kernel_fetched&mac=52-54-00-00-00-01", "10.0.5.10:1", 200},  // its reservation
		{"/events?event=kernel_fetched&mac=52-54-00-00-00-01", "10.0.9.150:1", 200}, // the address it asked the other server for
		{"/events?event=kernel_fetched&mac=52-54-00-00-00-01", "10.0.9.151:1", 404},
		{"/events?event=kernel_fetched&mac=52-54-00-00-00-02", "10.0.9.150:1", 404}, // another machine's MAC from this one's lease
		{"/events?event=kernel_fetched", "10.0.9.150:1", 404},                       // no MAC: the lease is no reservation
	} {
		if code, body := get(s, "GET", tt.target, tt.remote); code != tt.code {
			t.Errorf("%s from %s: %d %s, want %d", tt.target, tt.remote, code, body, tt.code)
		}
	}
	for i := range 1000 {
		if code, _ := get(s, "GET", fmt.Sprintf("/events?event=e%d&mac=52-54-00-00-00-01", i), "10.0.5.10:1"); code != 400 {
			t.Fatalf("event e%d: %d, want 400", i, code)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "herd_boots_events_total" {
			for _, m := range mf.GetMetric() {
				got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{"script_served": 0, "kernel_fetched": 2, "initrd_fetched": 0, "other": 1000}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("herd_boots_events_total = %v, want %v", got, want)
	}
}

func FuzzMachineRoute(f *testing.F) {
	for _, s := range []string{"52-54-00-00-00-01", "52:54:00:00:00:01", "", "../..", "52-54-00-00-00-0g"} {
		f.Add(s, "10.0.5.10")
	}
	f.Fuzz(func(t *testing.T, mac, ip string) {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return
		}
		m, _, why := Identify(machines, mac, a, false)
		if why == "" {
			if own, isOwn := machines.ByIP(a); isOwn && own.ID != m.ID {
				t.Fatalf("caller %s got machine %s", ip, m.ID)
			}
		}
		// Events: only from the machine's own address.
		leases := fakeLeases{"52:54:00:00:00:01": netip.MustParseAddr("10.0.9.150")}
		m, _, why = IdentifyOwn(machines, leases, mac, a)
		if why == "" {
			own, isOwn := machines.ByIP(a)
			learned := a == netip.MustParseAddr("10.0.9.150") && m.ID == "hw-1"
			if !(isOwn && own.ID == m.ID) && !learned {
				t.Fatalf("event from %s naming %q taken as machine %s", ip, mac, m.ID)
			}
		}
	})
}

// TestScriptOverHTTPS: a script fetched over TLS points at the HTTPS root
// for everything it fetches next (the machine script, kernel, initrd,
// events); one fetched over plain HTTP keeps HTTP. Without an HTTPS
// configuration a TLS request gets the plain one.
func TestScriptOverHTTPS(t *testing.T) {
	httpsCfg := script.Config{BaseURL: "https://10.0.5.1:8443", OSIEBaseURL: "https://10.0.5.1:8443/osie", Kernel: "vmlinuz-{arch}", Initrd: "initramfs-{arch}"}
	with := newServerWith(t, observe.NewRegistry(), func(c *Config) { c.ScriptHTTPS = httpsCfg })
	without := newServer(t, false)
	fetch := func(s *Server, target string, tlsOn bool) string {
		r := httptest.NewRequest("GET", target, nil)
		r.RemoteAddr = "10.0.5.10:1000"
		if tlsOn {
			r.TLS = &tls.ConnectionState{HandshakeComplete: true}
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Fatalf("%s: %d %s", target, w.Code, w.Body)
		}
		return w.Body.String()
	}
	const machine = "/machines/52-54-00-00-00-01/boot.ipxe"
	tests := []struct {
		name          string
		s             *Server
		target        string
		tls           bool
		want, notWant []string
	}{
		{"auto.ipxe over HTTPS", with, "/auto.ipxe", true, []string{"chain --autofree https://10.0.5.1:8443/machines/"}, []string{"http://"}},
		{"machine script over HTTPS", with, machine, true,
			[]string{"kernel --name vmlinuz https://10.0.5.1:8443/osie/vmlinuz-x86_64", "initrd --name initrd https://10.0.5.1:8443/osie/initramfs-x86_64",
				"https://10.0.5.1:8443/events"}, []string{"http://"}},
		{"auto.ipxe over HTTP", with, "/auto.ipxe", false, []string{"chain --autofree http://10.0.5.1:8080/machines/"}, []string{"https://"}},
		{"machine script over HTTP", with, machine, false, []string{"kernel --name vmlinuz http://10.0.5.1:8080/osie/"}, []string{"https://"}},
		{"TLS without an HTTPS configuration", without, machine, true, []string{"kernel --name vmlinuz http://10.0.5.1:8080/osie/"}, []string{"https://"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := fetch(tt.s, tt.target, tt.tls)
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(body, w) {
					t.Errorf("has %q:\n%s", w, body)
				}
			}
		})
	}
}
