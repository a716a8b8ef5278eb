package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// NIC is what the init knows of a network interface when it picks which to
// ask for a lease.
type NIC struct {
	Name  string
	MAC   net.HardwareAddr
	Ether bool // an Ethernet device (not loopback, not a tunnel)
}

// CandidateNICs returns the interfaces to run DHCP on, in name order: the
// one whose MAC is bootMAC when it is set (none if it is not there yet),
// else every Ethernet interface (the first to get a lease wins).
func CandidateNICs(nics []NIC, bootMAC net.HardwareAddr) []NIC {
	var out []NIC
	for _, n := range nics {
		if !n.Ether || len(n.MAC) != 6 {
			continue
		}
		if bootMAC != nil && !bytes.Equal(n.MAC, bootMAC) {
			continue
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b NIC) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NetConfig is what a lease tells the init to set.
type NetConfig struct {
	Addr     netip.Prefix
	Gateway  netip.Addr // invalid when the lease names no router
	DNS      []netip.Addr
	Search   []string
	Hostname string
	MTU      int // 0 when the lease says nothing
	Lease    time.Duration
	Server   netip.Addr
}

// LeaseConfig reads the settings out of a DHCPACK.
func LeaseConfig(ack *dhcpv4.DHCPv4) (NetConfig, error) {
	if ack == nil {
		return NetConfig{}, errors.New("no DHCPACK")
	}
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return NetConfig{}, fmt.Errorf("DHCPACK without an address (yiaddr %v)", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	bits := 0
	if mask != nil {
		var size int
		bits, size = mask.Size()
		if size != 32 {
			return NetConfig{}, fmt.Errorf("DHCPACK subnet mask %v is not contiguous", net.IP(mask))
		}
	} else {
		bits = classfulBits(ip) // RFC 2132 3.3: no mask, use the class's
	}
	c := NetConfig{Addr: netip.PrefixFrom(ip, bits), Hostname: ack.HostName(), Lease: ack.IPAddressLeaseTime(0)}
	if routers := ack.Router(); len(routers) > 0 {
		if gw, ok := netip.AddrFromSlice(routers[0].To4()); ok && !gw.IsUnspecified() {
			c.Gateway = gw
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok && !a.IsUnspecified() {
			c.DNS = append(c.DNS, a)
		}
	}
	if l := ack.DomainSearch(); l != nil {
		c.Search = append(c.Search, l.Labels...)
	} else if dn := ack.DomainName(); dn != "" {
		c.Search = []string{dn}
	}
	if v := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(v) == 2 {
		if mtu := int(v[0])<<8 | int(v[1]); mtu >= 576 {
			c.MTU = mtu
		}
	}
	if s := ack.ServerIdentifier(); s != nil {
		c.Server, _ = netip.AddrFromSlice(s.To4())
	}
	return c, nil
}

func classfulBits(ip netip.Addr) int {
	switch b := ip.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}

// ResolvConf renders /etc/resolv.conf for the lease.
func ResolvConf(c NetConfig) string {
	var b strings.Builder
	b.WriteString("# written by herd's OSIE init from the DHCP lease\n")
	if len(c.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Search, " "))
	}
	for _, d := range c.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}

// RenewAfter is when to renew a lease: at T1 (half the lease, RFC 2131
// 4.4.5), never sooner than a minute; 0 for an infinite lease.
func RenewAfter(lease time.Duration) time.Duration {
	if lease <= 0 || lease >= time.Duration(^uint32(0))*time.Second {
		return 0
	}
	return max(lease/2, time.Minute)
}
