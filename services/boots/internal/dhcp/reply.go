package dhcp

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/herd-metal/herd/proto/hardware"
)

// Mode is how boots answers DHCP.
type Mode string

const (
	// Reservation: boots is the DHCP server for the machines it knows and
	// hands out their reserved address with the boot options.
	Reservation Mode = "reservation"
	// Proxy: proxyDHCP (PXE spec 2.1): another server hands out addresses,
	// boots adds only the boot options.
	Proxy Mode = "proxy"
)

// ParseMode parses the --dhcp-mode flag.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case Reservation, Proxy:
		return Mode(s), nil
	}
	return "", fmt.Errorf("dhcp mode %q: want reservation or proxy", s)
}

// Lease is a machine's reservation, from its hardware record.
type Lease struct {
	IP       net.IP
	Mask     net.IPMask
	Gateway  net.IP
	DNS      []net.IP
	NTP      []net.IP
	Hostname string
	Domain   string
	Duration time.Duration
}

// LeaseFrom reads the reservation from a hardware interface. Hostnames with
// dots give their tail as the domain; otherwise defaultDomain is used.
func LeaseFrom(i *hardware.Hardware_Network_Interface, defaultLease time.Duration, defaultDomain string) (Lease, error) {
	d := i.GetDhcp()
	var l Lease
	l.IP = net.ParseIP(d.GetIp().GetAddress()).To4()
	if l.IP == nil {
		return Lease{}, fmt.Errorf("interface %s: no IPv4 address reserved (dhcp.ip.address %q)", d.GetMac(), d.GetIp().GetAddress())
	}
	if m := net.ParseIP(d.GetIp().GetNetmask()).To4(); m != nil {
		l.Mask = net.IPMask(m)
	} else {
		l.Mask = l.IP.DefaultMask()
	}
	l.Gateway = net.ParseIP(d.GetIp().GetGateway()).To4()
	for _, s := range d.GetNameServers() {
		if ip := net.ParseIP(s).To4(); ip != nil {
			l.DNS = append(l.DNS, ip)
		}
	}
	for _, s := range d.GetTimeServers() {
		if ip := net.ParseIP(s).To4(); ip != nil {
			l.NTP = append(l.NTP, ip)
		}
	}
	l.Hostname, l.Domain = d.GetHostname(), defaultDomain
	if host, dom, ok := strings.Cut(l.Hostname, "."); ok {
		l.Hostname, l.Domain = host, dom
	}
	l.Duration = time.Duration(d.GetLeaseTime()) * time.Second
	if l.Duration <= 0 {
		l.Duration = defaultLease
	}
	return l, nil
}

// Broadcast is the lease's subnet broadcast address.
func (l Lease) Broadcast() net.IP {
	b := make(net.IP, 4)
	for i := range b {
		b[i] = l.IP[i] | ^l.Mask[i]
	}
	return b
}

// pxeVendorOptions is option 43 for PXE clients: sub-option 6
// (PXE_DISCOVERY_CONTROL) = 8, "use the boot file in this offer, no boot
// server discovery". Some Intel and Broadcom ROMs ignore a proxyDHCP offer
// without option 43.
var pxeVendorOptions = []byte{6, 1, 8, 255}

// Reply builds the answer of type mt to req. lease is nil in proxy mode (no
// address, only boot options). serverID is boots' address on the serving
// interface (option 54).
func Reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, serverID net.IP, lease *Lease, boot Boot, c Client) (*dhcpv4.DHCPv4, error) {
	// NewReplyFromRequest copies xid, chaddr, flags, giaddr, option 82
	// (RFC 3046: echoed unchanged) and option 61 (RFC 6842).
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID)),
	}
	if lease != nil && mt != dhcpv4.MessageTypeNak {
		if mt != dhcpv4.MessageTypeAck || req.MessageType() != dhcpv4.MessageTypeInform {
			mods = append(mods, dhcpv4.WithYourIP(lease.IP))
		}
		mods = append(mods,
			dhcpv4.WithNetmask(lease.Mask),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(lease.Broadcast())),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease.Duration)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lease.Duration/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lease.Duration*7/8)),
		)
		if lease.Gateway != nil {
			mods = append(mods, dhcpv4.WithRouter(lease.Gateway))
		}
		if len(lease.DNS) > 0 {
			mods = append(mods, dhcpv4.WithDNS(lease.DNS...))
		}
		if len(lease.NTP) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptNTPServers(lease.NTP...)))
		}
		if lease.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(lease.Hostname)))
		}
		if lease.Domain != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(lease.Domain)))
		}
	}
	if boot.File != "" && mt != dhcpv4.MessageTypeNak {
		mods = append(mods, bootModifiers(req, boot, c)...)
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

func bootModifiers(req *dhcpv4.DHCPv4, boot Boot, c Client) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{func(d *dhcpv4.DHCPv4) {
		// The BOOTP file field holds 128 bytes with its NUL; a longer URL
		// goes in option 67 only.
		if len(boot.File) < 128 {
			d.BootFileName = boot.File
		}
		if boot.NextServer != nil {
			d.ServerIPAddr = boot.NextServer
		}
	}}
	if len(boot.File) >= 128 || req.IsOptionRequested(dhcpv4.OptionBootfileName) {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptBootFileName(boot.File)))
	}
	if boot.VendorClass != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(boot.VendorClass)))
	}
	if c.PXE && !c.IPXE {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions))
	}
	if c.UUID != nil {
		// PXE 2.1: the server echoes the client's machine identifier.
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, c.UUID))
	}
	return mods
}

// Ports of BOOTP/DHCP (RFC 2131) and PXE boot server discovery.
const (
	ServerPort = 67
	ClientPort = 68
	PXEPort    = 4011
)

// Destination is where reply to req goes (RFC 2131 4.1), decided in this
// one place: through the relay (giaddr, server port) when relayed; to the
// sender when it asked on the PXE port (4011) or renews from a configured
// address (ciaddr); else broadcast on the local link, since the client has
// no address yet and boots does not write ARP entries.
func Destination(req, reply *dhcpv4.DHCPv4, peer *net.UDPAddr, onPXEPort bool) *net.UDPAddr {
	switch {
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: ServerPort}
	case onPXEPort && peer != nil && !peer.IP.IsUnspecified() && !peer.IP.Equal(net.IPv4bcast):
		return peer
	case reply.MessageType() == dhcpv4.MessageTypeNak:
		return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
	case req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
}
