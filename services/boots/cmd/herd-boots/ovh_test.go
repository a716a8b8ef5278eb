package main

import (
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
func startProvider(t *testing.T, l *lab) {
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
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, providerScript) })}
	go hs.Serve(hl)
	srv, err := server4.NewServer("", nil, func(c net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
		mt := dhcpv4.MessageTypeOffer
		if m.MessageType() == dhcpv4.MessageTypeRequest {
			mt = dhcpv4.MessageTypeAck
		} else if m.MessageType() != dhcpv4.MessageTypeDiscover {
			return
		}
		r, err := dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(mt), dhcpv4.WithYourIP(net.IPv4(10, 78, 0, 10)),
			dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithServerIP(net.IPv4(10, 78, 0, 1)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 78, 0, 1))), dhcpv4.WithLeaseTime(600),
			func(d *dhcpv4.DHCPv4) { d.BootFileName = "http://10.78.0.1:8081/provider.ipxe" })
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
