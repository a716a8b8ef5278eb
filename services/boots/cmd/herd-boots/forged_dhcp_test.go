package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/herd-metal/herd/services/boots/internal/netnstest"
)

// attackerIP is a host on the provisioning link that no hardware owns.
const attackerIP = "10.77.0.66"

// sent is one frame boots put on the link, decoded: a UDP datagram from
// port 67 (a DHCP reply: to, xid) or an ARP request (arpFor).
type sent struct {
	to     netip.AddrPort
	xid    uint32
	arpFor netip.Addr
}

// bootsFrames decodes the frames from boots' address the capture saw.
func bootsFrames(frames []netnstest.Frame) []sent {
	boots := netip.MustParseAddr(bootsIP).As4()
	var out []sent
	for _, f := range frames {
		b := f.Data
		if len(b) < 14 {
			continue
		}
		switch binary.BigEndian.Uint16(b[12:14]) {
		case 0x0806: // ARP: op 1 (request), sender IP at 14, target IP at 24
			a := b[14:]
			if len(a) >= 28 && binary.BigEndian.Uint16(a[6:8]) == 1 && [4]byte(a[14:18]) == boots {
				out = append(out, sent{arpFor: netip.AddrFrom4([4]byte(a[24:28]))})
			}
		case 0x0800:
			ip := b[14:]
			if len(ip) < 20 || ip[9] != 17 || [4]byte(ip[12:16]) != boots {
				continue
			}
			udp := ip[int(ip[0]&0x0f)*4:]
			if len(udp) < 8+8 || binary.BigEndian.Uint16(udp[0:2]) != 67 {
				continue
			}
			out = append(out, sent{to: netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(udp[2:4])),
				xid: binary.BigEndian.Uint32(udp[8+4 : 8+8])})
		}
	}
	return out
}

// TestForgedDHCPAddresses (issue 14, finding 5): a host on the link that
// no hardware owns sends herd-boots DISCOVERs for a known MAC with a giaddr
// of the limited broadcast, a multicast group, the subnet's broadcast and
// network addresses and loopback, and INFORMs and a REQUEST whose ciaddr
// is such an address or another host's. herd-boots must send nothing for
// any of them — no reply to 255.255.255.255:67, a multicast group or the
// subnet broadcast, no ARP for 127.0.0.1 — while a DISCOVER relayed
// properly (from port 67 of the relay at giaddr) is answered to the
// relay's port 67, and a local DISCOVER by a broadcast to port 68.
// Everything boots puts on the link is captured on the attacker's side
// of the veth.
func TestForgedDHCPAddresses(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	victim := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x05}
	l := newLab(t, victim)
	l.push(t, hwKnown, victim, "10.77.0.10", true, "")
	l.waitMachines(t, 1)
	l.cli.IP("addr", "add", attackerIP+"/24", "dev", "hc0")
	capture := l.cli.Capture("hc0")

	var relay, client *net.UDPConn
	err := l.cli.Do(func() error {
		var err error
		if relay, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(attackerIP), Port: 67}); err != nil {
			return err
		}
		client, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(attackerIP), Port: 68})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	defer client.Close()
	boots := &net.UDPAddr{IP: net.ParseIP(bootsIP), Port: 67}

	const (
		discover = dhcpv4.MessageTypeDiscover
		request  = dhcpv4.MessageTypeRequest
		inform   = dhcpv4.MessageTypeInform
	)
	type pkt struct {
		name           string
		mt             dhcpv4.MessageType
		ciaddr, giaddr string
		from           *net.UDPConn
	}
	forged := []pkt{
		{"DISCOVER giaddr limited broadcast", discover, "0.0.0.0", "255.255.255.255", relay},
		{"DISCOVER giaddr multicast", discover, "0.0.0.0", "224.0.0.1", relay},
		{"DISCOVER giaddr subnet broadcast", discover, "0.0.0.0", "10.77.0.255", relay},
		{"DISCOVER giaddr subnet network", discover, "0.0.0.0", "10.77.0.0", relay},
		{"DISCOVER giaddr loopback", discover, "0.0.0.0", "127.0.0.1", relay},
		{"DISCOVER giaddr from a client port", discover, "0.0.0.0", attackerIP, client},
		{"INFORM ciaddr limited broadcast", inform, "255.255.255.255", "0.0.0.0", client},
		{"INFORM ciaddr loopback", inform, "127.0.0.1", "0.0.0.0", client},
		{"INFORM ciaddr multicast", inform, "224.0.0.1", "0.0.0.0", client},
		{"INFORM ciaddr another host's", inform, "10.77.0.10", "0.0.0.0", client},
		{"REQUEST ciaddr subnet broadcast", request, "10.77.0.255", "0.0.0.0", client},
	}
	legit := []pkt{
		{"DISCOVER relayed", discover, "0.0.0.0", attackerIP, relay},
		{"DISCOVER local", discover, "0.0.0.0", "0.0.0.0", client},
	}
	wantLegit := map[uint32]string{0x1e900000: attackerIP + ":67", 0x1e900001: "255.255.255.255:68"}
	send := func(xid uint32, p pkt) {
		t.Helper()
		m, err := dhcpv4.New(dhcpv4.WithHwAddr(victim), dhcpv4.WithMessageType(p.mt), dhcpv4.WithTransactionID(dhcpv4.TransactionID(binary.BigEndian.AppendUint32(nil, xid))),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")))
		if err != nil {
			t.Fatal(err)
		}
		m.ClientIPAddr, m.GatewayIPAddr = net.ParseIP(p.ciaddr).To4(), net.ParseIP(p.giaddr).To4()
		if _, err := p.from.WriteToUDP(m.ToBytes(), boots); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}
	for i, p := range forged {
		send(0x0f000000+uint32(i), p)
	}
	// boots answers in order: once the legitimate replies are out, it has
	// decided on every forged packet.
	for i, p := range legit {
		send(0x1e900000+uint32(i), p)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		seen := map[uint32]bool{}
		for _, s := range bootsFrames(capture.Frames()) {
			if s.to.String() == wantLegit[s.xid] {
				seen[s.xid] = true
			}
		}
		if len(seen) == len(wantLegit) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the legitimate DISCOVERs got no reply where they should: %v", bootsFrames(capture.Frames()))
		}
	}
	time.Sleep(500 * time.Millisecond) // ARP for a late unicast, if any

	for _, s := range bootsFrames(capture.Frames()) {
		switch {
		case s.arpFor.IsValid():
			if a := s.arpFor.String(); a != attackerIP {
				t.Errorf("herd-boots sent ARP for %s", a)
			}
		case wantLegit[s.xid] == "":
			k := int(s.xid - 0x0f000000)
			name := fmt.Sprintf("xid %#x", s.xid)
			if k >= 0 && k < len(forged) {
				name = forged[k].name
			}
			t.Errorf("%s: herd-boots replied to %s", name, s.to)
		case s.to.String() != wantLegit[s.xid]:
			t.Errorf("legitimate xid %#x answered to %s, want %s", s.xid, s.to, wantLegit[s.xid])
		}
	}
	if out, _ := exec.Command("ip", "-n", l.srv.Name, "neigh", "show", "to", "127.0.0.1").CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("boots' namespace has a neighbour entry for 127.0.0.1: %s", out)
	}

	res, err := l.srv.HTTPClient().Get(bootsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`herd_boots_dhcp_packets_total{outcome="bad_address",type="DISCOVER"} 6`,
		`herd_boots_dhcp_packets_total{outcome="bad_address",type="INFORM"} 4`,
		`herd_boots_dhcp_packets_total{outcome="bad_address",type="REQUEST"} 1`,
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
