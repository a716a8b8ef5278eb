package tftp

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// enablePacketInfo asks the kernel for each request's destination address
// and interface (IP_PKTINFO), so a server on 0.0.0.0 answers from the
// address the client spoke to and sizes blocks to that interface's MTU.
func enablePacketInfo(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}); err != nil || serr != nil {
		return false
	}
	return true
}

// packetInfo reads the request's destination address and interface index
// from its control messages.
func packetInfo(oob []byte) (dst net.IP, ifindex int, ok bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, 0, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.IPPROTO_IP || m.Header.Type != unix.IP_PKTINFO || len(m.Data) < unix.SizeofInet4Pktinfo {
			continue
		}
		// struct in_pktinfo: int ifindex; in_addr spec_dst; in_addr addr.
		return net.IP(append([]byte(nil), m.Data[8:12]...)), int(int32(binary.NativeEndian.Uint32(m.Data[0:4]))), true
	}
	return nil, 0, false
}
