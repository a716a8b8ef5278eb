package dhcp

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Link is what boots knows of the network it serves DHCP on: its own
// address there and the interface's IPv4 prefixes, whose network and
// broadcast addresses no reply goes to. The zero Link knows neither (then
// only the checks that need no prefix apply).
type Link struct {
	Self     netip.Addr
	Prefixes []netip.Prefix
}

// LinkOf reads interface ifname's IPv4 prefixes, once: an address added to
// the interface later is not known (restart boots after renumbering).
func LinkOf(ifname string, self net.IP) (Link, error) {
	l := Link{}
	if a, ok := netip.AddrFromSlice(self.To4()); ok {
		l.Self = a
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return l, fmt.Errorf("dhcp interface %q: %w", ifname, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return l, fmt.Errorf("dhcp interface %q: addresses: %w", ifname, err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP.To4())
		if !ok {
			continue
		}
		ones, bits := n.Mask.Size()
		if bits == 8*net.IPv6len { // a v4 address with a 16-byte mask
			ones -= 96
		}
		if p, err := ip.Prefix(ones); err == nil && ones >= 0 {
			l.Prefixes = append(l.Prefixes, p)
		}
	}
	return l, nil
}

// Refused says why a request gets no reply at all: Field is the address
// that cannot be answered to ("giaddr", "ciaddr", "source"), Why what is
// wrong with it. The zero Refused refuses nothing. Both are constants:
// refusing allocates nothing, whatever a flood of forged packets costs.
type Refused struct {
	Field, Why string
}

func (r Refused) String() string { return r.Field + " " + r.Why }

// Why an address is no place for a reply (unusable's answers).
const (
	whyNotIPv4        = "is not an IPv4 address"
	whyThisNetwork    = "is in 0.0.0.0/8 (\"this network\", RFC 1122 3.2.1.3: never a destination)"
	whyLoopback       = "is a loopback address (RFC 1122 3.2.1.3: never on a wire)"
	whyMulticast      = "is a multicast address"
	whyBroadcast      = "is the limited broadcast address"
	whyReserved       = "is in 240.0.0.0/4 (reserved)"
	whyLinkLocal      = "is link-local (169.254.0.0/16: RFC 3927 2.6.2, never routed, no relay has one)"
	whySelf           = "is boots' own address"
	whySubnetNetwork  = "is the network address of a subnet of the serving interface"
	whySubnetBcast    = "is the broadcast address of a subnet of the serving interface"
	whyNotRelayPort   = "is set, but the packet came from a port other than 67: relay agents send from the server port (RFC 1542 4.1; RFC 8357's other ports are not supported)"
	whyNotSender      = "is not the address the packet came from: a client with an address sends from it (RFC 2131 4.1, 4.3.5)"
	whyInformNoSender = "is unset in a DHCPINFORM (RFC 2131 4.3.5: it must be the client's address) and the packet came from no address to answer"
)

var bcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// unusable says why a is no unicast destination for a reply ("": it is
// one): broadcast, multicast, loopback, unspecified and the other special
// ranges, boots itself, and the serving interface's subnet network and
// broadcast addresses (the socket may broadcast: a "unicast" to
// 10.0.5.255 would reach the whole link).
func unusable(a netip.Addr, link Link) string {
	if !a.Is4() {
		return whyNotIPv4
	}
	b := a.As4()
	switch {
	case b[0] == 0:
		return whyThisNetwork
	case a.IsLoopback():
		return whyLoopback
	case a.IsMulticast():
		return whyMulticast
	case a == bcast4:
		return whyBroadcast
	case b[0] >= 240:
		return whyReserved
	case a.IsLinkLocalUnicast():
		return whyLinkLocal
	case a == link.Self:
		return whySelf
	}
	for _, p := range link.Prefixes {
		if !p.Addr().Is4() || p.Bits() > 30 || !p.Contains(a) {
			continue // /31 and /32 have no network or broadcast address (RFC 3021)
		}
		if a == p.Masked().Addr() {
			return whySubnetNetwork
		}
		if a == lastOf(p) {
			return whySubnetBcast
		}
	}
	return ""
}

// lastOf is an IPv4 prefix's last address, its broadcast address.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := range b {
		if host := p.Bits() - 8*i; host < 8 {
			b[i] |= byte(0xff >> max(host, 0))
		}
	}
	return netip.AddrFrom4(b)
}

// field4 reads a 4-byte address field; ok is false when it is 0.0.0.0 or
// absent (the field is not set).
func field4(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip.To4())
	return a, ok && !a.IsUnspecified()
}

// Route decides, in this one place, where the reply to req goes, or that
// none goes anywhere (Refused non-zero). peer is where req came from
// (unmapped), onPXEPort whether it came to port 4011, nak whether the
// reply is a DHCPNAK, link the serving network. A forged packet must not
// aim boots' replies at broadcast, multicast, loopback or other special
// addresses, so every address a reply could go to is checked, and a
// request naming an unusable one (giaddr or ciaddr) gets no reply at all,
// not a reply elsewhere:
//
//   - Relayed (giaddr set, from a relay agent, which sends from port 67):
//     to the relay's server port at giaddr, NAKs too (RFC 2131 4.1). A
//     giaddr from any other port is no relay's: no reply. The one
//     exception is a PXE client asking the boot server on 4011 itself,
//     its giaddr kept from the relayed DHCP exchange: back to it.
//   - ciaddr set: it must be the sender's own address (a client with an
//     address sends from it), then to ciaddr:68 — but NAKs are broadcast
//     (RFC 2131 4.1) — and DHCPINFORM's ACK goes there (4.3.5).
//   - On 4011 (PXE boot server, the client has an address): back to the
//     sender.
//   - Else the client has no address yet: broadcast on the link (boots
//     writes no ARP entries to unicast to yiaddr; RFC 2131 4.1 allows
//     broadcast then). A DHCPINFORM without ciaddr is answered to the
//     address it came from, never broadcast.
func Route(req *dhcpv4.DHCPv4, peer netip.AddrPort, onPXEPort, nak bool, link Link) (netip.AddrPort, Refused) {
	gi, relayed := field4(req.GatewayIPAddr)
	ci, hasCI := field4(req.ClientIPAddr)
	if relayed {
		if why := unusable(gi, link); why != "" {
			return netip.AddrPort{}, Refused{"giaddr", why}
		}
	}
	if hasCI {
		if why := unusable(ci, link); why != "" {
			return netip.AddrPort{}, Refused{"ciaddr", why}
		}
	}
	src := peer.Addr()
	srcOK := peer.Port() != 0 && unusable(src, link) == ""
	switch {
	case relayed && onPXEPort && peer.Port() != ServerPort && srcOK:
		return peer, Refused{}
	case relayed && peer.Port() != ServerPort:
		return netip.AddrPort{}, Refused{"giaddr", whyNotRelayPort}
	case relayed:
		return netip.AddrPortFrom(gi, ServerPort), Refused{}
	case hasCI && src != ci:
		return netip.AddrPort{}, Refused{"ciaddr", whyNotSender}
	case onPXEPort && srcOK:
		return peer, Refused{}
	case nak:
		return netip.AddrPortFrom(bcast4, ClientPort), Refused{}
	case hasCI:
		return netip.AddrPortFrom(ci, ClientPort), Refused{}
	case msgType(req) == dhcpv4.MessageTypeInform:
		if !srcOK {
			return netip.AddrPort{}, Refused{"ciaddr", whyInformNoSender}
		}
		return netip.AddrPortFrom(src, ClientPort), Refused{}
	}
	return netip.AddrPortFrom(bcast4, ClientPort), Refused{}
}
