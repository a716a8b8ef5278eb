package tftp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestPacketInfo reads a datagram's destination address and interface
// (IP_PKTINFO) from a real socket on loopback.
func TestPacketInfo(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	uc := pc.(*net.UDPConn)
	if !enablePacketInfo(uc) {
		t.Fatal("IP_PKTINFO refused")
	}
	c, err := net.DialUDP("udp4", nil, uc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	uc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf, oob := make([]byte, 16), make([]byte, 128)
	_, oobn, _, _, err := uc.ReadMsgUDP(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	dst, ifindex, ok := packetInfo(oob[:oobn])
	if !ok || !dst.Equal(net.IPv4(127, 0, 0, 1)) || ifindex != lo.Index {
		t.Errorf("packetInfo = %v, %d, %v; want 127.0.0.1, %d (lo)", dst, ifindex, ok, lo.Index)
	}
	if _, _, ok := packetInfo(nil); ok {
		t.Error("packetInfo(nil) ok")
	}
}

// TestBusy: past maxTransfers at once, a request is answered "busy".
func TestBusy(t *testing.T) {
	_, dir, _ := serve(t)
	d, _ := OpenDir(dir)
	s := New(d, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	s.maxTransfers = 1
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	defer func() {
		cancel()
		<-done
	}()
	ask := func() string {
		return rawAsk(rawSocket(t), pc.LocalAddr().(*net.UDPAddr), "\x00\x01ipxe.efi\x00octet\x00blksize\x001468\x00")
	}
	if got := ask(); got != "\x00\x06blksize\x001468\x00" {
		t.Fatalf("first request: %q, want an OACK", got)
	}
	if got, want := ask(), "\x00\x05\x00\x00server busy: too many transfers, retry later\x00"; got != want {
		t.Errorf("second request while the first waits for its ACK: %q, want %q", got, want)
	}
}
