package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// parseInto decodes request bytes b into m as dhcpv4.FromBytes does, but
// reusing m's options map and pointing into b instead of copying: m is
// valid only while b is unchanged. Serve's readers parse every packet into
// one message of their own this way (FromBytes allocates a dozen times per
// packet). TestParseIntoMatchesFromBytes holds it to FromBytes' results.
func parseInto(m *dhcpv4.DHCPv4, b []byte) error {
	if len(b) < headerLen+cookieLen {
		return io.ErrUnexpectedEOF
	}
	if [cookieLen]byte(b[headerLen:headerLen+cookieLen]) != magicCookie {
		return errors.New("malformed DHCP packet: wrong magic cookie")
	}
	m.OpCode = dhcpv4.OpcodeType(b[0])
	m.HWType = iana.HWType(b[1])
	hlen := min(int(b[2]), 16)
	m.HopCount = b[3]
	m.TransactionID = dhcpv4.TransactionID(b[4:8])
	m.NumSeconds = binary.BigEndian.Uint16(b[8:10])
	m.Flags = binary.BigEndian.Uint16(b[10:12])
	m.ClientIPAddr = net.IP(b[12:16:16])
	m.YourIPAddr = net.IP(b[16:20:20])
	m.ServerIPAddr = net.IP(b[20:24:24])
	m.GatewayIPAddr = net.IP(b[24:28:28])
	m.ClientHWAddr = net.HardwareAddr(b[28 : 28+hlen : 28+hlen])
	m.ServerHostName = cString(b[44:108])
	m.BootFileName = cString(b[fileOffset : fileOffset+fileLen])
	if m.Options == nil {
		m.Options = make(dhcpv4.Options)
	}
	clear(m.Options)
	opts := b[headerLen+cookieLen:]
	if len(opts) == 0 {
		return nil // FromBytes accepts a message without options
	}
	for i := 0; i < len(opts); {
		code := opts[i]
		i++
		switch code {
		case 0: // Pad
			continue
		case 255: // End
			return nil
		}
		if i >= len(opts) {
			return io.ErrUnexpectedEOF
		}
		n := int(opts[i])
		i++
		if i+n > len(opts) {
			return io.ErrUnexpectedEOF
		}
		v := opts[i : i+n : i+n]
		i += n
		// RFC 3396: instances of one option concatenate. FromBytes keeps
		// an empty first instance as nil; so does this.
		if old, ok := m.Options[code]; ok && len(old) > 0 {
			m.Options[code] = append(old, v...) // old's cap is its length: a copy
		} else if n == 0 {
			m.Options[code] = nil
		} else {
			m.Options[code] = v
		}
	}
	return io.ErrUnexpectedEOF // no End option
}

// cString is a NUL-terminated field (all of it without a NUL).
func cString(b []byte) string {
	if k := bytes.IndexByte(b, 0); k >= 0 {
		b = b[:k]
	}
	return string(b)
}
