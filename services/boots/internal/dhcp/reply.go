package dhcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/herd-metal/herd/pkg/spec"
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
	// dns4 and ntp4, when set, are DNS and NTP packed (4 bytes each), as
	// prepared records hold them: replies from them allocate nothing.
	dns4, ntp4 []byte
}

// LeaseFrom reads the reservation from a hardware interface. Hostnames with
// dots give their tail as the domain; otherwise defaultDomain is used. Time
// servers given by host name are left out (Preparer resolves them).
func LeaseFrom(i *hardware.Hardware_Network_Interface, defaultLease time.Duration, defaultDomain string) (Lease, error) {
	l, err := parseLease(i, nil)
	if err != nil {
		return Lease{}, err
	}
	out := l.Lease
	if !l.hasDomain {
		out.Domain = defaultDomain
	}
	if out.Duration <= 0 {
		out.Duration = defaultLease
	}
	return out, nil
}

// rawLease is a Lease before boots' defaults apply: what the record says,
// parsed once per record version (see Prepare).
type rawLease struct {
	Lease
	hasDomain bool // the hostname had dots: Domain is the record's
}

// parseLease reads i's reservation; names, if not nil, gives the addresses
// of time servers written as host names (without it they are left out).
func parseLease(i *hardware.Hardware_Network_Interface, names TimeServerNames) (rawLease, error) {
	d := i.GetDhcp()
	var l rawLease
	l.IP = net.ParseIP(d.GetIp().GetAddress()).To4()
	if l.IP == nil {
		return rawLease{}, fmt.Errorf("interface %s: no IPv4 address reserved (dhcp.ip.address %q)", d.GetMac(), d.GetIp().GetAddress())
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
		if ip := net.ParseIP(s); ip != nil {
			if ip4 := ip.To4(); ip4 != nil { // option 42 carries IPv4 only
				l.NTP = append(l.NTP, ip4)
			}
			continue
		}
		if names != nil && spec.TimeServerIsName(s) {
			for _, a := range names.Addrs(s) {
				if !a.Is4() {
					continue
				}
				b := a.As4()
				if !slices.ContainsFunc(l.NTP, func(ip net.IP) bool { return ip.Equal(b[:]) }) {
					// Names that share an address give it once.
					l.NTP = append(l.NTP, net.IP(b[:]))
				}
			}
		}
	}
	l.Hostname = d.GetHostname()
	if host, dom, ok := strings.Cut(l.Hostname, "."); ok {
		l.Hostname, l.Domain, l.hasDomain = host, dom, true
	}
	l.Duration = time.Duration(d.GetLeaseTime()) * time.Second
	return l, nil
}

// Broadcast is the lease's subnet broadcast address.
func (l Lease) Broadcast() net.IP {
	var b [4]byte
	l.broadcast(&b)
	return b[:]
}

func (l Lease) broadcast(b *[4]byte) {
	for i := range b {
		b[i] = l.IP[i] | ^l.Mask[i]
	}
}

// pxeVendorOptions is option 43 for PXE clients: sub-option 6
// (PXE_DISCOVERY_CONTROL) = 8, "use the boot file in this offer, no boot
// server discovery". Some Intel and Broadcom ROMs ignore a proxyDHCP offer
// without option 43.
var pxeVendorOptions = []byte{6, 1, 8, 255}

// Reply builds the answer of type mt to req. lease is nil in proxy mode (no
// address, only boot options). serverID is boots' address on the serving
// interface (option 54). It parses what AppendReply writes: the handler
// sends those bytes, Reply is for callers who want the message.
func Reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, serverID net.IP, lease *Lease, boot Boot, c Client) (*dhcpv4.DHCPv4, error) {
	return dhcpv4.FromBytes(AppendReply(nil, req, mt, serverID, lease, boot, c))
}

// Header layout (RFC 2131 2) and the limits of its fields.
const (
	headerLen   = 236
	cookieLen   = 4
	fileOffset  = 108
	fileLen     = 128
	bootpMinLen = 300 // RFC 951's message size: some relays drop shorter ones
)

var magicCookie = [cookieLen]byte{99, 130, 83, 99}

// AppendReply appends the wire bytes of the answer of type mt to req to
// dst (see Reply for the arguments). It writes the message directly,
// without an intermediate dhcpv4.DHCPv4 (every DHCP reply goes through
// here; building one costs tens of allocations), in the layout
// insomniacslk's ToBytes has: options by code, option 82 last (RFC 3046
// 2.1), End, padded to 300 bytes.
func AppendReply(dst []byte, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, serverID net.IP, lease *Lease, boot Boot, c Client) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, headerLen)...)
	h := dst[start:]
	h[0] = byte(dhcpv4.OpcodeBootReply)
	h[1] = byte(req.HWType)
	h[2] = byte(len(req.ClientHWAddr))
	copy(h[4:8], req.TransactionID[:])
	binary.BigEndian.PutUint16(h[10:12], req.Flags)
	// NewReplyFromRequest copies xid, chaddr, flags, giaddr, option 82
	// (RFC 3046: echoed unchanged) and option 61 (RFC 6842); so does this.
	copy(h[24:28], req.GatewayIPAddr.To4())
	copy(h[28:44], req.ClientHWAddr)
	nak := mt == dhcpv4.MessageTypeNak
	withLease := lease != nil && !nak
	withBoot := boot.File != "" && !nak
	if withLease && (mt != dhcpv4.MessageTypeAck || msgType(req) != dhcpv4.MessageTypeInform) {
		copy(h[16:20], lease.IP.To4())
	}
	if withBoot {
		// The BOOTP file field holds 128 bytes with its NUL; a longer URL
		// goes in option 67 only.
		if len(boot.File) < fileLen {
			copy(h[fileOffset:fileOffset+fileLen-1], boot.File)
		}
		if boot.NextServer != nil {
			copy(h[20:24], boot.NextServer.To4())
		}
	}
	dst = append(dst, magicCookie[:]...)

	// Options in ascending code order.
	if withLease {
		dst = appendOpt(dst, dhcpv4.OptionSubnetMask, lease.Mask)
		if lease.Gateway != nil {
			dst = appendIPs(dst, dhcpv4.OptionRouter, lease.Gateway)
		}
		if len(lease.dns4) > 0 {
			dst = appendOpt(dst, dhcpv4.OptionDomainNameServer, lease.dns4)
		} else if len(lease.DNS) > 0 {
			dst = appendIPs(dst, dhcpv4.OptionDomainNameServer, lease.DNS...)
		}
		if lease.Hostname != "" {
			dst = appendStrOpt(dst, dhcpv4.OptionHostName, lease.Hostname)
		}
		if lease.Domain != "" {
			dst = appendStrOpt(dst, dhcpv4.OptionDomainName, lease.Domain)
		}
		var b [4]byte
		lease.broadcast(&b)
		dst = appendOpt(dst, dhcpv4.OptionBroadcastAddress, b[:])
		if len(lease.ntp4) > 0 {
			dst = appendOpt(dst, dhcpv4.OptionNTPServers, lease.ntp4)
		} else if len(lease.NTP) > 0 {
			dst = appendIPs(dst, dhcpv4.OptionNTPServers, lease.NTP...)
		}
	}
	if withBoot && c.PXE && !c.IPXE {
		dst = appendOpt(dst, dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions)
	}
	if withLease {
		dst = appendSeconds(dst, dhcpv4.OptionIPAddressLeaseTime, lease.Duration)
	}
	dst = append(dst, byte(dhcpv4.OptionDHCPMessageType.Code()), 1, byte(mt))
	dst = appendIPs(dst, dhcpv4.OptionServerIdentifier, serverID)
	if withLease {
		dst = appendSeconds(dst, dhcpv4.OptionRenewTimeValue, lease.Duration/2)
		dst = appendSeconds(dst, dhcpv4.OptionRebindingTimeValue, lease.Duration*7/8)
	}
	if withBoot && boot.VendorClass != "" {
		dst = appendStrOpt(dst, dhcpv4.OptionClassIdentifier, boot.VendorClass)
	}
	if id, ok := req.Options[dhcpv4.OptionClientIdentifier.Code()]; ok {
		dst = appendOpt(dst, dhcpv4.OptionClientIdentifier, id)
	}
	if withBoot && (len(boot.File) >= fileLen || optionRequested(req, dhcpv4.OptionBootfileName)) {
		dst = appendStrOpt(dst, dhcpv4.OptionBootfileName, boot.File)
	}
	if withBoot && c.UUID != nil {
		// PXE 2.1: the server echoes the client's machine identifier.
		dst = appendOpt(dst, dhcpv4.OptionClientMachineIdentifier, c.UUID)
	}
	if rai, ok := req.Options[dhcpv4.OptionRelayAgentInformation.Code()]; ok {
		dst = appendOpt(dst, dhcpv4.OptionRelayAgentInformation, rai)
	}
	dst = append(dst, byte(dhcpv4.OptionEnd.Code()))
	for len(dst)-start < bootpMinLen {
		dst = append(dst, byte(dhcpv4.OptionPad.Code()))
	}
	return dst
}

// optionRequested is IsOptionRequested without its allocation: no
// parameter request list means "send everything" (RFC 2131 3.5).
func optionRequested(req *dhcpv4.DHCPv4, o dhcpv4.OptionCode) bool {
	prl, ok := req.Options[dhcpv4.OptionParameterRequestList.Code()]
	return !ok || bytes.IndexByte(prl, o.Code()) >= 0
}

// appendOpt writes one option; values over 255 bytes are split into
// several instances of it (RFC 3396), as insomniacslk does.
func appendOpt(dst []byte, code dhcpv4.OptionCode, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, code.Code(), 0)
	}
	for len(v) > 0 {
		n := min(len(v), 255)
		dst = append(dst, code.Code(), byte(n))
		dst = append(dst, v[:n]...)
		v = v[n:]
	}
	return dst
}

func appendStrOpt(dst []byte, code dhcpv4.OptionCode, s string) []byte {
	if len(s) <= 255 {
		dst = append(dst, code.Code(), byte(len(s)))
		return append(dst, s...)
	}
	return appendOpt(dst, code, []byte(s))
}

func appendIPs(dst []byte, code dhcpv4.OptionCode, ips ...net.IP) []byte {
	n := 0
	for _, ip := range ips {
		if ip.To4() != nil {
			n += 4
		}
	}
	if n > 255 {
		var v []byte
		for _, ip := range ips {
			if ip4 := ip.To4(); ip4 != nil {
				v = append(v, ip4...)
			}
		}
		return appendOpt(dst, code, v)
	}
	dst = append(dst, code.Code(), byte(n))
	for _, ip := range ips {
		if ip4 := ip.To4(); ip4 != nil {
			dst = append(dst, ip4...)
		}
	}
	return dst
}

// appendSeconds writes a 32-bit count of seconds (options 51, 58, 59).
func appendSeconds(dst []byte, code dhcpv4.OptionCode, d time.Duration) []byte {
	return binary.BigEndian.AppendUint32(append(dst, code.Code(), 4), uint32(d/time.Second))
}

// Ports of BOOTP/DHCP (RFC 2131) and PXE boot server discovery.
const (
	ServerPort = 67
	ClientPort = 68
	PXEPort    = 4011
)
