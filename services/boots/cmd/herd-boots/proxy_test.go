package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/herd-metal/herd/services/boots/internal/netnstest"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// TestQEMUProxyDHCP: dnsmasq hands out the address, herd-boots in proxy
// mode only the boot options;
// the machine, whose address is not its reservation, is known by its MAC.
func TestQEMUProxyDHCP(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	qemu := realtest.Command(t, "qemu-system-x86_64")
	dnsmasq := realtest.Command(t, "dnsmasq")
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
	l := newLab(t, nil, "--dhcp-mode", "proxy", "--ipxe-params", "off", "--osie-dir", osie)

	// The site's DHCP server, in its own namespace on the same link.
	dns := netnstest.New(t, "hbd")
	netnstest.Veth(t, dns, "hd0", "10.77.0.2/24", l.srv, "hbd0", nil)
	l.srv.IP("link", "set", "hbd0", "master", "hb0")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	dm := dns.Command(ctx, dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root", "--interface=hd0", "--bind-interfaces",
		"--dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,10m", "--no-ping", "--no-resolv", "--no-hosts", "--log-dhcp",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"))
	dmLog := &syncBuffer{}
	dm.Stdout, dm.Stderr = dmLog, dmLog
	if err := dm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		dm.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", dmLog.String())
		}
	})

	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xcc, 0x00, 0x01}
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	out := runVM(t, l, qemu, "-netdev", "tap,id=n0,ifname=tp0,script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac="+mac.String()+",romfile="+rom+",bootindex=1")
	defer func() {
		if t.Failed() {
			t.Logf("console:\n%s", out)
		}
	}()
	if !regexp.MustCompile(`net0: 10\.77\.0\.1[0-5][0-9]/255\.255\.255\.0`).MatchString(out) {
		t.Errorf("the address did not come from dnsmasq")
	}
	for _, want := range []string{"Filename: " + bootsURL + "/auto.ipxe", "herd: hardware " + hwKnown, "herd: booting"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	logs := l.log.String()
	// iPXE takes the boot file from the proxy offer; it sends no request
	// to port 4011 then (that path is covered by the handler's tests).
	// Its events are recorded, from the address it asked dnsmasq for,
	// which boots learned from its DHCPREQUEST (issue 14, finding 2).
	for _, want := range []string{"reply=OFFER ip=0.0.0.0", "ipxe script served", `msg="boot event" event=kernel_fetched`,
		`msg="boot event" event=initrd_fetched`} {
		if !strings.Contains(logs, want) {
			t.Errorf("herd-boots log lacks %q", want)
		}
	}
}
