package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// transfer sends one file to one peer over a socket connected to it (the
// kernel then drops packets of any other TID, RFC 1350 section 4).
type transfer struct {
	conn    *net.UDPConn
	file    io.ReaderAt
	size    int64
	grant   grant
	timeout time.Duration // per retransmission
	retries int           // retransmissions of one packet before giving up

	deadline time.Time // the socket's read deadline, as last set
}

// errPeer is a transfer ended by the peer's ERROR packet.
var errPeer = errors.New("peer ended the transfer")

// run sends the OACK (if any) and the file, a window of blocks at a time
// (RFC 7440; windowsize 1 is RFC 1350's lock step). It returns the bytes
// the peer acknowledged.
func (t *transfer) run(ctx context.Context) (int64, error) {
	ack := make([]byte, 516)
	if t.grant.oack != nil {
		if _, err := t.exchange(ctx, ack, func() error { return t.write(oackPacket(t.grant.oack)) }, 0, 0); err != nil {
			return 0, fmt.Errorf("OACK: %w", err)
		}
	}
	blk := int64(t.grant.blksize)
	last := t.size/blk + 1 // a file of a whole number of blocks ends with an empty one
	block := make([]byte, 4+blk)
	binary.BigEndian.PutUint16(block, opDATA)
	for next := int64(1); next <= last; {
		end := min(next+int64(t.grant.windowsize)-1, last)
		sendWindow := func() error {
			for i := next; i <= end; i++ {
				n, err := t.file.ReadAt(block[4:], (i-1)*blk)
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("reading block %d: %w", i, err)
				}
				binary.BigEndian.PutUint16(block[2:], uint16(i)) // block numbers roll over past 65535
				if err := t.write(block[:4+n]); err != nil {
					return err
				}
			}
			return nil
		}
		acked, err := t.exchange(ctx, ack, sendWindow, next-1, end)
		if err != nil {
			return min((next-1)*blk, t.size), err
		}
		next = acked + 1
	}
	return t.size, nil
}

// exchange sends with send, then waits for an ACK of a block in
// (from, to]; an ACK of an earlier block is stale and ignored (resending on
// it is the Sorcerer's Apprentice bug), silence resends. It returns the
// block acknowledged. With from == to == 0 it waits for the ACK of an OACK.
func (t *transfer) exchange(ctx context.Context, buf []byte, send func() error, from, to int64) (int64, error) {
	for try := 0; try <= t.retries; try++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := send(); err != nil {
			return 0, err
		}
		// The deadline moves only when it is an eighth of the timeout
		// late: resetting the runtime's timer for every block costs more
		// than the block's syscalls, and a retransmission 1/8 early is
		// harmless.
		if d := time.Now().Add(t.timeout); d.Sub(t.deadline) > t.timeout/8 {
			if err := t.conn.SetReadDeadline(d); err != nil {
				return 0, err
			}
			t.deadline = d
		}
		for {
			n, err := t.conn.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return 0, err // ICMP port unreachable among them: the peer is gone
			}
			p := buf[:n]
			switch opcode(p) {
			case opERROR:
				code, msg := parseError(p)
				return 0, fmt.Errorf("%w: error %d %q", errPeer, code, msg)
			case opACK:
				if n < 4 {
					continue
				}
				if b, ok := acknowledged(binary.BigEndian.Uint16(p[2:]), from, to); ok {
					return b, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no acknowledgement after %d tries of %s", t.retries+1, t.timeout)
}

// acknowledged maps a 16-bit ACK number onto the blocks (from, to] in
// flight (to - from < 65536), or (from, true) for the ACK of an OACK when
// from == to == 0.
func acknowledged(num uint16, from, to int64) (int64, bool) {
	if from == to {
		return from, from == 0 && num == 0
	}
	k := int64(uint16(num - uint16(from+1))) // blocks past the first in flight
	if k >= to-from {
		return 0, false
	}
	return from + 1 + k, true
}

func (t *transfer) write(b []byte) error {
	_, err := t.conn.Write(b)
	return err
}
