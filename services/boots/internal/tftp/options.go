package tftp

import (
	"fmt"
	"strconv"
)

// RFC bounds of the options this server negotiates.
const (
	defaultBlksize = 512   // RFC 1350
	maxBlksize     = 65464 // RFC 2348: 8..65464
	maxWindowsize  = 65535 // RFC 7440: 1..65535
)

// limits is what the server grants at most for one request.
type limits struct {
	blksize     int // also bounded by the interface MTU, see Server
	windowsize  int
	windowBytes int // blksize × windowsize at most, so a window fits the peer's socket buffer
}

// grant is the outcome of negotiation: the transfer's parameters and the
// OACK options (nil: no OACK, plain RFC 1350 transfer).
type grant struct {
	blksize    int
	windowsize int
	oack       []option
}

// negotiate decides blksize (RFC 2348), tsize (RFC 2349) and windowsize
// (RFC 7440) for a read of a file of size bytes. Values beyond what the
// server grants are clamped and the OACK says what was granted; values a
// client must not send (outside the RFC's range, not decimal, an option
// twice) and a blksize below 512 (tiny blocks multiply the packets a
// hostile client costs us) are refused, which the caller answers with
// error 8. Unknown options are ignored (RFC 2347).
func negotiate(opts []option, size int64, lim limits) (grant, error) {
	g := grant{blksize: defaultBlksize, windowsize: 1}
	seen := map[string]bool{}
	windowAsked := 0
	for _, o := range opts {
		switch o.name {
		case "blksize", "tsize", "windowsize":
		default:
			continue
		}
		if seen[o.name] {
			return grant{}, fmt.Errorf("option %s given twice", o.name)
		}
		seen[o.name] = true
		n, err := decimal(o.value)
		if err != nil {
			return grant{}, fmt.Errorf("option %s %q: %w", o.name, o.value, err)
		}
		switch o.name {
		case "blksize":
			if n < 8 || n > maxBlksize {
				return grant{}, fmt.Errorf("option blksize %d: outside 8..%d (RFC 2348)", n, maxBlksize)
			}
			if n < defaultBlksize {
				return grant{}, fmt.Errorf("option blksize %d: below %d, the smallest block this server sends", n, defaultBlksize)
			}
			g.blksize = min(n, lim.blksize)
			g.oack = append(g.oack, option{"blksize", strconv.Itoa(g.blksize)})
		case "tsize":
			g.oack = append(g.oack, option{"tsize", strconv.FormatInt(size, 10)})
		case "windowsize":
			if n < 1 || n > maxWindowsize {
				return grant{}, fmt.Errorf("option windowsize %d: outside 1..%d (RFC 7440)", n, maxWindowsize)
			}
			windowAsked = n
			g.oack = append(g.oack, option{"windowsize", ""}) // value once blksize is known
		}
	}
	if windowAsked > 0 {
		g.windowsize = max(1, min(windowAsked, lim.windowsize, lim.windowBytes/g.blksize))
		for i := range g.oack {
			if g.oack[i].name == "windowsize" {
				g.oack[i].value = strconv.Itoa(g.windowsize)
			}
		}
	}
	return g, nil
}

// decimal parses an option value: ASCII digits only (no sign, no spaces),
// at most 10 of them.
func decimal(s string) (int, error) {
	if s == "" || len(s) > 10 {
		return 0, fmt.Errorf("not a decimal number")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a decimal number")
		}
	}
	return strconv.Atoi(s)
}
