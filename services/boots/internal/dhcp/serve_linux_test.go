package dhcp

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/herd-metal/herd/services/boots/internal/netnstest"
)

// TestServeBatched runs Serve's batched loop on a real socket: a relay in
// a namespace of its own sends a burst of DISCOVERs (several to a
// recvmmsg) over a veth, each gets its OFFER with its reserved address;
// then ending the context ends Serve, which closes the socket.
func TestServeBatched(t *testing.T) {
	srv, cli := netnstest.New(t, "hdsv"), netnstest.New(t, "hdcl")
	netnstest.Veth(t, srv, "hs0", "10.0.5.1/24", cli, "hc0", nil)
	cli.IP("addr", "add", "10.0.5.2/24", "dev", "hc0")

	const n = 200
	ms := fakeMachines{}
	macs := make([]net.HardwareAddr, n)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
		ms[macs[i].String()] = machine(fmt.Sprintf("hw-%d", i), macs[i], fmt.Sprintf("10.0.5.%d", 10+i), true)
	}
	h := NewHandler(Config{Mode: Reservation, ServerID: serverIP, Boot: bootCfg, UserClass: "herd", DefaultLease: time.Hour, Link: testLink},
		ms, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)

	// The runtime's poller opens its files on first use: before the count.
	if c, err := net.ListenPacket("udp4", "127.0.0.1:0"); err == nil {
		c.Close()
	}
	fds0 := openFDs(t)
	var conn net.PacketConn
	if err := srv.Do(func() (err error) {
		conn, err = Listen("hs0", &net.UDPAddr{IP: net.IPv4zero, Port: ServerPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, conn, h, slog.New(slog.NewTextHandler(io.Discard, nil)), false) }()

	var relay *net.UDPConn
	if err := cli.Do(func() (err error) {
		relay, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 0, 5, 2), Port: ServerPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadBuffer(1 << 20)
	to := &net.UDPAddr{IP: net.IPv4(10, 0, 5, 1), Port: ServerPort}
	for _, mac := range macs {
		d, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithRelay(net.IPv4(10, 0, 5, 2)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := relay.WriteToUDP(d.ToBytes(), to); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{}
	for i, mac := range macs {
		want[mac.String()] = fmt.Sprintf("10.0.5.%d", 10+i)
	}
	buf := make([]byte, maxPacket)
	// A guard against a hang, not a speed bound.
	_ = relay.SetReadDeadline(time.Now().Add(30 * time.Second))
	for len(want) > 0 {
		k, _, err := relay.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%d DISCOVERs without an OFFER: %v", len(want), err)
		}
		o, err := dhcpv4.FromBytes(buf[:k])
		if err != nil {
			t.Fatalf("reply: %v", err)
		}
		ip, ok := want[o.ClientHWAddr.String()]
		if !ok {
			t.Fatalf("reply to %s: not asked for, or twice", o.ClientHWAddr)
		}
		if o.MessageType() != dhcpv4.MessageTypeOffer || o.YourIPAddr.String() != ip {
			t.Fatalf("reply to %s: %s offering %s, want an OFFER of %s", o.ClientHWAddr, o.MessageType(), o.YourIPAddr, ip)
		}
		delete(want, o.ClientHWAddr.String())
	}

	relay.Close()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after its context ended: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if fds := openFDs(t); fds != fds0 {
		t.Errorf("%d open files after Serve returned, %d before it: the socket left open", fds, fds0)
	}
}

// openFDs counts this process's open files.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestBatchHandleAllocs: the batched loop's work for one request (parse
// into its reused message, decide, write the reply and its address into
// the send batch) allocates nothing, for DISCOVERs and REQUESTs alike.
func TestBatchHandleAllocs(t *testing.T) {
	h, reqs := handleFixture(t)
	b := &batchLoop{h: h, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for i := range batchSize {
		b.out[i] = make([]byte, 0, maxPacket)
	}
	b.rname[0] = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{10, 0, 255, 253}}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&b.rname[0].Port))[:], ServerPort)
	for kind, rs := range reqs {
		i := 0
		allocs := testing.AllocsPerRun(1000, func() {
			b.rhdr[0].Len = uint32(copy(b.in[0][:], rs[i%len(rs)]))
			i++
			if !b.handle(0, 0) {
				t.Fatalf("%s %d: no reply", kind, i)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per request, want 0", kind, allocs)
		}
		if b.dst[0].String() != "10.0.255.253:67" {
			t.Errorf("%s: reply to %s, want the relay 10.0.255.253:67", kind, b.dst[0])
		}
	}
}
