//go:build bench

package storm

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// relay is one UDP socket on port 67 at the relay address that every
// simulated machine's DHCP goes through, as a DHCP relay agent forwards a
// whole segment's: requests carry its address in giaddr, herd-boots
// answers it unicast, and replies go to the machine whose transaction id
// they carry.
type relay struct {
	conn   net.PacketConn
	giaddr net.IP
	server *net.UDPAddr

	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func newRelay(ns *netNS, giaddr, server string) (*relay, error) {
	r := &relay{giaddr: net.ParseIP(giaddr).To4(), server: &net.UDPAddr{IP: net.ParseIP(server), Port: 67},
		waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	err := ns.do(func() error {
		var e error
		r.conn, e = net.ListenPacket("udp4", giaddr+":67")
		return e
	})
	if err != nil {
		return nil, fmt.Errorf("relay socket %s:67: %w", giaddr, err)
	}
	_ = r.conn.(*net.UDPConn).SetReadBuffer(4 << 20)
	go r.read()
	return r, nil
}

func (r *relay) close() { r.conn.Close() }

func (r *relay) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		// A reply no machine waits for (late, after a resend) is dropped.
		r.mu.Lock()
		ch, ok := r.waiting[m.TransactionID]
		r.mu.Unlock()
		if ok {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// exchange sends req and waits for a reply of type want, sending req
// again after each timeout, as a PXE client does (4 tries: 1, 2, 4, 8 s).
// retries is how many times it was sent again.
func (r *relay) exchange(ctx context.Context, req *dhcpv4.DHCPv4, want dhcpv4.MessageType) (reply *dhcpv4.DHCPv4, retries int, err error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	r.mu.Lock()
	r.waiting[req.TransactionID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, req.TransactionID)
		r.mu.Unlock()
	}()
	wait := time.Second
	for try := 0; try < 4; try++ {
		if _, err := r.conn.WriteTo(req.ToBytes(), r.server); err != nil {
			return nil, try, fmt.Errorf("send %s: %w", req.MessageType(), err)
		}
		timer := time.NewTimer(wait)
		select {
		case m := <-ch:
			timer.Stop()
			if m.MessageType() != want {
				return nil, try, fmt.Errorf("%s answered with %s, want %s", req.MessageType(), m.MessageType(), want)
			}
			return m, try, nil
		case <-ctx.Done():
			timer.Stop()
			return nil, try, ctx.Err()
		case <-timer.C:
		}
		wait *= 2
	}
	return nil, 3, fmt.Errorf("no %s to the %s within 4 tries (15 s)", want, req.MessageType())
}

// ipxeOptions are what iPXE's DHCP sends (its PXE class, the user class
// "iPXE", BIOS x86) and the relay's giaddr: herd-boots then offers the
// auto.ipxe URL as the boot file.
func (r *relay) ipxeOptions() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{dhcpv4.WithRelay(r.giaddr),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))}
}

// dora is one machine's DISCOVER, OFFER, REQUEST, ACK.
func (r *relay) dora(ctx context.Context, mac net.HardwareAddr) (ack *dhcpv4.DHCPv4, retries int, err error) {
	disc, err := dhcpv4.NewDiscovery(mac, r.ipxeOptions()...)
	if err != nil {
		return nil, 0, err
	}
	offer, n, err := r.exchange(ctx, disc, dhcpv4.MessageTypeOffer)
	retries += n
	if err != nil {
		return nil, retries, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, r.ipxeOptions()...)
	if err != nil {
		return nil, retries, err
	}
	ack, n, err = r.exchange(ctx, req, dhcpv4.MessageTypeAck)
	return ack, retries + n, err
}
