package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Router advertisements on the sandbox's bridges.
//
// iPXE's network configuration (ifconf, which the ROM's autoboot runs)
// waits for IPv6 autoconfiguration as well as for DHCPv4, and on a link
// without a router it gives up only when its router solicitations time
// out: about 16 s on every netboot, the one after provisioning included.
// The sandbox answers each solicitation with an advertisement that offers
// nothing (no prefix, not a default router, no DHCPv6), which ends iPXE's
// IPv6 configuration at once; the machines stay IPv4-only.

const (
	icmpRouterSolicitation  = 133
	icmpRouterAdvertisement = 134
)

// emptyRouterAdvertisement is an ICMPv6 router advertisement (RFC 4861
// 4.2) with every field zero: hop limit and timers unspecified, managed
// and other-configuration flags clear (so no DHCPv6), router lifetime 0
// (not a default router), no options (no prefix to autoconfigure). The
// kernel fills in the checksum of a raw ICMPv6 socket.
func emptyRouterAdvertisement() []byte {
	return []byte{
		icmpRouterAdvertisement, 0, 0, 0, // type, code, checksum
		0, 0, 0, 0, // current hop limit, flags, router lifetime
		0, 0, 0, 0, // reachable time
		0, 0, 0, 0, // retransmission timer
	}
}

// isRouterSolicitation says whether an ICMPv6 message is a router
// solicitation (the socket's filter passes nothing else, but the message
// came from a VM).
func isRouterSolicitation(b []byte) bool {
	return len(b) >= 8 && b[0] == icmpRouterSolicitation && b[1] == 0
}

// advertiseRouters answers router solicitations on the bridges (in the
// namespace) until ctx ends. It returns once the sockets are open.
func advertiseRouters(ctx context.Context, bridges []string, logf func(format string, a ...any)) error {
	for _, br := range bridges {
		var c net.PacketConn
		var ifindex int
		if err := inNetns(func() error {
			var err error
			c, ifindex, err = routerSocket(br)
			return err
		}); err != nil {
			return fmt.Errorf("router advertisements on %s: %w", br, err)
		}
		go func() {
			<-ctx.Done()
			c.Close()
		}()
		go answerSolicitations(c, ifindex, br, logf)
	}
	return nil
}

// routerSocket opens a raw ICMPv6 socket on the bridge ifname that sends
// with hop limit 255 (RFC 4861 requires it of neighbour discovery) and
// receives router solicitations only. It must run inside the namespace.
func routerSocket(ifname string) (net.PacketConn, int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, 0, err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_ICMPV6)
	if err != nil {
		return nil, 0, err
	}
	// Solicitations go to all-routers, a group a host that does not
	// forward is not in.
	allRouters := unix.IPv6Mreq{Multiaddr: [16]byte{0: 0xff, 1: 0x02, 15: 0x02}, Interface: uint32(ifi.Index)}
	err = errors.Join(
		unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname),
		unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, &allRouters),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255),
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255),
		unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, onlyICMPv6(icmpRouterSolicitation)),
	)
	if err != nil {
		unix.Close(fd)
		return nil, 0, err
	}
	f := os.NewFile(uintptr(fd), "icmpv6-"+ifname)
	defer f.Close() // FilePacketConn holds its own copy
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, 0, err
	}
	return c, ifi.Index, nil
}

// onlyICMPv6 is a raw ICMPv6 socket's filter that passes messages of type
// typ alone (a set bit blocks its type).
func onlyICMPv6(typ uint8) *unix.ICMPv6Filter {
	var f unix.ICMPv6Filter
	for i := range f.Data {
		f.Data[i] = ^uint32(0)
	}
	f.Data[typ>>5] &^= 1 << (typ & 31)
	return &f
}

// answerSolicitations sends an empty router advertisement to all nodes on
// the bridge at once (covering a VM that solicited before the socket was
// open) and again for each solicitation, until c is closed.
func answerSolicitations(c net.PacketConn, ifindex int, br string, logf func(format string, a ...any)) {
	// A numeric zone: the process's zone cache knows the host's
	// interfaces, not the namespace's.
	allNodes := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: strconv.Itoa(ifindex)}
	ra := emptyRouterAdvertisement()
	send := func() {
		// Fails until the bridge has a link-local address (once a VM's
		// tap is up); iPXE solicits again.
		_, _ = c.WriteTo(ra, allNodes)
	}
	send()
	buf := make([]byte, 1500)
	answered := false
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if !isRouterSolicitation(buf[:n]) {
			continue
		}
		if !answered {
			ip := from.(*net.IPAddr).IP // its zone names a host interface: the process's zone cache
			logf("%s: router solicitation from %s: answering with an empty router advertisement (no IPv6 router here)", br, ip)
			answered = true
		}
		send()
	}
}
