package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Lease is one NIC's DHCP lease. A machine may have several: at OVH the
// first NIC sits on the provider's network and a second one on herd's.
type Lease struct {
	NIC   string // interface name
	Index int    // link index: the kernel's NIC order
	NetConfig
}

// Candidate is one URL to ask for the host name and the NIC the kernel
// reaches it through (for the log: which NIC and address answered).
type Candidate struct {
	URL string
	NIC string     // "" when no lease routes to it (a name, or no default route)
	Src netip.Addr // that NIC's leased address
}

func (c Candidate) String() string {
	if c.NIC == "" {
		return c.URL
	}
	return fmt.Sprintf("%s via %s (%s)", c.URL, c.NIC, c.Src)
}

// DefaultRoute is the lease whose router becomes the default route: the
// first, in NIC order, that names one. Only one default route is set, so
// a second NIC's router (herd's network at OVH) cannot steal the
// provider's; herd's own addresses are on-link through their lease.
func DefaultRoute(leases []Lease) (Lease, bool) {
	for _, l := range leases {
		if l.Gateway.IsValid() {
			return l, true
		}
	}
	return Lease{}, false
}

// routeFor is the lease the kernel sends traffic for ip through: the one
// whose subnet holds it, else the default route's.
func routeFor(ip netip.Addr, leases []Lease) (Lease, bool) {
	for _, l := range leases {
		if l.Addr.Masked().Contains(ip) {
			return l, true
		}
	}
	return DefaultRoute(leases)
}

// MetadataCandidates lists where to ask for the host name, in order: the
// base URL of the kernel command line alone when set (reached through
// the lease on its subnet), else herd-metadata's well-known port on each
// lease's DHCP server, in NIC order, each server once.
func MetadataCandidates(base string, leases []Lease) ([]Candidate, error) {
	var out []Candidate
	add := func(u string, host netip.Addr) {
		c := Candidate{URL: u}
		if host.IsValid() {
			if l, ok := routeFor(host, leases); ok {
				c.NIC, c.Src = l.NIC, l.Addr.Addr()
			}
		}
		out = append(out, c)
	}
	if base != "" {
		u, err := url.Parse(base)
		if err != nil {
			return nil, fmt.Errorf("herd.metadata=%q: %w", base, err)
		}
		full, err := HostnameURL(base, nil)
		if err != nil {
			return nil, err
		}
		host, _ := netip.ParseAddr(u.Hostname()) // a name: the resolver decides
		add(full, host)
		return out, nil
	}
	seen := map[string]bool{}
	for _, l := range leases {
		if l.Server == nil || l.Server.IsUnspecified() {
			continue
		}
		full, err := HostnameURL("", l.Server)
		if err != nil || seen[full] {
			continue
		}
		seen[full] = true
		host, _ := netip.AddrFromSlice(l.Server.To4())
		add(full, host)
	}
	if len(out) == 0 {
		return nil, errors.New("no herd.metadata= on the kernel command line and no lease names a DHCP server to ask")
	}
	return out, nil
}

// LeaseLine is the log line of one lease.
func LeaseLine(l Lease, mac net.HardwareAddr) string {
	gw := "none"
	if l.Gateway.IsValid() {
		gw = l.Gateway.String()
	}
	return fmt.Sprintf("DHCP lease on %s (%s): addr=%s gateway=%s server=%s", l.NIC, mac, l.Addr, gw, l.Server)
}

// CandidateErrors joins each candidate's last failure (which names its
// URL) into one error, with the NIC each went through.
func CandidateErrors(cands []Candidate, errs []error) error {
	var parts []string
	for i, c := range cands {
		if i >= len(errs) || errs[i] == nil {
			continue
		}
		p := errs[i].Error()
		if c.NIC != "" {
			p += fmt.Sprintf(" [via %s %s]", c.NIC, c.Src)
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return nil
	}
	return errors.New(strings.Join(parts, "; "))
}
