package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// providerScript is what OVH's own iPXE runs (the scenario in
// shared/seed): leave the public NIC, configure the private one from
// herd's DHCP and chain herd's auto.ipxe.
const providerScript = `#!ipxe
echo provider: chaining into the private network
ifclose net0
dhcp net1
set iface net1
chain --autofree ` + bootsURL + `/auto.ipxe || exit
`

// startProvider runs the provider's network on tap pv0 (10.78.0.0/24) in
// the boots namespace: a DHCP server that gives any client an address and
// the provider script, and the HTTP server of that script. herd-boots
// serves hb0 only and must never answer here.
func startProvider(t *testing.T, l *lab) { startProviderWith(t, l, providerScript, false) }

// startProviderWith is startProvider with another script and, with
// router, a default gateway (10.78.0.1) on the provider's leases, as
// real providers give: then iPXE's route through net0 comes first.
func startProviderWith(t *testing.T, l *lab, script string, router bool) {
	t.Helper()
	l.srv.IP("tuntap", "add", "dev", "pv0", "mode", "tap")
	l.srv.IP("addr", "add", "10.78.0.1/24", "dev", "pv0")
	l.srv.IP("link", "set", "pv0", "up")
	var hl net.Listener
	var dc net.PacketConn
	err := l.srv.Do(func() error {
		var err error
		if hl, err = net.Listen("tcp", "10.78.0.1:8081"); err != nil {
			return err
		}
		dc, err = server4.NewIPv4UDPConn("pv0", &net.UDPAddr{Port: 67})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, script) })}
	go hs.Serve(hl)
	srv, err := server4.NewServer("", nil, func(c net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		mt := dhcpv4.MessageTypeOffer
		if m.MessageType() == dhcpv4.MessageTypeRequest {
			mt = dhcpv4.MessageTypeAck
		} else if m.MessageType() != dhcpv4.MessageTypeDiscover {
			return
		}
		mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(mt), dhcpv4.WithYourIP(net.IPv4(10, 78, 0, 10)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithServerIP(net.IPv4(10, 78, 0, 1)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 78, 0, 1))), dhcpv4.WithLeaseTime(600),
			func(d *dhcpv4.DHCPv4) { d.BootFileName = "http://10.78.0.1:8081/provider.ipxe" }}
		if router {
			mods = append(mods, dhcpv4.WithRouter(net.IPv4(10, 78, 0, 1)))
		}
		r, err := dhcpv4.NewReplyFromRequest(m, mods...)
		if err == nil {
			c.WriteTo(r.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 68})
		}
	}, server4.WithConn(dc))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close(); hs.Close() })
}

// TestQEMUOVH: a VM with two NICs; net0 on the provider's network boots
// the provider script, which configures net1 from herd-boots and chains
// auto.ipxe with ${iface} = net1: the machine must be known by net1's MAC.
func TestQEMUOVH(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	qemu := realtest.Command(t, "qemu-system-x86_64")
	rom := "/usr/lib/ipxe/qemu/efi-e1000.rom"
	realtest.File(t, rom)
	realtest.File(t, "/usr/lib/ipxe/ipxe.lkrn")
	lkrn, err := os.ReadFile("/usr/lib/ipxe/ipxe.lkrn")
	if err != nil {
		t.Fatal(err)
	}
	osie := t.TempDir()
	os.WriteFile(filepath.Join(osie, "vmlinuz-x86_64"), lkrn, 0o644)
	os.WriteFile(filepath.Join(osie, "initramfs-x86_64"), []byte("stand-in initramfs"), 0o644)
	l := newLab(t, nil, "--ipxe-params", "auto", "--osie-dir", osie)
	startProvider(t, l)
	public := "52:54:00:dd:00:00"
	private := net.HardwareAddr{0x52, 0x54, 0x00, 0xcc, 0x00, 0x01}
	l.push(t, hwKnown, private, "10.77.0.10", true, "")
	l.waitMachines(t, 1)

	out := runVM(t, l, qemu,
		"-netdev", "tap,id=n0,ifname=pv0,script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac="+public+",romfile="+rom+",bootindex=1",
		"-netdev", "tap,id=n1,ifname=tp0,script=no,downscript=no",
		"-device", "e1000,netdev=n1,mac="+private.String()+",romfile=")
	logs := l.log.String()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", out)
		}
	}()
	for _, want := range []string{"provider: chaining into the private network", "herd: identifying as 52-54-00-cc-00-01 (interface net1)",
		"herd: hardware " + hwKnown + " (52-54-00-cc-00-01)", "herd: booting"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if _, after, _ := strings.Cut(out, "herd: booting"); !strings.Contains(after, "grpc_authority=") {
		t.Errorf("the OSIE kernel did not boot with our command line")
	}
	if strings.Contains(logs, public) || strings.Contains(logs, "52-54-00-dd-00-00") {
		t.Errorf("herd-boots saw the provider NIC (it serves hb0 only)")
	}
	if !strings.Contains(logs, "mac=52:54:00:cc:00:01") {
		t.Errorf("herd-boots never answered net1's DHCP")
	}
}

// brokenProviderScript is the provider script of issue 13: no `ifclose
// net0`, no `set iface net1`. With a gateway on net0, Debian's iPXE sends
// herd's requests through net0, from the provider's address with net0's
// MAC, which herd does not know.
const brokenProviderScript = `#!ipxe
echo provider: chaining without ifclose or set iface
dhcp net1 || goto failed
chain http://` + "10.77.0.1:8080" + `/auto.ipxe || goto failed
:failed
echo provider: failed
`

// TestQEMUOVHUnknownCaller: that provider script on Debian's iPXE (no
// params). herd-boots answers the unknown caller with a warning naming
// net0's MAC, the provider's address and iface net0, counts it, logs it
// throttled, and tells auto.ipxe, which prints on the console what it
// tried and what the provider script must set.
func TestQEMUOVHUnknownCaller(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	qemu := realtest.Command(t, "qemu-system-x86_64")
	rom := "/usr/lib/ipxe/qemu/efi-e1000.rom"
	realtest.File(t, rom)
	l := newLab(t, nil, "--ipxe-params", "auto", "--log-format", "json")
	startProviderWith(t, l, brokenProviderScript, true)
	public := "52:54:00:dd:00:00"
	private := net.HardwareAddr{0x52, 0x54, 0x00, 0xcc, 0x00, 0x01}
	l.push(t, hwKnown, private, "10.77.0.10", true, "")
	l.waitMachines(t, 1)

	out := runVM(t, l, qemu,
		"-netdev", "tap,id=n0,ifname=pv0,script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac="+public+",romfile="+rom+",bootindex=1",
		"-netdev", "tap,id=n1,ifname=tp0,script=no,downscript=no",
		"-device", "e1000,netdev=n1,mac="+private.String()+",romfile=")
	logs := l.log.String()
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", out)
		}
	}()
	for _, want := range []string{
		"provider: chaining without ifclose or set iface",
		"herd: identifying as 52-54-00-dd-00-00 (interface net0)",
		// boots' answer
		"herd: herd-boots has no hardware for this caller (unknown_mac):\r\nherd: MAC 52:54:00:dd:00:00, interface net0, from 10.78.0.10\r\n",
		"herd: net1's MAC 52:54:00:cc:00:01 is known to herd",
		// auto.ipxe's hint, with the settings expanded
		"herd: herd-boots knows no machine by this request:\r\nherd: MAC 52-54-00-dd-00-00, interface net0, address 10.78.0.10\r\n",
		"herd: the script that chained auto.ipxe set no iface: auto.ipxe used net0\r\n",
		"herd: - net0 52:54:00:dd:00:00 10.78.0.10\r\n",
		"herd: - net1 52:54:00:cc:00:01 10.77.0.10\r\n",
		"net0: 52:54:00:dd:00:00 using 82540em on 0000:00:03.0 (open)", // ifstat
		"herd: > ifclose net0\r\nherd: > dhcp netN\r\nherd: > set iface netN\r\n",
		"herd: herd-boots did not know MAC 52-54-00-dd-00-00 (interface net0): see above\r\n",
		"herd: giving up on herd_chain after 10 tries",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if n := strings.Count(out, "herd: herd-boots knows no machine by this request"); n != 1 {
		t.Errorf("auto.ipxe's hint printed %d times, want once", n)
	}
	if strings.Contains(out, "herd: hardware "+hwKnown) {
		t.Errorf("the unknown caller got the machine's script")
	}
	var warned []map[string]any
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "http: script for an unknown caller" {
			warned = append(warned, m)
		}
	}
	// Ten tries about 3 s apart: a line per 10 s, the rest counted.
	if len(warned) == 0 || len(warned) >= 10 {
		t.Fatalf("%d unknown-caller lines for 10 tries, want a few", len(warned))
	}
	w := warned[0]
	for k, v := range map[string]any{"level": "WARN", "mac": public, "iface": "net0", "reason": "unknown_mac",
		"known_iface": "net1", "known_mac": private.String(), "hardware_id": hwKnown} {
		if w[k] != v {
			t.Errorf("warning %s = %v, want %v", k, w[k], v)
		}
	}
	if r, _ := w["remote"].(string); !strings.HasPrefix(r, "10.78.0.10:") {
		t.Errorf("warning remote = %v, want the provider's address", w["remote"])
	}
	// What was held back after the last line goes unsaid; the metric has
	// every request.
	held := 0.0
	for _, m := range warned {
		if n, ok := m["suppressed"].(float64); ok {
			held += n
		}
	}
	res, err := l.srv.HTTPClient().Get(bootsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := fmt.Sprintf(`herd_boots_unknown_callers_total{reason="unknown_mac",route="script"} %d`, 10)
	if !strings.Contains(string(page), want) {
		t.Errorf("metrics lack %s", want)
	}
	if n := int(held) + len(warned); n > 10 || n < 10-3 {
		t.Errorf("%d lines + %v held back for 10 tries", len(warned), held)
	}
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimRight(line, "\r"); strings.HasPrefix(l, "herd:") && len(l) >= 80 {
			t.Errorf("console line wraps (%d columns): %s", len(l), l)
		}
	}
}
