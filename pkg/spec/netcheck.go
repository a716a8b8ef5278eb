package spec

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// NormalizeMAC parses a 6-byte MAC address in any of the usual spellings
// (aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff) and returns it in
// the form herd stores and looks up: lower case, colon separated.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%s is not a MAC address (like 08:00:27:00:00:01)", quote(s))
	}
	return hw.String(), nil
}

// macProblem describes what is wrong with a MAC for a machine's interface.
func macProblem(s string) string {
	m, err := NormalizeMAC(s)
	if err != nil {
		return err.Error()
	}
	switch {
	case m == "00:00:00:00:00:00":
		return fmt.Sprintf("%s is the all-zero MAC, not an interface's", quote(s))
	case m == "ff:ff:ff:ff:ff:ff":
		return fmt.Sprintf("%s is the broadcast MAC, not an interface's", quote(s))
	case m[1] == '1' || m[1] == '3' || m[1] == '5' || m[1] == '7' || m[1] == '9' || m[1] == 'b' || m[1] == 'd' || m[1] == 'f':
		return fmt.Sprintf("%s is a multicast MAC (first octet odd), not an interface's", quote(s))
	}
	return ""
}

// parseIP parses an address as written in a hardware record.
func parseIP(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, fmt.Sprintf("%s is not an IPv4 or IPv6 address", quote(s))
	case a.Zone() != "":
		return a, fmt.Sprintf("%s has a zone; write the address without %%%s", quote(s), a.Zone())
	case a.Is4In6():
		return a, fmt.Sprintf("%s is an IPv4-mapped IPv6 address; write it as %s", quote(s), a.Unmap())
	}
	return a, ""
}

// hostIPProblem parses an address a machine or server can have.
func hostIPProblem(s string) (netip.Addr, string) {
	a, p := parseIP(s)
	if p != "" {
		return a, p
	}
	switch {
	case a.IsUnspecified():
		return a, fmt.Sprintf("%s is the unspecified address", quote(s))
	case a.IsLoopback():
		return a, fmt.Sprintf("%s is a loopback address", quote(s))
	case a.IsMulticast():
		return a, fmt.Sprintf("%s is a multicast address", quote(s))
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return a, fmt.Sprintf("%s is the broadcast address", quote(s))
	}
	return a, ""
}

// maskBits parses a netmask written as an address (255.255.255.0 for IPv4,
// ffff:ffff:ffff:ffff:: for IPv6) and returns its prefix length.
func maskBits(s string, v4 bool) (int, string) {
	if s != "" && strings.Trim(s, "/0123456789") == "" {
		return 0, fmt.Sprintf("%s is a prefix length; write the netmask as an address, like 255.255.255.0", quote(s))
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return 0, fmt.Sprintf("%s is not a netmask (like 255.255.255.0)", quote(s))
	}
	if a.Is4() != v4 {
		fam := "IPv6"
		if v4 {
			fam = "IPv4"
		}
		return 0, fmt.Sprintf("%s is not an %s netmask, but the address is %s", quote(s), fam, fam)
	}
	b := a.AsSlice()
	bits, ended := 0, false
	for _, x := range b {
		for i := 7; i >= 0; i-- {
			one := x&(1<<i) != 0
			switch {
			case one && ended:
				return 0, fmt.Sprintf("%s is not a netmask: its one bits are not contiguous", quote(s))
			case one:
				bits++
			default:
				ended = true
			}
		}
	}
	if bits == 0 {
		return 0, fmt.Sprintf("%s is an empty netmask", quote(s))
	}
	return bits, ""
}

// subnetProblem refuses an IPv4 address that is its subnet's network or
// broadcast address; /31 and /32 have neither.
func subnetProblem(a netip.Addr, bits int) string {
	if !a.Is4() || bits > 30 {
		return ""
	}
	p := netip.PrefixFrom(a, bits).Masked()
	if a == p.Addr() {
		return fmt.Sprintf("%s is the network address of %s, not a host's", a, p)
	}
	b := a.As4()
	host := uint32(1)<<(32-bits) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	if v&host == host {
		return fmt.Sprintf("%s is the broadcast address of %s, not a host's", a, p)
	}
	return ""
}

// uuidProblem checks the canonical 8-4-4-4-12 hex form.
func uuidProblem(s string) string {
	bad := fmt.Sprintf("%s is not a UUID (like 0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94)", quote(s))
	if len(s) != 36 {
		return bad
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return bad
			}
		default:
			if !isHex(c) {
				return bad
			}
		}
	}
	if strings.Trim(s, "0-") == "" {
		return "is the nil UUID; give the machine a random one (uuidgen)"
	}
	return ""
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// hostnameProblem applies RFC 1123: dot-separated labels of letters, digits
// and inner hyphens, each at most 63 characters, 253 in all.
func hostnameProblem(s string) string {
	bad := fmt.Sprintf("%s is not a hostname (RFC 1123: dot-separated labels of letters, digits and inner hyphens)", quote(s))
	if len(s) > 253 {
		return fmt.Sprintf("%s is %d characters long; a hostname has at most 253", quote(s), len(s))
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return bad
		}
		if len(label) > 63 {
			return fmt.Sprintf("%s has a label longer than 63 characters", quote(s))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return bad
			}
		}
	}
	return ""
}

// TimeServerIsName reports whether a hardware record's time server is
// given as a host name (which herd-boots resolves for DHCP option 42)
// rather than as an address.
func TimeServerIsName(s string) bool {
	_, err := netip.ParseAddr(s)
	return err != nil && !strings.Contains(s, ":") && hostProblem(s) == ""
}

// hostProblem checks a server a record names (a dhcp.time_servers entry,
// the BMC's address): an address a server can have, or an RFC 1123 host
// name (at most 253 characters, labels of at most 63 letters, digits and
// inner hyphens; the last label not all digits, so a mistyped address such
// as 10.1.0.300 is not taken for a name).
func hostProblem(s string) string {
	if _, err := netip.ParseAddr(s); err == nil || strings.Contains(s, ":") {
		_, msg := hostIPProblem(s)
		return msg
	}
	bad := fmt.Sprintf("%s is neither an IPv4 or IPv6 address nor a host name "+
		"(RFC 1123: dot-separated labels of letters, digits and inner hyphens, like 0.pool.ntp.org)", quote(s))
	switch {
	case s == "":
		return "is empty: give an address or a host name"
	case len(s) > 253:
		return fmt.Sprintf("%s is %d characters long; a host name has at most 253", quote(s), len(s))
	}
	labels := strings.Split(s, ".")
	for _, label := range labels {
		if len(label) > 63 {
			return fmt.Sprintf("%s has a label of %d characters; a host name's labels have at most 63", quote(s), len(label))
		}
	}
	if msg := hostnameProblem(s); msg != "" {
		return bad
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Sprintf("%s is not an IPv4 address, and not a host name either (its last label is all digits)", quote(s))
	}
	return ""
}

// ifaceNameProblem applies Linux's rules for interface names.
func ifaceNameProblem(s string) string {
	switch {
	case len(s) > 15:
		return fmt.Sprintf("%s is longer than Linux's 15 characters for an interface name", quote(s))
	case s == "." || s == "..":
		return fmt.Sprintf("%s is not an interface name", quote(s))
	}
	for _, r := range s {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Sprintf("%s is not an interface name: no \"/\", \":\" or spaces", quote(s))
		}
	}
	return ""
}

// archProblem checks the shape of an architecture name (x86_64, aarch64).
func archProblem(s string) string {
	if len(s) > 32 {
		return fmt.Sprintf("%s is not an architecture name (like x86_64 or aarch64)", quote(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return fmt.Sprintf("%s is not an architecture name (like x86_64 or aarch64): lower-case letters, digits, \"_\" and \"-\"", quote(s))
		}
	}
	return ""
}

// httpURLProblem accepts absolute http and https URLs with a host.
func httpURLProblem(s string) string {
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Sprintf("%s contains spaces or control characters", quote(s))
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Sprintf("%s is not an http:// or https:// URL", quote(s))
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Sprintf("%s has no host", quote(s))
	}
	if p := u.Port(); p != "" {
		var n int
		if _, err := fmt.Sscan(p, &n); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("%s has an invalid port", quote(s))
		}
	}
	return ""
}

// bootPathProblem accepts a file path relative to the OSIE base URL or an
// absolute http(s) URL.
func bootPathProblem(s string) string {
	if strings.Contains(s, "://") {
		return httpURLProblem(s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Sprintf("%s contains spaces or control characters", quote(s))
		}
	}
	return ""
}

// textProblem refuses what no name may hold: invalid UTF-8 and control
// characters.
func textProblem(s string) string {
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%s is not valid UTF-8", quote(s))
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Sprintf("%s contains a control character (%U)", quote(s), r)
		}
	}
	return ""
}
