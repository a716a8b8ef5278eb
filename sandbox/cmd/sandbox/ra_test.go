package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestEmptyRouterAdvertisement(t *testing.T) {
	ra := emptyRouterAdvertisement()
	// 16 bytes: the fixed header, no options (so no prefix).
	if len(ra) != 16 || ra[0] != 134 || ra[1] != 0 {
		t.Fatalf("not a 16-byte router advertisement without options: % x", ra)
	}
	// iPXE ends its IPv6 configuration only when M and O are clear (else
	// it starts DHCPv6), and hosts must not take us for a default router.
	if flags, lifetime := ra[5], int(ra[6])<<8|int(ra[7]); flags != 0 || lifetime != 0 {
		t.Errorf("flags %#x, router lifetime %d: want 0, 0", flags, lifetime)
	}
}

func TestIsRouterSolicitation(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{[]byte{133, 0, 0, 0, 0, 0, 0, 0}, true},
		{[]byte{133, 0, 0xab, 0xcd, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}, true}, // with a source link-layer option
		{[]byte{133, 0, 0, 0}, false},                                                         // short
		{[]byte{133, 1, 0, 0, 0, 0, 0, 0}, false},                                             // code must be 0
		{[]byte{134, 0, 0, 0, 0, 0, 0, 0}, false},                                             // an advertisement
		{nil, false},
	} {
		if got := isRouterSolicitation(tc.b); got != tc.want {
			t.Errorf("isRouterSolicitation(% x) = %v, want %v", tc.b, got, tc.want)
		}
	}
}

// TestRouterAdvertisementAnswersSolicitation: in two namespaces of its own
// joined by a veth, a router solicitation sent from one end is answered
// by an empty router advertisement with hop limit 255 from the other.
func TestRouterAdvertisementAnswersSolicitation(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("not root: network namespaces need root (CI=true: a missing real part fails)")
		}
		t.Skip("not root: network namespaces need root")
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	own, peer := "herd-ra-"+hex.EncodeToString(suffix), "herd-rapeer-"+hex.EncodeToString(suffix)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{own, peer} {
		run("netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	run("-n", own, "link", "add", "rabr", "type", "veth", "peer", "name", "racl", "netns", peer)
	run("-n", own, "link", "set", "rabr", "up")
	run("-n", peer, "link", "set", "racl", "up")
	// Both ends need their link-local address past duplicate detection.
	for _, end := range [][2]string{{own, "rabr"}, {peer, "racl"}} {
		deadline := time.Now().Add(15 * time.Second)
		for {
			out, _ := exec.Command("ip", "-n", end[0], "-6", "addr", "show", "dev", end[1], "scope", "link").CombinedOutput()
			if strings.Contains(string(out), "fe80::") && !strings.Contains(string(out), "tentative") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s has no usable link-local address: %s", end[1], end[0], out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	saved := nsName
	nsName = own
	t.Cleanup(func() { nsName = saved })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := advertiseRouters(ctx, []string{"rabr"}, t.Logf); err != nil {
		t.Fatal(err)
	}

	// The soliciting VM: a raw ICMPv6 socket in the peer namespace that
	// receives router advertisements and their hop limit.
	var fd int
	var ifindex int
	if err := inNetnsAt("/run/netns/"+peer, func() error {
		ifi, err := net.InterfaceByName("racl")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		if fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6); err != nil {
			return err
		}
		return errors.Join(
			unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "racl"),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255),
			unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1),
			unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, onlyICMPv6(icmpRouterAdvertisement)),
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}),
		)
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	allRouters := &unix.SockaddrInet6{Addr: [16]byte{0: 0xff, 1: 0x02, 15: 0x02}, ZoneId: uint32(ifindex)}
	rs := []byte{icmpRouterSolicitation, 0, 0, 0, 0, 0, 0, 0}
	if err := unix.Sendto(fd, rs, 0, allRouters); err != nil {
		t.Fatalf("sending the router solicitation: %v", err)
	}
	buf, oob := make([]byte, 1500), make([]byte, 128)
	n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
	if err != nil {
		t.Fatalf("no router advertisement within 5 s of the solicitation: %v", err)
	}
	if got := buf[:n]; len(got) != 16 || got[0] != icmpRouterAdvertisement || got[5] != 0 || got[6] != 0 || got[7] != 0 {
		t.Errorf("from %v: % x, want an empty router advertisement: flags 0, lifetime 0, no options", from, got)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	hopLimit := -1
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4 {
			hopLimit = int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	if hopLimit != 255 {
		t.Errorf("hop limit %d, want 255 (hosts drop neighbour discovery with any other)", hopLimit)
	}
}
