package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// maxDHCPRead is the most boots reads of one datagram (dhcp.maxPacket).
const maxDHCPRead = 4096

// stormIP is the storm sender's address on the client's side of the link.
const stormIP = "10.77.0.67"

// discoverBytes is a well-formed BIOS PXE DISCOVER from mac: the base the
// storm breaks in its different ways.
func discoverBytes(mac net.HardwareAddr, xid uint32) []byte {
	b := make([]byte, 240, 300)
	b[0], b[1], b[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, hlen 6
	binary.BigEndian.PutUint32(b[4:8], xid)
	b[10] = 0x80 // broadcast flag
	copy(b[28:], mac)
	copy(b[236:240], []byte{99, 130, 83, 99})
	b = append(b, 53, 1, 1) // DISCOVER
	b = append(b, 60, 32)
	b = append(b, "PXEClient:Arch:00000:UNDI:002001"...)
	b = append(b, 93, 2, 0, 0, 94, 3, 1, 2, 1)
	b = append(b, 55, 4, 1, 3, 6, 67)
	return append(b, 255)
}

// stormKinds names the malformed packet kinds, in the order stormPacket
// cycles through them.
var stormKinds = []string{"truncated", "wrong cookie", "option past the end", "option overload (52)",
	"1.5 KB options", "bogus hlen/htype", "random bytes", "bogus option values", "oversize datagram", "no End option"}

// stormPacket is the i-th malformed packet (kind i % len(stormKinds)). Half
// of them carry the known machine's MAC so that the handler's path for
// known machines sees them too, the rest random MACs.
func stormPacket(i int, rng *rand.Rand, known net.HardwareAddr) []byte {
	mac := known
	if i%2 == 1 {
		mac = net.HardwareAddr{0x02, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
	}
	base := discoverBytes(mac, rng.Uint32())
	k := i / len(stormKinds) // how many of this kind came before
	switch i % len(stormKinds) {
	case 0: // truncated at every length, over and over
		return base[:k%(len(base)+1)]
	case 1:
		base[236+k%4] ^= byte(1 + rng.IntN(255))
		return base
	case 2: // the last option's length runs past the end (or no room for a length)
		b := base[:len(base)-1]
		switch k % 3 {
		case 0:
			return append(b, 60, byte(1+rng.IntN(255)))
		case 1:
			return append(b, 43)
		default:
			return append(b, 61, 200, 1, 2, 3)
		}
	case 3: // option overload: sname and file said to hold options, holding garbage
		b := base[:len(base)-1]
		b = append(b, 52, 1, byte(k%4))
		for j := 44; j < 236; j++ {
			base[j] = byte(rng.IntN(256))
		}
		if k%2 == 0 {
			base[44], base[45] = 53, 200 // a length past sname's end
		}
		return append(b, 255)
	case 4: // about 1.5 KB of options: long instances, split ones (RFC 3396)
		b := base[:len(base)-1]
		for _, code := range []byte{60, 77, 43, 82, 61, 12} {
			b = append(b, code, 255)
			for range 255 {
				b = append(b, byte(rng.IntN(256)))
			}
		}
		return append(b, 255)
	case 5:
		b := base
		switch k % 4 {
		case 0:
			b[2] = []byte{0, 1, 5, 7, 16, 17, 255}[k/4%7]
		case 1:
			b[1] = []byte{0, 6, 32, 255}[k/4%4]
		case 2:
			b[0] = []byte{0, 2, 3, 255}[k/4%4] // BOOTREPLY and worse
		default:
			b[2], b[1] = 255, 255
		}
		return b
	case 6:
		b := make([]byte, rng.IntN(1500))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		if k%2 == 0 && len(b) >= 240 { // random, but past the cookie check
			copy(b[236:240], []byte{99, 130, 83, 99})
		}
		return b
	case 7: // well framed, bogus values in the options boots reads
		b := base[:240] // header and cookie, no options yet
		bad := [][]byte{
			{53, 0}, {53, 2, 1, 1}, {53, 1, 0}, {53, 1, 200}, {53, 1, 3, 50, 3, 10, 77, 0},
			{53, 1, 3, 50, 4, 10, 77, 0, 99}, {53, 1, 3, 54, 0}, {53, 1, 3, 54, 4, 10, 77, 0, 1, 50, 4, 0, 0, 0, 0},
			{53, 1, 1, 93, 1, 0}, {53, 1, 1, 93, 3, 0, 7, 9}, {53, 1, 1, 94, 0}, {53, 1, 1, 97, 5, 0, 1, 2, 3, 4},
			{53, 1, 1, 97, 0}, {53, 1, 1, 77, 5, 200, 'i', 'P', 'X', 'E'}, {53, 1, 1, 77, 1, 0},
			{53, 1, 1, 60, 4, 0xff, 0xfe, 0xc3, 0x28}, {53, 1, 1, 60, 9, 'P', 'X', 'E', 'C', 'l', 'i', 'e', 'n', 't'},
			{53, 1, 1, 82, 4, 1, 200, 0, 0}, {53, 1, 1, 57, 2, 0, 0}, {53, 1, 1, 57, 1, 9}, {53, 1, 1, 61, 0},
			{53, 1, 1, 12, 3, 0, 0xff, '\n'}, {53, 1, 8}, {53, 1, 1, 55, 0}, {53, 1, 3, 81, 1, 0xff},
		}
		b = append(b, bad[k%len(bad)]...)
		if k%3 == 0 { // and addresses no reply may go to
			copy(b[24:28], []byte{255, 255, 255, 255})
		} else if k%3 == 1 {
			copy(b[12:16], []byte{byte(rng.IntN(256)), 0, 0, 1})
		}
		return append(b, 255)
	case 8: // longer than boots reads (its 4 KiB buffer truncates it)
		b := base[:len(base)-1]
		for len(b) < maxDHCPRead+300 {
			b = append(b, 43, 255)
			b = append(b, make([]byte, 255)...)
		}
		return append(b, 255)
	default:
		return base[:len(base)-1]
	}
}

// TestStormPackets holds the generator to its word: the truncated kind
// covers every length of the DISCOVER it cuts, and the oversize kind is
// longer than boots' read buffer.
func TestStormPackets(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	known := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x31}
	seen := map[int]bool{}
	for i := range 5000 {
		p := stormPacket(i, rng, known)
		seen[len(p)] = true
		if i%len(stormKinds) == 0 && len(p) > len(discoverBytes(known, 0)) {
			t.Fatalf("packet %d: truncated packet longer than the original", i)
		}
		if i%len(stormKinds) == 8 && len(p) <= maxDHCPRead {
			t.Fatalf("packet %d: oversize packet of %d bytes", i, len(p))
		}
	}
	for n := 0; n <= len(discoverBytes(known, 0)); n++ {
		if !seen[n] {
			t.Errorf("no packet truncated at %d bytes", n)
		}
	}
}

// TestReliabilityDHCPStorm (issue 16): a real herd-boots with a
// reservation gets a storm of malformed DHCP packets (every kind of
// stormKinds) while real clients — busybox udhcpc and ISC dhclient, each
// with a script of ours — keep taking leases. herd-boots must not crash
// (its /healthz answers throughout and after), and every real client must
// get its reserved address.
func TestReliabilityDHCPStorm(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	bb := realtest.Command(t, "busybox")
	known := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x31}
	const reserved = "10.77.0.10"
	l := newLab(t, known, "--log-level", "info")
	l.push(t, hwKnown, known, reserved, true, "")
	l.waitMachines(t, 1)
	// Jumbo frames: a 1.5 KB-options packet is one frame, and an oversize
	// datagram a few fragments.
	l.srv.IP("link", "set", "hb0", "mtu", "9000")
	l.cli.IP("link", "set", "hc0", "mtu", "9000")
	l.cli.IP("addr", "add", stormIP+"/24", "dev", "hc0")

	total := reliability.Size(5000, 100000)
	var conn *net.UDPConn
	if err := l.cli.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(stormIP)})
		conn = c
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	boots := &net.UDPAddr{IP: net.ParseIP(bootsIP), Port: 67}

	var sent, sendErrs atomic.Int64
	stormDone := make(chan struct{})
	clientsDone := make(chan struct{})
	go func() {
		defer close(stormDone)
		rng := rand.New(rand.NewPCG(16, uint64(time.Now().UnixNano())))
		// At least total packets, and on until the clients are done: every
		// client meets the storm.
		for i := 0; ; i++ {
			if i >= total {
				select {
				case <-clientsDone:
					return
				default:
				}
			}
			if _, err := conn.WriteToUDP(stormPacket(i, rng, known), boots); err != nil {
				sendErrs.Add(1)
			} else {
				sent.Add(1)
			}
			// Paced at about 20,000 packets a second: a storm, but one
			// the real clients' packets are interleaved with rather than
			// one that only fills the socket buffer.
			if i%200 == 199 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()

	// The real clients take leases one after another until total packets
	// have gone out and at least minClients of them are served, udhcpc
	// mostly, dhclient every fifth.
	minClients := reliability.Size(6, 40)
	var latencies []time.Duration
	var failures []string
	healthFails := 0
	hc := l.srv.HTTPClient()
	for n := 0; ; n++ {
		if n >= minClients && sent.Load()+sendErrs.Load() >= int64(total) {
			break
		}
		var ip string
		var took time.Duration
		var err error
		if n%5 == 4 {
			ip, took, err = stormDhclient(t, l)
		} else {
			ip, took, err = stormUdhcpc(t, l, bb)
		}
		latencies = append(latencies, took)
		if err != nil || ip != reserved {
			failures = append(failures, fmt.Sprintf("client %d: ip %q, %v", n, ip, err))
		}
		if res, err := hc.Get(bootsURL + "/healthz"); err != nil || res.StatusCode != 200 {
			healthFails++
			t.Errorf("herd-boots /healthz during the storm: %v %v", err, res)
		} else {
			res.Body.Close()
		}
	}
	close(clientsDone)
	<-stormDone

	// Still running and healthy after the storm, and its log has no panic.
	res, err := hc.Get(bootsURL + "/healthz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("herd-boots /healthz after the storm: %v %v\n%s", err, res, l.log.String())
	}
	res.Body.Close()
	if pids, _ := exec.Command("ip", "netns", "pids", l.srv.Name).Output(); len(strings.Fields(string(pids))) == 0 {
		t.Fatalf("no process left in the boots namespace")
	}
	if s := l.log.String(); strings.Contains(s, "panic:") || strings.Contains(s, "DATA RACE") {
		t.Fatalf("herd-boots log shows a panic or race:\n%s", s)
	}
	for _, f := range failures {
		t.Error(f)
	}
	handled, drops := bootsCounts(t, l)
	slices.Sort(latencies)
	reliability.Record(t, reliability.Row{
		Case: "DHCP storm: malformed packets among real clients",
		Done: fmt.Sprintf("%d malformed DHCP packets (%s) sent to a real herd-boots with a reservation while udhcpc and dhclient (own scripts) took %d leases", sent.Load(), strings.Join(stormKinds, ", "), len(latencies)),
		Volume: fmt.Sprintf("%d packets sent (%d send errors), %d reached the handler, %d dropped by the kernel (socket buffer); %d real clients",
			sent.Load(), sendErrs.Load(), handled, drops, len(latencies)),
		Lost:  len(failures) + healthFails,
		Notes: fmt.Sprintf("real clients' lease latency p50 %v, p99 %v, max %v (DISCOVER to bound, -race build)", pct(latencies, 50), pct(latencies, 99), latencies[len(latencies)-1]),
	})
}

// pct is the p-th percentile of sorted d.
func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, (len(d)*p+99)/100-1)].Round(time.Millisecond)
}

// bootsCounts is how many requests boots' handler counted
// (herd_boots_dhcp_packets_total) and how many datagrams the kernel
// dropped on boots' port 67 socket (/proc/net/udp in its namespace).
func bootsCounts(t *testing.T, l *lab) (handled, drops int64) {
	res, err := l.srv.HTTPClient().Get(bootsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "herd_boots_dhcp_packets_total{") {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			handled += int64(v)
		}
	}
	out, _ := l.srv.Command(context.Background(), "cat", "/proc/net/udp").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		// local_address 00000000:0043 is port 67; drops is the last field.
		if len(f) > 12 && strings.HasSuffix(f[1], ":0043") {
			var d int64
			fmt.Sscanf(f[len(f)-1], "%d", &d)
			drops += d
		}
	}
	return handled, drops
}

// stormUdhcpc takes one lease with busybox udhcpc (our script only
// records it: the storm's address stays the interface's only one) and returns the bound address and how long it took.
func stormUdhcpc(t *testing.T, l *lab, bb string) (string, time.Duration, error) {
	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > \"$(dirname \"$0\")/ip\"\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := l.cli.Command(ctx, bb, "udhcpc", "-i", "hc0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-A", "1",
		"-s", script, "-V", "PXEClient:Arch:00000:UNDI:002001").CombinedOutput()
	took := time.Since(start)
	ip, _ := os.ReadFile(filepath.Join(dir, "ip"))
	if err != nil {
		return "", took, fmt.Errorf("udhcpc: %w: %s", err, out)
	}
	return strings.TrimSpace(string(ip)), took, nil
}

// stormDhclient takes one lease with ISC dhclient (-sf our script, its own
// lease and pid files) and returns the bound address and how long it took.
func stormDhclient(t *testing.T, l *lab) (string, time.Duration, error) {
	bin := realtest.Command(t, "dhclient")
	dir := t.TempDir()
	script := filepath.Join(dir, "dhclient.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n[ \"$reason\" = BOUND ] && echo \"$new_ip_address\" > \"$(dirname \"$0\")/ip\"\nexit 0\n"), 0o755)
	conf := filepath.Join(dir, "dhclient.conf")
	os.WriteFile(conf, []byte("timeout 20;\nretry 1;\ninitial-interval 1;\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	// In the foreground (-d) dhclient stays on after BOUND to renew: it
	// is stopped, by its own pid, once the script has seen the lease.
	cmd := l.cli.Command(ctx, bin, "-1", "-d", "-sf", script, "-cf", conf, "-lf", filepath.Join(dir, "leases"),
		"-pf", filepath.Join(dir, "pid"), "hc0")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			ip, _ := os.ReadFile(filepath.Join(dir, "ip"))
			if len(ip) == 0 {
				return "", time.Since(start), fmt.Errorf("dhclient: %v: %s", err, out.String())
			}
			return strings.TrimSpace(string(ip)), time.Since(start), nil
		case <-tick.C:
			if ip, _ := os.ReadFile(filepath.Join(dir, "ip")); len(ip) > 0 {
				took := time.Since(start)
				cmd.Process.Kill()
				<-exited
				return strings.TrimSpace(string(ip)), took, nil
			}
		}
	}
}
