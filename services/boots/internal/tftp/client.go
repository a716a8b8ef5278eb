package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// Client reads files over TFTP, asking blksize and windowsize (RFC 7440).
// herd-boots serves and does not fetch: the client is for tests and
// benchmarks, one program for herd-boots and its peers alike.
type Client struct {
	Blksize    int           // 0: not asked (512)
	Windowsize int           // 0: not asked (lock step)
	Timeout    time.Duration // before the last packet is sent again; 0: 1 s
	Retries    int           // 0: 5

	lose func(block int64) bool // tests: a DATA block to act as lost, asked once per arrival
}

// Fetched is what a read got and what the server granted.
type Fetched struct {
	Bytes      int64
	Blksize    int
	Windowsize int
}

// Get reads name from server into w.
func (c Client) Get(ctx context.Context, server *net.UDPAddr, name string, w io.Writer) (Fetched, error) {
	timeout, retries := c.Timeout, c.Retries
	if timeout == 0 {
		timeout = time.Second
	}
	if retries == 0 {
		retries = 5
	}
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return Fetched{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()

	var opts []option
	if c.Blksize > 0 {
		opts = append(opts, option{"blksize", strconv.Itoa(c.Blksize)})
	}
	if c.Windowsize > 0 {
		opts = append(opts, option{"windowsize", strconv.Itoa(c.Windowsize)})
	}
	rrq := append([]byte{0, opRRQ}, name...)
	rrq = append(append(rrq, 0), "octet\x00"...)
	rrq = append(rrq, oackPacket(opts)[2:]...)

	got := Fetched{Blksize: defaultBlksize, Windowsize: 1}
	last := rrq          // what silence resends
	var tid *net.UDPAddr // the server's transfer socket, once it spoke
	next := int64(1)     // the block awaited
	inWindow := 0        // blocks taken since the last ACK
	gapAcked := false    // the ACK for the current gap went out
	ack := func(block int64) []byte {
		b := []byte{0, opACK, 0, 0}
		binary.BigEndian.PutUint16(b[2:], uint16(block))
		return b
	}
	buf := make([]byte, 4+maxBlksize)
	if _, err := conn.WriteToUDP(rrq, server); err != nil {
		return got, err
	}
	for try := 0; ; {
		conn.SetReadDeadline(time.Now().Add(timeout))
		n, from, err := conn.ReadFromUDP(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
			if try++; try > retries {
				return got, fmt.Errorf("%s: no answer after %d tries of %s", name, retries+1, timeout)
			}
			to := server
			if tid != nil {
				to = tid
			}
			conn.WriteToUDP(last, to)
			continue
		}
		if err != nil {
			return got, errors.Join(ctx.Err(), err)
		}
		if tid == nil {
			tid = from
		} else if !from.IP.Equal(tid.IP) || from.Port != tid.Port {
			continue // another TID: not this transfer's
		}
		p := buf[:n]
		switch opcode(p) {
		case opERROR:
			code, msg := parseError(p)
			return got, fmt.Errorf("%s: server error %d: %s", name, code, msg)
		case opOACK:
			if next != 1 || got.Bytes > 0 {
				continue
			}
			req, err := parseRequest(append([]byte{0, opRRQ, 'x', 0, 'o', 0}, p[2:]...))
			if err != nil {
				return got, fmt.Errorf("%s: OACK: %w", name, err)
			}
			for _, o := range req.options {
				v, err := decimal(o.value)
				if err != nil {
					return got, fmt.Errorf("%s: OACK %s %q: %w", name, o.name, o.value, err)
				}
				switch o.name {
				case "blksize":
					if v < 8 || v > c.Blksize {
						return got, fmt.Errorf("%s: OACK blksize %d, asked %d", name, v, c.Blksize)
					}
					got.Blksize = v
				case "windowsize":
					if v < 1 || v > c.Windowsize {
						return got, fmt.Errorf("%s: OACK windowsize %d, asked %d", name, v, c.Windowsize)
					}
					got.Windowsize = v
				}
			}
			last = ack(0)
			try = 0
			conn.WriteToUDP(last, tid)
		case opDATA:
			if n < 4 {
				continue
			}
			block := binary.BigEndian.Uint16(p[2:])
			if block != uint16(next) || (c.lose != nil && c.lose(next)) {
				// A gap or a duplicate: ACK what arrived in order, the
				// server goes on from there (RFC 7440 section 4).
				if !gapAcked {
					last, inWindow, gapAcked = ack(next-1), 0, true
					conn.WriteToUDP(last, tid)
				}
				continue
			}
			data := p[4:]
			if len(data) > got.Blksize {
				return got, fmt.Errorf("%s: block %d of %d bytes, blksize %d", name, next, len(data), got.Blksize)
			}
			if _, err := w.Write(data); err != nil {
				return got, err
			}
			got.Bytes += int64(len(data))
			try, gapAcked = 0, false
			inWindow++
			end := len(data) < got.Blksize
			if end || inWindow == got.Windowsize {
				last, inWindow = ack(next), 0
				conn.WriteToUDP(last, tid)
			}
			next++
			if end {
				return got, nil
			}
		}
	}
}
