package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcodes (RFC 1350; OACK from RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes (RFC 1350; 8 from RFC 2347).
const (
	errCodeUndefined      = 0
	errCodeNotFound       = 1
	errCodeAccess         = 2
	errCodeIllegal        = 4
	errCodeOptionsRefused = 8
)

// option is one name/value pair of a request or an OACK; names are kept
// lower case (RFC 2347: case-insensitive).
type option struct{ name, value string }

// request is a parsed read request.
type request struct {
	filename string
	mode     string // lower case
	options  []option
}

var errMalformed = errors.New("malformed request")

// parseRequest parses a RRQ or WRQ packet: opcode, then NUL-terminated
// filename, mode and option name/value pairs.
func parseRequest(b []byte) (request, error) {
	if len(b) < 2 {
		return request{}, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	body := b[2:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		return request{}, fmt.Errorf("%w: not NUL-terminated", errMalformed)
	}
	fields := strings.Split(string(body[:len(body)-1]), "\x00")
	// Some PXE ROMs pad the request with NULs: empty trailing fields go.
	for len(fields) > 2 && fields[len(fields)-1] == "" {
		fields = fields[:len(fields)-1]
	}
	if len(fields) < 2 || fields[0] == "" || fields[1] == "" {
		return request{}, fmt.Errorf("%w: no filename or mode", errMalformed)
	}
	if len(fields)%2 != 0 {
		return request{}, fmt.Errorf("%w: option %q has no value", errMalformed, fields[len(fields)-1])
	}
	r := request{filename: fields[0], mode: strings.ToLower(fields[1])}
	for i := 2; i < len(fields); i += 2 {
		if fields[i] == "" {
			return request{}, fmt.Errorf("%w: empty option name", errMalformed)
		}
		r.options = append(r.options, option{name: strings.ToLower(fields[i]), value: fields[i+1]})
	}
	return r, nil
}

func opcode(b []byte) uint16 {
	if len(b) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

// errorPacket builds an ERROR packet; msg is cut to fit one 512-byte packet.
func errorPacket(code uint16, msg string) []byte {
	if len(msg) > 500 {
		msg = msg[:500]
	}
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(b, strings.ReplaceAll(msg, "\x00", "")...)
	return append(b, 0)
}

// oackPacket builds an OACK with the granted options in their order.
func oackPacket(opts []option) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, opOACK})
	for _, o := range opts {
		b.WriteString(o.name)
		b.WriteByte(0)
		b.WriteString(o.value)
		b.WriteByte(0)
	}
	return b.Bytes()
}

// parseError returns an ERROR packet's code and message.
func parseError(b []byte) (uint16, string) {
	if len(b) < 4 {
		return 0, ""
	}
	return binary.BigEndian.Uint16(b[2:]), string(bytes.TrimRight(b[4:], "\x00"))
}
