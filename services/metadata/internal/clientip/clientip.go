// Package clientip decides which machine made a request: the address that
// identifies the caller to herd-metadata. Pure functions over the request's
// peer address and X-Forwarded-For values.
package clientip

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePrefixes reads a comma-separated list of CIDRs or single addresses
// (a single address is its /32 or /128). Empty means none.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want a CIDR (10.0.0.0/24) or an address", part)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Peer parses an http.Request.RemoteAddr ("ip:port", "[ip6]:port"); IPv4
// mapped in IPv6 comes back as IPv4.
func Peer(remoteAddr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}

// Client returns the caller's address. The direct peer is the caller unless
// it is a trusted proxy; then X-Forwarded-For (xff: the header's values in
// the order received, each a comma-separated list) is read from the right,
// skipping trusted proxies, and the right-most address that is not one is
// the caller. Entries left of it were written by the caller itself and
// prove nothing. With no trusted proxies configured the header is ignored.
// A proxy that sent no header is the caller; when every entry is a trusted
// proxy, the left-most one is. ok is false when the peer or the entry that
// would be the caller does not parse: such a request identifies nobody.
func Client(remoteAddr string, xff []string, trusted []netip.Prefix) (addr netip.Addr, ok bool) {
	peer, ok := Peer(remoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	return FromPeer(peer, xff, trusted)
}

// FromPeer is Client for a peer address already parsed (and unmapped).
func FromPeer(peer netip.Addr, xff []string, trusted []netip.Prefix) (addr netip.Addr, ok bool) {
	if !contains(trusted, peer) {
		return peer, true
	}
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		rest := xff[i]
		for rest != "" {
			var entry string
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				entry, rest = rest, ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a, ok := parseEntry(entry)
			if !ok {
				return netip.Addr{}, false
			}
			if !contains(trusted, a) {
				return a, true
			}
			client = a
		}
	}
	return client, true
}

// parseEntry reads one X-Forwarded-For element: an address, possibly with
// a port ("192.0.2.1:4711", "[2001:db8::1]:4711") as some proxies write.
func parseEntry(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// Trusted says whether a peer is one of the trusted proxies, whose
// X-Forwarded-For Client reads.
func Trusted(peer netip.Addr, trusted []netip.Prefix) bool { return contains(trusted, peer) }

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
