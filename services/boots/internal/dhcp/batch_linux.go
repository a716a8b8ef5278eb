//go:build linux

package dhcp

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// batchSize is how many requests one recvmmsg takes and one sendmmsg
// answers. Under load the socket queue holds many; when it does not,
// recvmmsg returns the one there is and nothing waits for a batch to fill.
const batchSize = 32

// batchLoop serves conn with recvmmsg/sendmmsg (Linux): one system call
// per batch each way instead of one per packet, with every buffer and
// address reused, and no Go scheduler wake-up per packet. The socket stays
// under Go's poller (RawConn), so closing conn ends the loop.
type batchLoop struct {
	rc        syscall.RawConn
	h         *Handler
	log       *slog.Logger
	onPXEPort bool

	in     [batchSize][maxPacket]byte
	out    [batchSize][]byte
	dst    [batchSize]netip.AddrPort
	rname  [batchSize]unix.RawSockaddrInet4
	sname  [batchSize]unix.RawSockaddrInet4
	riov   [batchSize]unix.Iovec
	siov   [batchSize]unix.Iovec
	rhdr   [batchSize]unix.Mmsghdr
	shdr   [batchSize]unix.Mmsghdr
	req    dhcpv4.DHCPv4
	macs   [batchSize]net.HardwareAddr // for send error logs
	macBuf [batchSize][16]byte
}

// serveBatched runs the batched loop on uc; ok is false when the socket
// offers no raw access (then the caller serves it packet by packet).
func serveBatched(uc *net.UDPConn, h *Handler, log *slog.Logger, onPXEPort bool) (ok bool, err error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return false, nil
	}
	b := &batchLoop{rc: rc, h: h, log: log, onPXEPort: onPXEPort}
	for i := range batchSize {
		b.out[i] = make([]byte, 0, maxPacket)
		b.riov[i].Base = &b.in[i][0]
		b.riov[i].SetLen(maxPacket)
		b.rhdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.rname[i]))
		b.rhdr[i].Hdr.Iov = &b.riov[i]
		b.rhdr[i].Hdr.SetIovlen(1)
		b.shdr[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.sname[i]))
		b.shdr[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		b.shdr[i].Hdr.Iov = &b.siov[i]
		b.shdr[i].Hdr.SetIovlen(1)
	}
	for {
		n, err := b.recv()
		if err != nil {
			return true, err
		}
		k := 0 // replies
		for i := range n {
			if b.handle(i, k) {
				k++
			}
		}
		b.send(k)
	}
}

// recv waits for at least one request and takes up to batchSize.
func (b *batchLoop) recv() (int, error) {
	for i := range batchSize {
		b.rhdr[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		b.rhdr[i].Hdr.Flags = 0
	}
	var n int
	var errno syscall.Errno
	err := b.rc.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.rhdr[0])), batchSize, 0, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // wait until readable
		}
		n, errno = int(r), e
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// handle answers request i; its reply, if any, becomes reply k of the
// batch to send.
func (b *batchLoop) handle(i, k int) bool {
	hdr := &b.rhdr[i]
	if hdr.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return false // larger than any request boots answers
	}
	if err := parseInto(&b.req, b.in[i][:hdr.Len]); err != nil {
		return false // not DHCP: nothing to answer
	}
	var peer netip.AddrPort
	if sa := &b.rname[i]; sa.Family == unix.AF_INET {
		peer = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), portOf(sa))
	}
	reply, dst := b.h.AppendHandle(b.out[k][:0], &b.req, peer, b.onPXEPort)
	if reply == nil {
		return false
	}
	b.out[k] = reply
	b.dst[k] = dst
	b.macs[k] = append(b.macBuf[k][:0], b.req.ClientHWAddr...)
	sa := &b.sname[k]
	sa.Family = unix.AF_INET
	sa.Addr = dst.Addr().As4()
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], dst.Port())
	b.siov[k].Base = &b.out[k][0]
	b.siov[k].SetLen(len(reply))
	return true
}

// portOf reads a sockaddr's port, kept in network byte order.
func portOf(sa *unix.RawSockaddrInet4) uint16 {
	return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
}

// send sends replies [0, k), waiting while the socket buffer is full; a
// reply the kernel refuses is logged and skipped.
func (b *batchLoop) send(k int) {
	for off := 0; off < k; {
		var n int
		var errno syscall.Errno
		err := b.rc.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.shdr[off])), uintptr(k-off), 0, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			n, errno = int(r), e
			return true
		})
		if err != nil {
			return // closed: recv reports it
		}
		if errno != 0 {
			// sendmmsg fails only on its first message: skip that one.
			b.log.Warn("dhcp: sending reply", "mac", b.macs[off].String(), "to", b.dst[off].String(), "err", error(errno))
			off++
			continue
		}
		off += n
	}
}

// batchLoops is how many batched loops serve one socket. One: a second
// mostly hands the socket's read lock back and forth (a futex wake-up per
// batch) on the few CPUs boots gets, and one loop answers well over what
// a link's clients send.
var batchLoops = 1
