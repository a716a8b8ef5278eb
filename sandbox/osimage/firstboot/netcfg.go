package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// NetConfig is what a DHCP lease sets on the NIC.
type NetConfig struct {
	Addr    netip.Prefix // address and prefix length
	Gateway netip.Addr   // zero when the lease names no router
	DNS     []netip.Addr
	Server  net.IP // the DHCP server (option 54, else siaddr)
}

// LeaseConfig reads the settings of a DHCP ACK. Without a subnet mask
// (option 1) the address's classful mask is used, as RFC 2131 allows.
func LeaseConfig(ack *dhcpv4.DHCPv4) (NetConfig, error) {
	var c NetConfig
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return c, errors.New("the lease holds no address (yiaddr)")
	}
	bits := 24
	if m := ack.SubnetMask(); m != nil {
		ones, total := m.Size()
		if total != 32 || ones == 0 {
			return c, fmt.Errorf("subnet mask %s is not a valid IPv4 mask", net.IP(m))
		}
		bits = ones
	} else if ip.As4()[0] < 128 {
		bits = 8
	} else if ip.As4()[0] < 192 {
		bits = 16
	}
	c.Addr = netip.PrefixFrom(ip, bits)
	for _, r := range ack.Router() {
		if a, ok := netip.AddrFromSlice(r.To4()); ok && !a.IsUnspecified() {
			c.Gateway = a
			break
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			c.DNS = append(c.DNS, a)
		}
	}
	c.Server = ack.ServerIdentifier()
	if c.Server == nil && ack.ServerIPAddr != nil && !ack.ServerIPAddr.IsUnspecified() {
		c.Server = ack.ServerIPAddr
	}
	return c, nil
}

// ResolvConf is /etc/resolv.conf for the leases, their name servers in
// lease order, each once (Go's resolver reads it when herd.metadata=
// names a host rather than an address).
func ResolvConf(leases ...NetConfig) string {
	var b strings.Builder
	seen := map[netip.Addr]bool{}
	for _, c := range leases {
		for _, d := range c.DNS {
			if !seen[d] {
				seen[d] = true
				fmt.Fprintf(&b, "nameserver %s\n", d)
			}
		}
	}
	return b.String()
}
