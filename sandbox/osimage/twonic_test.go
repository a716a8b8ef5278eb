package osimage

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The OVH layout of the sandbox: the VM's first NIC on a provider network
// whose DHCP server runs no metadata service, the second on herd's, where
// the machine's address is reserved and herd-metadata listens.
const (
	providerNet  = "10.89.0.1/24"
	herdNet      = "10.88.0.1/24"
	herdMetadata = "10.88.0.1:50061"
)

// netns is a network namespace of the test's own, removed at its end.
type netns struct {
	name string
	t    *testing.T
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		ciRequire(t, "root (network namespaces, tap devices)", errors.New("not root"))
	}
	requireTools(t, "ip")
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	n := &netns{name: "herd-osimg-" + hex.EncodeToString(b), t: t}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip("link", "set", "lo", "up")
	return n
}

// ip runs `ip` inside the namespace.
func (n *netns) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
}

// listen opens a TCP listener inside the namespace: the socket is made on
// an OS thread switched into it, and keeps its namespace after. The thread
// is never switched back: its goroutine ends locked, so Go discards it.
func (n *netns) listen(addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", n.name, err)}
			return
		}
		l, err := net.Listen("tcp", addr)
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

// startDnsmasq runs dnsmasq in the namespace as the DHCP server of both
// networks: a pool on the provider's, only the reservations on herd's
// (as herd-boots hands out only its hardware records' addresses).
func (n *netns) startDnsmasq(reservations map[string]string) {
	n.t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	ciRequire(n.t, "dnsmasq (package dnsmasq-base)", err)
	dir := n.t.TempDir()
	args := []string{"netns", "exec", n.name, bin, "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--no-resolv", "--no-hosts", "--bind-dynamic", "--interface=brp", "--interface=brh",
		"--dhcp-range=10.89.0.20,10.89.0.99,255.255.255.0,1h", "--dhcp-range=10.88.0.0,static,255.255.255.0,1h",
		"--dhcp-authoritative", "--no-ping", "--log-dhcp", "--log-facility=" + filepath.Join(dir, "dnsmasq.log"),
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--user=root", "--group=root"}
	for mac, ip := range reservations {
		args = append(args, "--dhcp-host="+mac+","+ip)
	}
	cmd := exec.Command("ip", args...) // ip netns exec execs dnsmasq: the pid is dnsmasq's
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() {
		_ = cmd.Process.Kill() // our own dnsmasq, by its pid
		_ = cmd.Wait()
		if n.t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dnsmasq.log"))
			n.t.Logf("dnsmasq:\n%s%s", out.String(), b)
		}
	})
}

// hostnameByIP is a tiny herd-metadata that, like the real one, knows the
// machine by the address it calls from.
type hostnameByIP struct {
	mu    sync.Mutex
	names map[string]string
	asked map[string]int
}

func (h *hostnameByIP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	h.mu.Lock()
	name, ok := h.names[ip]
	h.asked[ip]++
	h.mu.Unlock()
	if r.URL.Path != "/2009-04-04/meta-data/hostname" || !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = io.WriteString(w, name)
}

// setCmdline rewrites the kernel command line in syslinux.cfg on the boot
// partition of img (with mtools, unmounted).
func setCmdline(t *testing.T, img string, layout map[string]string, cmdline string) {
	t.Helper()
	var cfg []string
	for line := range strings.Lines(string(fatFile(t, img, layout, "/syslinux.cfg"))) {
		if strings.HasPrefix(strings.TrimSpace(line), "APPEND ") {
			line = "  APPEND " + cmdline + "\n"
		}
		cfg = append(cfg, line)
	}
	local := filepath.Join(t.TempDir(), "syslinux.cfg")
	if err := os.WriteFile(local, []byte(strings.Join(cfg, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mcopy", "-o", "-i", img+"@@"+layout["BOOT_OFFSET"], local, "::/syslinux.cfg")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mcopy syslinux.cfg: %v: %s", err, out)
	}
}

// TestImageBootsWithTwoNICs boots the image as the sandbox's OVH variant
// runs it: two e1000 NICs, the first on a provider network (DHCP, no
// metadata), the second on herd's (a reserved address, the metadata
// service). firstboot leases on both and must get its host name from
// herd's network: without herd.metadata= by asking each DHCP server in
// turn (SeaBIOS), and with herd.metadata= on herd's subnet (OVMF).
func TestImageBootsWithTwoNICs(t *testing.T) {
	if testing.Short() {
		t.Skip("boots VMs: a minute under TCG")
	}
	requireTools(t, "qemu-system-x86_64", "mtype", "mcopy")
	ns := newNetns(t)
	ns.ip("link", "add", "brp", "type", "bridge")
	ns.ip("addr", "add", providerNet, "dev", "brp")
	ns.ip("link", "set", "brp", "up")
	ns.ip("link", "add", "brh", "type", "bridge")
	ns.ip("addr", "add", herdNet, "dev", "brh")
	ns.ip("link", "set", "brh", "up")

	cases := []struct {
		name     string
		uefi     bool
		metadata string // herd.metadata=, "" for none
	}{
		{"SeaBIOS without herd.metadata: each DHCP server in turn", false, ""},
		{"OVMF with herd.metadata on herd's subnet", true, "http://" + herdMetadata},
	}
	stub := &hostnameByIP{names: map[string]string{}, asked: map[string]int{}}
	reservations := map[string]string{}
	for i := range cases {
		for _, tap := range []struct{ name, bridge string }{{fmt.Sprintf("tp%d", i), "brp"}, {fmt.Sprintf("th%d", i), "brh"}} {
			ns.ip("tuntap", "add", "dev", tap.name, "mode", "tap")
			ns.ip("link", "set", tap.name, "master", tap.bridge, "up")
		}
		ip := fmt.Sprintf("10.88.0.%d", 50+i)
		reservations[fmt.Sprintf("52:54:00:88:00:%02x", 0x50+i)] = ip
		stub.names[ip] = fmt.Sprintf("vm-ovh-%d", 50+i)
	}
	ns.startDnsmasq(reservations)
	ln, err := ns.listen(herdMetadata)
	if err != nil {
		t.Fatalf("metadata stub in %s: %v", ns.name, err)
	}
	srv := &http.Server{Handler: stub, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	out, layout := build(t, "")
	disk := filepath.Join(out, "disk.img")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.uefi {
				requireOVMF(t)
			}
			img := filepath.Join(t.TempDir(), "disk.img")
			copyFile(t, disk, img)
			if tc.metadata != "" {
				setCmdline(t, img, layout, layout["CMDLINE"]+" herd.metadata="+tc.metadata)
			}
			ip := fmt.Sprintf("10.88.0.%d", 50+i)
			// As the sandbox's OVH machine: fixed PCI slots, the
			// provider's NIC first; no option ROMs (the disk boots).
			r := boot(t, vm{disk: img, uefi: tc.uefi, pc: true, ns: ns.name, nics: []string{
				"-netdev", fmt.Sprintf("tap,id=n0,ifname=tp%d,script=no,downscript=no", i),
				"-device", fmt.Sprintf("e1000,netdev=n0,mac=52:54:00:89:00:%02x,romfile=,addr=0x10", 0x50+i),
				"-netdev", fmt.Sprintf("tap,id=n1,ifname=th%d,script=no,downscript=no", i),
				"-device", fmt.Sprintf("e1000,netdev=n1,mac=52:54:00:88:00:%02x,romfile=,addr=0x11", 0x50+i),
			}})
			for _, want := range []string{
				"DHCP lease on eth0 (52:54:00:89:00:",
				"DHCP lease on eth1 (52:54:00:88:00:",
				"addr=" + ip + "/24",
				"default route via 10.89.0.1 on eth0",
				fmt.Sprintf("GET http://%s/2009-04-04/meta-data/hostname via eth1 (%s): vm-ovh-%d", herdMetadata, ip, 50+i),
				fmt.Sprintf("herd-installed-os: hostname=vm-ovh-%d (metadata) file=herd-unprovisioned", 50+i),
				"reboot: Power down",
			} {
				if !strings.Contains(r.console, want) {
					t.Fatalf("console lacks %q:\n%s", want, r.console)
				}
			}
			// Without herd.metadata= the provider's DHCP server is asked
			// first, and refuses.
			if tc.metadata == "" && !strings.Contains(r.console, "GET http://10.89.0.1:50061/2009-04-04/meta-data/hostname via eth0") {
				t.Errorf("console shows no attempt at the provider's DHCP server:\n%s", r.console)
			}
			logTimes(t, r)
		})
	}
}
