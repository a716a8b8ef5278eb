//go:build bench

package storm

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
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

// ipxeTimer is iPXE's retransmission timer for one DHCP state (its
// net/retry.c with the limits of config/dhcp.h): the message goes out at
// once and again at each expiry; the timeout starts at min and doubles at
// each expiry, and the state fails at the expiry where the doubled
// timeout passes max.
type ipxeTimer struct{ min, max time.Duration }

var (
	// DISCOVER: DHCP_DISC_START_TIMEOUT_SEC 1, DHCP_DISC_END_TIMEOUT_SEC
	// 10: sent at 0, 1, 3 and 7 s, given up at 15 s. (The PXE spec's 4,
	// 8, 16, 32 s, 60 s in all, is a PXE ROM's own DHCP before it loads
	// iPXE: not simulated, the machines start at iPXE's.)
	discoverTimer = ipxeTimer{time.Second, 10 * time.Second}
	// REQUEST: DHCP_REQ_START_TIMEOUT_SEC 0, so the timer's own minimum
	// (DEFAULT_MIN_TIMEOUT, a quarter second), DHCP_REQ_END_TIMEOUT_SEC
	// 10: sent at 0, 0.25, 0.75, 1.75, 3.75 and 7.75 s, given up at
	// 15.75 s.
	requestTimer = ipxeTimer{time.Second / 4, 10 * time.Second}
)

// proxyWait is how long iPXE's discovery keeps waiting for a ProxyDHCP
// offer after an OFFER without option 60 "PXEClient"
// (DHCP_DISC_PROXY_TIMEOUT_SEC); herd-boots' offers to iPXE carry it.
const proxyWait = 2 * time.Second

// waits are the timeouts after each send, one per send.
func (t ipxeTimer) waits() []time.Duration {
	var ws []time.Duration
	for d := t.min; d <= t.max; d *= 2 {
		ws = append(ws, d)
	}
	return ws
}

func (t ipxeTimer) total() (d time.Duration) {
	for _, w := range t.waits() {
		d += w
	}
	return d
}

// exchange sends req on timer's schedule until take returns a reply or an
// error. take sees each reply to req's transaction (m) and each expiry
// (m nil), with the time since the first send; it returns nothing to go
// on waiting (ignoring m, or sending again after an expiry). retries is
// how many times req was sent again.
func (r *relay) exchange(ctx context.Context, req *dhcpv4.DHCPv4, timer ipxeTimer,
	take func(m *dhcpv4.DHCPv4, elapsed time.Duration) (*dhcpv4.DHCPv4, error)) (reply *dhcpv4.DHCPv4, retries int, err error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	r.mu.Lock()
	r.waiting[req.TransactionID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, req.TransactionID)
		r.mu.Unlock()
	}()
	start := time.Now()
	waits := timer.waits()
	for try, wait := range waits {
		if _, err := r.conn.WriteTo(req.ToBytes(), r.server); err != nil {
			return nil, try, fmt.Errorf("send %s: %w", req.MessageType(), err)
		}
		expiry := time.NewTimer(wait)
		for expired := false; !expired; {
			var m *dhcpv4.DHCPv4
			select {
			case m = <-ch:
			case <-ctx.Done():
				expiry.Stop()
				return nil, try, ctx.Err()
			case <-expiry.C:
				expired = true
			}
			reply, err := take(m, time.Since(start))
			if reply != nil || err != nil {
				expiry.Stop()
				return reply, try, err
			}
		}
	}
	return nil, len(waits) - 1, fmt.Errorf("no answer to the %s within iPXE's %d sends (%.2f s)", req.MessageType(), len(waits), timer.total().Seconds())
}

// takeOffer is iPXE's discovery: the first OFFER with an address, at once
// when it is also a PXE offer (option 60 "PXEClient"), else once
// proxyWait has passed; anything else is ignored.
func takeOffer() func(m *dhcpv4.DHCPv4, elapsed time.Duration) (*dhcpv4.DHCPv4, error) {
	var offer *dhcpv4.DHCPv4
	return func(m *dhcpv4.DHCPv4, elapsed time.Duration) (*dhcpv4.DHCPv4, error) {
		if m != nil && offer == nil && m.MessageType() == dhcpv4.MessageTypeOffer && !m.YourIPAddr.IsUnspecified() {
			offer = m
			if strings.HasPrefix(m.ClassIdentifier(), "PXEClient") {
				return offer, nil
			}
		}
		if offer != nil && elapsed > proxyWait {
			return offer, nil
		}
		return nil, nil
	}
}

// takeAck is iPXE's request state: the ACK from the offering server for
// the offered address; other replies (a second OFFER answering a resent
// DISCOVER) are ignored. A NAK fails at once: iPXE ignores it too and
// times out, the benchmark names it instead.
func takeAck(offer *dhcpv4.DHCPv4) func(m *dhcpv4.DHCPv4, elapsed time.Duration) (*dhcpv4.DHCPv4, error) {
	return func(m *dhcpv4.DHCPv4, _ time.Duration) (*dhcpv4.DHCPv4, error) {
		switch {
		case m == nil:
			return nil, nil
		case m.MessageType() == dhcpv4.MessageTypeNak:
			return nil, fmt.Errorf("REQUEST answered with NAK: %s", m.Message())
		case m.MessageType() != dhcpv4.MessageTypeAck, !m.ServerIdentifier().Equal(offer.ServerIdentifier()), !m.YourIPAddr.Equal(offer.YourIPAddr):
			return nil, nil
		}
		return m, nil
	}
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
	offer, n, err := r.exchange(ctx, disc, discoverTimer, takeOffer())
	retries += n
	if err != nil {
		return nil, retries, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, r.ipxeOptions()...)
	if err != nil {
		return nil, retries, err
	}
	ack, n, err = r.exchange(ctx, req, requestTimer, takeAck(offer))
	return ack, retries + n, err
}

// TestIPXETimers: the schedules are iPXE's (see discoverTimer, requestTimer).
func TestIPXETimers(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name  string
		timer ipxeTimer
		waits []time.Duration
		total time.Duration
	}{
		{"discover", discoverTimer, []time.Duration{s, 2 * s, 4 * s, 8 * s}, 15 * s},
		{"request", requestTimer, []time.Duration{s / 4, s / 2, s, 2 * s, 4 * s, 8 * s}, 15*s + 3*s/4},
	} {
		if got := tc.timer.waits(); !slices.Equal(got, tc.waits) || tc.timer.total() != tc.total {
			t.Errorf("%s: waits %v (total %v), want %v (%v)", tc.name, got, tc.timer.total(), tc.waits, tc.total)
		}
	}
}

// TestTakeReplies: which replies end discovery and the request state.
func TestTakeReplies(t *testing.T) {
	server, mine, other := net.IPv4(10, 30, 255, 254), net.IPv4(10, 30, 0, 1), net.IPv4(10, 30, 0, 2)
	msg := func(mt dhcpv4.MessageType, yi, sid net.IP, class string) *dhcpv4.DHCPv4 {
		mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(mt), dhcpv4.WithYourIP(yi), dhcpv4.WithServerIP(sid),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid))}
		if class != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)))
		}
		m, err := dhcpv4.New(mods...)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	pxeOffer, plainOffer := msg(dhcpv4.MessageTypeOffer, mine, server, "PXEClient"), msg(dhcpv4.MessageTypeOffer, mine, server, "")
	ack := msg(dhcpv4.MessageTypeAck, mine, server, "")
	type event struct {
		m       *dhcpv4.DHCPv4 // nil: the timer expired
		elapsed time.Duration
	}
	for _, tc := range []struct {
		name   string
		take   func(*dhcpv4.DHCPv4, time.Duration) (*dhcpv4.DHCPv4, error)
		events []event
		want   *dhcpv4.DHCPv4 // after the last event; nil: still waiting
		bad    bool
	}{
		{"PXE offer: at once", takeOffer(), []event{{pxeOffer, 0}}, pxeOffer, false},
		{"offer without PXEClient: waits for ProxyDHCP", takeOffer(), []event{{plainOffer, time.Second}}, nil, false},
		{"offer without PXEClient: taken at the expiry past 2 s", takeOffer(), []event{{plainOffer, time.Second}, {nil, 3 * time.Second}}, plainOffer, false},
		{"an ACK in discovery is ignored", takeOffer(), []event{{msg(dhcpv4.MessageTypeAck, mine, server, "PXEClient"), 0}}, nil, false},
		{"an offer without an address is ignored", takeOffer(), []event{{msg(dhcpv4.MessageTypeOffer, net.IPv4zero, server, "PXEClient"), 0}}, nil, false},
		{"expiry without an offer: send again", takeOffer(), []event{{nil, 7 * time.Second}}, nil, false},
		{"ACK", takeAck(pxeOffer), []event{{ack, 0}}, ack, false},
		{"a late second OFFER is ignored", takeAck(pxeOffer), []event{{pxeOffer, 0}}, nil, false},
		{"an ACK for another address is ignored", takeAck(pxeOffer), []event{{msg(dhcpv4.MessageTypeAck, other, server, ""), 0}}, nil, false},
		{"an ACK from another server is ignored", takeAck(pxeOffer), []event{{msg(dhcpv4.MessageTypeAck, mine, other, ""), 0}}, nil, false},
		{"NAK fails", takeAck(pxeOffer), []event{{msg(dhcpv4.MessageTypeNak, net.IPv4zero, server, ""), 0}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *dhcpv4.DHCPv4
			var err error
			for _, e := range tc.events {
				got, err = tc.take(e.m, e.elapsed)
			}
			if tc.bad != (err != nil) {
				t.Fatalf("error %v, want one: %t", err, tc.bad)
			}
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
