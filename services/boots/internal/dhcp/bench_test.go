package dhcp

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkHandle measures one request's whole way through boots' DHCP
// as Serve takes it: parse the bytes, decide, write the reply's bytes, for a relayed
// DISCOVER and REQUEST as perfdhcp sends them (make bench-dhcp) from one
// of 10,000 reserved MACs.
func BenchmarkHandle(b *testing.B) {
	h, reqs := handleFixture(b)
	for _, kind := range []string{"discover", "request"} {
		reqs := reqs[kind]
		peer := netip.MustParseAddrPort("10.0.255.253:67")
		buf := make([]byte, 0, 1500)
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			var req dhcpv4.DHCPv4
			for i := 0; b.Loop(); i++ {
				if err := parseInto(&req, reqs[i%len(reqs)]); err != nil {
					b.Fatal(err)
				}
				out, _ := h.AppendHandle(buf[:0], &req, peer, false)
				if out == nil {
					b.Fatal("no reply")
				}
			}
		})
	}
}

// handleFixture is a reservation-mode handler over 10,000 machines and,
// by kind ("discover", "request"), 256 relayed requests' bytes from their
// MACs, as perfdhcp sends them.
func handleFixture(tb testing.TB) (*Handler, map[string][][]byte) {
	tb.Helper()
	const n = 10000
	ms := fakeMachines{}
	macs := make([]net.HardwareAddr, n)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		m := machine(fmt.Sprintf("hw-%d", i), macs[i], fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), true)
		m.Derived = Prepare(m.Hardware()) // as herd-boots' inventory does
		ms[macs[i].String()] = m
	}
	h := NewHandler(Config{Mode: Reservation, ServerID: serverIP, Boot: bootCfg, UserClass: "herd", DefaultLease: time.Hour},
		ms, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil)
	relay := dhcpv4.WithRelay(net.IPv4(10, 0, 255, 253))
	prl := dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionBroadcastAddress, dhcpv4.OptionTimeOffset,
		dhcpv4.OptionRouter, dhcpv4.OptionDomainName, dhcpv4.OptionDomainNameServer, dhcpv4.OptionHostName)
	all := map[string][][]byte{}
	for _, kind := range []string{"discover", "request"} {
		reqs := make([][]byte, 256)
		for i := range reqs {
			mac := macs[(i*7919)%n]
			d, err := dhcpv4.NewDiscovery(mac, relay, prl)
			if err != nil {
				tb.Fatal(err)
			}
			if kind == "request" {
				l, _ := ms.ByMAC(mac)
				ip := net.ParseIP(l.Hardware().GetNetwork().GetInterfaces()[0].GetDhcp().GetIp().GetAddress())
				d.UpdateOption(dhcpv4.OptMessageType(dhcpv4.MessageTypeRequest))
				d.UpdateOption(dhcpv4.OptRequestedIPAddress(ip))
				d.UpdateOption(dhcpv4.OptServerIdentifier(serverIP))
			}
			reqs[i] = d.ToBytes()
		}
		all[kind] = reqs
	}
	return h, all
}
