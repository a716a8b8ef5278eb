//go:build linux

package dhcp

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"
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
// address reused. It reads a duplicate of the socket in blocking mode,
// its goroutine waiting in recvmmsg itself: no trip through Go's poller
// per batch (a recvmmsg that finds the queue empty, epoll_wait, futex
// wake-ups of the threads parking and readying the goroutine), which cost
// more CPU than the answer at a few thousand requests a second (make
// bench-dhcp's CPU run, docs/benchmarks.md). The wait ends every
// pollEvery to see whether conn was closed.
type batchLoop struct {
	fd        int // the duplicate, blocking, ours to close
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
	fd, err := blockingDup(rc)
	if err != nil {
		return false, nil
	}
	defer unix.Close(fd)
	b := &batchLoop{fd: fd, rc: rc, h: h, log: log, onPXEPort: onPXEPort}
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

// pollEvery bounds a wait in recvmmsg or sendmmsg (SO_RCVTIMEO,
// SO_SNDTIMEO): closing conn does not wake a thread blocked on the
// duplicate, so the loop looks this often.
var pollEvery = 200 * time.Millisecond // a var for TestRecvLoneRequest

// blockingDup duplicates rc's socket and puts it in blocking mode with
// pollEvery timeouts. Blocking mode is a property of the open socket,
// which conn shares: conn itself is not read or written while the loop
// runs (Serve's only use of it is Close).
func blockingDup(rc syscall.RawConn) (int, error) {
	fd := -1
	var err error
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(pollEvery.Nanoseconds())
	if err = unix.SetNonblock(fd, false); err == nil {
		if err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err == nil {
			err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		}
	}
	if err != nil {
		_ = unix.SetNonblock(fd, true) // as conn's poller wants it, for the packet-by-packet loop
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// closed says whether conn was closed (its RawConn refuses then).
func (b *batchLoop) closed() bool { return b.rc.Control(func(uintptr) {}) != nil }

// recv waits for at least one request and takes up to batchSize; it
// returns net.ErrClosed once conn is closed.
func (b *batchLoop) recv() (int, error) {
	for i := range batchSize {
		b.rhdr[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		b.rhdr[i].Hdr.Flags = 0
	}
	for {
		// syscall.Syscall6, not RawSyscall: the scheduler knows the thread
		// waits in the kernel and runs other goroutines meanwhile.
		// MSG_WAITFORONE: wait for the first request only, then take what
		// is queued (a blocking recvmmsg otherwise waits for batchSize).
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.rhdr[0])), batchSize, unix.MSG_WAITFORONE, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EAGAIN, unix.EINTR: // pollEvery passed, or a signal
			if b.closed() {
				return 0, net.ErrClosed
			}
		default:
			return 0, e
		}
	}
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
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.shdr[off])), uintptr(k-off), 0, 0, 0)
		switch e {
		case 0:
			off += int(r)
		case unix.EAGAIN, unix.EINTR:
			if b.closed() {
				return // recv reports it
			}
		default:
			// sendmmsg fails only on its first message: skip that one.
			b.log.Warn("dhcp: sending reply", "mac", b.macs[off].String(), "to", b.dst[off].String(), "err", error(e))
			off++
		}
	}
}

// batchLoops is how many batched loops serve one socket. One: a second
// mostly hands the socket's read lock back and forth (a futex wake-up per
// batch) on the few CPUs boots gets, and one loop answers well over what
// a link's clients send.
var batchLoops = 1
