package dhcp

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/proto/hardware"
)

var (
	macBIOS  = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	macNoPXE = net.HardwareAddr{0x52, 0x54, 0x00, 0x00, 0x00, 0x02}
	macOther = net.HardwareAddr{0x52, 0x54, 0x00, 0x99, 0x99, 0x99}
	serverIP = net.IPv4(10, 0, 5, 1).To4()
	bootCfg  = BootConfig{NextServer: serverIP, HTTPBase: "http://10.0.5.1:8080"}
)

// goldenPXEDiscover is a BIOS PXE ROM's DHCPDISCOVER written out byte by
// byte from RFC 2131 (header), RFC 2132 (options 53, 57, 55, 60) and RFC
// 4578 (93, 94, 97), in the shape Intel's PXE 2.1 ROMs send.
func goldenPXEDiscover(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	w := func(h string) {
		p, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(p)
	}
	w("01 01 06 00")                                  // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
	w("12 34 56 78")                                  // xid
	w("00 04 80 00")                                  // secs 4, flags: broadcast
	w("00000000 00000000 00000000 00000000")          // ciaddr yiaddr siaddr giaddr
	w("52 54 00 12 34 56" + strings.Repeat("00", 10)) // chaddr
	w(strings.Repeat("00", 64+128))                   // sname, file
	w("63 82 53 63")                                  // magic cookie
	w("35 01 01")                                     // 53 DHCPDISCOVER
	w("39 02 05 c0")                                  // 57 max message size 1472
	w("5d 02 00 00")                                  // 93 arch: x86 BIOS
	w("5e 03 01 02 01")                               // 94 UNDI 2.1
	w("61 11 00 00112233445566778899aabbccddeeff")    // 97 type 0 + GUID
	w("3c 20")                                        // 60, 32 bytes:
	b.WriteString("PXEClient:Arch:00000:UNDI:002001")
	w("37 09 01 02 03 05 06 0b 0c 0d 0f") // 55 parameter request list (no 67)
	w("ff")
	return b.Bytes()
}

func mustParse(t testing.TB, b []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// packet builds a request with modifiers, serializes and parses it back,
// so every test sees what a socket would deliver.
func packet(t testing.TB, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, m.ToBytes())
}

func vendor(s string) dhcpv4.Modifier  { return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(s)) }
func arch(a iana.Arch) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) }
func rawUserClass(s string) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte(s))
}

func TestGoldenDiscoverParses(t *testing.T) {
	m := mustParse(t, goldenPXEDiscover(t))
	if m.MessageType() != dhcpv4.MessageTypeDiscover || m.ClientHWAddr.String() != macBIOS.String() || !m.IsBroadcast() {
		t.Fatalf("parsed %s", m.Summary())
	}
	// And our serializer gives back the same bytes (option order aside,
	// which insomniacslk sorts): length and header must match.
	if got := m.ToBytes(); !bytes.Equal(got[:240], goldenPXEDiscover(t)[:240]) {
		t.Fatalf("header round trip differs")
	}
}

func TestClassifyAndDecide(t *testing.T) {
	tests := []struct {
		name     string
		req      *dhcpv4.DHCPv4
		allow    bool
		want     Client
		wantFile string
		wantVC   string
	}{
		{name: "golden BIOS PXE ROM", req: mustParse(t, goldenPXEDiscover(t)), allow: true,
			want: Client{PXE: true, Arch: iana.INTEL_X86PC, HasArch: true}, wantFile: "undionly.kpxe", wantVC: "PXEClient"},
		{name: "UEFI x86-64", req: packet(t, macBIOS, vendor("PXEClient:Arch:00007:UNDI:003016"), arch(iana.EFI_X86_64)), allow: true,
			want: Client{PXE: true, Arch: iana.EFI_X86_64, HasArch: true}, wantFile: "ipxe.efi", wantVC: "PXEClient"},
		{name: "UEFI type 9 is x86-64 in practice", req: packet(t, macBIOS, arch(iana.EFI_BC)), allow: true,
			want: Client{PXE: true, Arch: iana.EFI_BC, HasArch: true}, wantFile: "ipxe.efi", wantVC: "PXEClient"},
		{name: "arm64 UEFI", req: packet(t, macBIOS, vendor("PXEClient:Arch:00011:UNDI:003000"), arch(iana.EFI_ARM64)), allow: true,
			want: Client{PXE: true, Arch: iana.EFI_ARM64, HasArch: true}, wantFile: "snp.efi", wantVC: "PXEClient"},
		{name: "arch only in option 60", req: packet(t, macBIOS, vendor("PXEClient:Arch:00007:UNDI:003016")), allow: true,
			want: Client{PXE: true, Arch: iana.EFI_X86_64, HasArch: true}, wantFile: "ipxe.efi", wantVC: "PXEClient"},
		{name: "only option 94 says PXE: old BIOS ROM", req: packet(t, macBIOS, dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1})), allow: true,
			want: Client{PXE: true}, wantFile: "undionly.kpxe", wantVC: "PXEClient"},
		{name: "HTTP boot x86-64 (arch 16)", req: packet(t, macBIOS, vendor("HTTPClient:Arch:00016:UNDI:003016"), arch(iana.EFI_X86_64_HTTP)), allow: true,
			want: Client{HTTP: true, Arch: iana.EFI_X86_64_HTTP, HasArch: true}, wantFile: "http://10.0.5.1:8080/ipxe/ipxe.efi", wantVC: "HTTPClient"},
		{name: "HTTP boot arm64 (arch 19)", req: packet(t, macBIOS, arch(iana.EFI_ARM64_HTTP)), allow: true,
			want: Client{HTTP: true, Arch: iana.EFI_ARM64_HTTP, HasArch: true}, wantFile: "http://10.0.5.1:8080/ipxe/snp.efi", wantVC: "HTTPClient"},
		{name: "iPXE user class breaks the loop", req: packet(t, macBIOS, vendor("PXEClient:Arch:00000:UNDI:002001"), arch(iana.INTEL_X86PC), rawUserClass("iPXE")), allow: true,
			want: Client{PXE: true, IPXE: true, Arch: iana.INTEL_X86PC, HasArch: true}, wantFile: "http://10.0.5.1:8080/auto.ipxe", wantVC: "PXEClient"},
		{name: "our own user class (RFC 3004 form)", req: packet(t, macBIOS, dhcpv4.WithUserClass("herd", true)), allow: true,
			want: Client{IPXE: true}, wantFile: "http://10.0.5.1:8080/auto.ipxe"},
		{name: "iPXE option 175", req: packet(t, macBIOS, dhcpv4.WithGeneric(dhcpv4.OptionEtherboot, []byte{0xb1, 1, 1})), allow: true,
			want: Client{IPXE: true}, wantFile: "http://10.0.5.1:8080/auto.ipxe"},
		{name: "allow_pxe false: no boot file", req: mustParse(t, goldenPXEDiscover(t)), allow: false,
			want: Client{PXE: true, Arch: iana.INTEL_X86PC, HasArch: true}},
		{name: "plain DHCP client", req: packet(t, macBIOS, vendor("udhcp 1.36.1")), allow: true, want: Client{}},
		{name: "unsupported arch (arm32)", req: packet(t, macBIOS, arch(iana.EFI_ARM32)), allow: true,
			want: Client{PXE: true, Arch: iana.EFI_ARM32, HasArch: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Classify(tt.req, "herd")
			got := c
			got.VendorClass, got.UUID = "", nil
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Fatalf("Classify = %+v, want %+v", got, tt.want)
			}
			b := Decide(c, tt.allow, bootCfg)
			if b.File != tt.wantFile || b.VendorClass != tt.wantVC {
				t.Fatalf("Decide = %+v, want file %q vc %q", b, tt.wantFile, tt.wantVC)
			}
			if b.Reason == "" {
				t.Fatal("no reason given")
			}
		})
	}
}

// fakeMachines is a fixed inventory.
type fakeMachines map[string]inventory.Machine

func (f fakeMachines) ByMAC(mac net.HardwareAddr) (inventory.Machine, bool) {
	m, ok := f[mac.String()]
	return m, ok
}

func machine(id string, mac net.HardwareAddr, ip string, allow bool) inventory.Machine {
	return inventory.NewMachine(&hardware.Hardware{Id: id, Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
		Dhcp: &hardware.Hardware_DHCP{Mac: mac.String(), Hostname: "node1.lab.example", LeaseTime: 3600,
			NameServers: []string{"10.0.5.53"}, TimeServers: []string{"10.0.5.123"},
			Ip: &hardware.Hardware_DHCP_IP{Address: ip, Netmask: "255.255.255.0", Gateway: "10.0.5.254"}},
		Netboot: &hardware.Hardware_Netboot{AllowPxe: allow},
	}}}}, "", nil)
}

func testHandler(mode Mode) *Handler {
	ms := fakeMachines{
		macBIOS.String():  machine("hw-1", macBIOS, "10.0.5.10", true),
		macNoPXE.String(): machine("hw-2", macNoPXE, "10.0.5.11", false),
	}
	return NewHandler(Config{Mode: mode, ServerID: serverIP, Boot: bootCfg, UserClass: "herd", DefaultLease: time.Hour},
		ms, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
}

// roundTrip runs req's bytes through the handler and parses the reply's
// bytes back. req comes from where such a packet would: a relay (giaddr)
// from its port 67, a client with an address (ciaddr) from it, else from
// 0.0.0.0:68.
func roundTrip(t *testing.T, h *Handler, req *dhcpv4.DHCPv4, onPXEPort bool) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	reply, dst := h.Handle(mustParse(t, req.ToBytes()), senderOf(req), onPXEPort)
	if reply == nil {
		return nil, nil
	}
	return mustParse(t, reply.ToBytes()), dst
}

func senderOf(req *dhcpv4.DHCPv4) *net.UDPAddr {
	switch {
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: ServerPort}
	case req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4zero, Port: ClientPort}
}

func TestReservationReply(t *testing.T) {
	h := testHandler(Reservation)
	offer, dst := roundTrip(t, h, mustParse(t, goldenPXEDiscover(t)), false)
	if offer == nil {
		t.Fatal("no offer")
	}
	checks := map[string]bool{
		"type offer":       offer.MessageType() == dhcpv4.MessageTypeOffer,
		"xid":              offer.TransactionID == dhcpv4.TransactionID{0x12, 0x34, 0x56, 0x78},
		"yiaddr":           offer.YourIPAddr.Equal(net.IPv4(10, 0, 5, 10)),
		"netmask":          net.IP(offer.SubnetMask()).Equal(net.IPv4(255, 255, 255, 0)),
		"router":           len(offer.Router()) == 1 && offer.Router()[0].Equal(net.IPv4(10, 0, 5, 254)),
		"dns":              len(offer.DNS()) == 1 && offer.DNS()[0].Equal(net.IPv4(10, 0, 5, 53)),
		"ntp":              len(offer.NTPServers()) == 1 && offer.NTPServers()[0].Equal(net.IPv4(10, 0, 5, 123)),
		"hostname":         offer.HostName() == "node1",
		"domain":           offer.DomainName() == "lab.example",
		"lease":            offer.IPAddressLeaseTime(0) == time.Hour,
		"server id":        offer.ServerIdentifier().Equal(serverIP),
		"broadcast":        offer.BroadcastAddress().Equal(net.IPv4(10, 0, 5, 255)),
		"siaddr":           offer.ServerIPAddr.Equal(serverIP),
		"file":             offer.BootFileName == "undionly.kpxe",
		"vendor class":     offer.ClassIdentifier() == "PXEClient",
		"option 43":        bytes.Equal(offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation), pxeVendorOptions),
		"option 97 echoed": len(offer.GetOneOption(dhcpv4.OptionClientMachineIdentifier)) == 17,
		"broadcast to :68": dst.String() == "255.255.255.255:68",
	}
	for name, ok := range checks {
		if !ok {
			t.Errorf("%s: wrong in %s", name, offer.Summary())
		}
	}

	// REQUEST for the offered address: ACK; for another: NAK.
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack, _ := roundTrip(t, h, req, false)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4(10, 0, 5, 10)) {
		t.Fatalf("ack: %v", ack)
	}
	req.UpdateOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 5, 99)))
	if nak, _ := roundTrip(t, h, req, false); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak || nak.BootFileName != "" {
		t.Fatalf("want NAK, got %v", nak)
	}
	req.UpdateOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 5, 2)))
	if r, _ := roundTrip(t, h, req, false); r != nil {
		t.Fatalf("request for another server answered: %v", r.Summary())
	}
}

func TestNoAnswerAndNoBoot(t *testing.T) {
	h := testHandler(Reservation)
	if r, _ := roundTrip(t, h, packet(t, macOther, arch(iana.INTEL_X86PC)), false); r != nil {
		t.Fatalf("unknown MAC answered: %s", r.Summary())
	}
	r, _ := roundTrip(t, h, packet(t, macNoPXE, arch(iana.INTEL_X86PC)), false)
	if r == nil || !r.YourIPAddr.Equal(net.IPv4(10, 0, 5, 11)) || r.BootFileName != "" || r.Options.Has(dhcpv4.OptionBootfileName) {
		t.Fatalf("allow_pxe=false: want a lease without boot file, got %v", r)
	}
	// RELEASE gets nothing.
	rel := packet(t, macBIOS, dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease))
	if r, _ := roundTrip(t, h, rel, false); r != nil {
		t.Fatal("release answered")
	}
}

func TestProxyMode(t *testing.T) {
	h := testHandler(Proxy)
	offer, _ := roundTrip(t, h, packet(t, macBIOS, vendor("PXEClient:Arch:00007:UNDI:003016"), arch(iana.EFI_X86_64)), false)
	if offer == nil {
		t.Fatal("proxy: no offer")
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.Options.Has(dhcpv4.OptionSubnetMask) || offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) ||
		offer.Options.Has(dhcpv4.OptionRouter) {
		t.Fatalf("proxy offer carries address options: %s", offer.Summary())
	}
	if offer.BootFileName != "ipxe.efi" || offer.ClassIdentifier() != "PXEClient" || !offer.ServerIdentifier().Equal(serverIP) {
		t.Fatalf("proxy offer boot options: %s", offer.Summary())
	}
	// A plain client, a REQUEST on port 67, a MAC without netboot: silence.
	if r, _ := roundTrip(t, h, packet(t, macBIOS), false); r != nil {
		t.Fatal("proxy answered a non-PXE client")
	}
	req := packet(t, macBIOS, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), arch(iana.EFI_X86_64))
	if r, _ := roundTrip(t, h, req, false); r != nil {
		t.Fatal("proxy answered a REQUEST on port 67")
	}
	if r, _ := roundTrip(t, h, packet(t, macNoPXE, arch(iana.EFI_X86_64)), false); r != nil {
		t.Fatal("proxy answered a machine with allow_pxe=false")
	}
	// A REQUEST on 4011 from a configured client: ACK back to it.
	req.ClientIPAddr = net.IPv4(10, 0, 5, 77).To4()
	reply, dst := h.Handle(mustParse(t, req.ToBytes()), &net.UDPAddr{IP: net.IPv4(10, 0, 5, 77), Port: 68}, true)
	if reply == nil || reply.MessageType() != dhcpv4.MessageTypeAck || dst.String() != "10.0.5.77:68" {
		t.Fatalf("4011: %v %v", reply, dst)
	}
}

func TestRelay(t *testing.T) {
	h := testHandler(Reservation)
	rai := dhcpv4.OptRelayAgentInfo(
		dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("eth0/1/7")), // circuit id
		dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(2), []byte{0xde, 0xad}), // remote id
	)
	req := packet(t, macBIOS, arch(iana.INTEL_X86PC), dhcpv4.WithRelay(net.IPv4(10, 9, 0, 1)), dhcpv4.WithOption(rai))
	sent := req.GetOneOption(dhcpv4.OptionRelayAgentInformation)
	reply, dst := roundTrip(t, h, req, false)
	if reply == nil {
		t.Fatal("relayed request unanswered")
	}
	if dst.String() != "10.9.0.1:67" {
		t.Fatalf("relayed reply goes to %s, want the relay on port 67", dst)
	}
	if !reply.GatewayIPAddr.Equal(net.IPv4(10, 9, 0, 1)) {
		t.Fatalf("giaddr not kept: %s", reply.GatewayIPAddr)
	}
	if got := reply.GetOneOption(dhcpv4.OptionRelayAgentInformation); !bytes.Equal(got, sent) {
		t.Fatalf("option 82: got %x, want %x unchanged", got, sent)
	}
	// RFC 3046 2.1: option 82 is the last option before End.
	b := reply.ToBytes()
	opts := b[240:]
	last := -1
	for i := 0; i < len(opts) && opts[i] != 255; {
		if opts[i] == 0 {
			i++
			continue
		}
		last = int(opts[i])
		i += 2 + int(opts[i+1])
	}
	if last != 82 {
		t.Fatalf("last option is %d, want 82", last)
	}
}

// forged is the golden PXE DISCOVER's bytes with its message type,
// ciaddr and giaddr set as a forger would: real packet bytes, parsed as
// Serve parses them.
func forged(t testing.TB, mt dhcpv4.MessageType, ciaddr, giaddr string) *dhcpv4.DHCPv4 {
	t.Helper()
	b := goldenPXEDiscover(t)
	copy(b[12:16], net.ParseIP(ciaddr).To4())
	copy(b[24:28], net.ParseIP(giaddr).To4())
	b[240+2] = byte(mt) // option 53 is the first option
	var m dhcpv4.DHCPv4
	if err := parseInto(&m, b); err != nil {
		t.Fatal(err)
	}
	return &m
}

var testLink = Link{Self: netip.MustParseAddr("10.0.5.1"), Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.5.0/24")}}

// TestRoute: where each reply goes (RFC 2131 4.1), and that a forged
// giaddr or ciaddr never aims one at a broadcast, multicast, loopback or
// other special address (issue 14, finding 5): those requests get no reply.
func TestRoute(t *testing.T) {
	const (
		discover = dhcpv4.MessageTypeDiscover
		request  = dhcpv4.MessageTypeRequest
		inform   = dhcpv4.MessageTypeInform
	)
	tests := []struct {
		name           string
		mt             dhcpv4.MessageType
		ciaddr, giaddr string
		from           string
		pxePort, nak   bool
		want           string // destination, or "refused FIELD"
	}{
		{"no address: broadcast", discover, "0.0.0.0", "0.0.0.0", "0.0.0.0:68", false, false, "255.255.255.255:68"},
		{"relayed, from giaddr", discover, "0.0.0.0", "10.9.0.1", "10.9.0.1:67", false, false, "10.9.0.1:67"},
		{"relayed from another of the relay's addresses", discover, "0.0.0.0", "10.9.0.1", "10.0.5.250:67", false, false, "10.9.0.1:67"},
		{"relayed NAK still via relay", request, "0.0.0.0", "10.9.0.1", "10.9.0.1:67", false, true, "10.9.0.1:67"},
		{"relayed renewal keeps its ciaddr off-link", request, "10.9.0.20", "10.9.0.1", "10.9.0.1:67", false, false, "10.9.0.1:67"},
		{"renewing client", request, "10.0.5.10", "0.0.0.0", "10.0.5.10:68", false, false, "10.0.5.10:68"},
		{"renewing client routed from another subnet", request, "10.9.0.20", "0.0.0.0", "10.9.0.20:68", false, false, "10.9.0.20:68"},
		{"NAK to a renewing client: broadcast", request, "10.0.5.10", "0.0.0.0", "10.0.5.10:68", false, true, "255.255.255.255:68"},
		{"PXE port: back to sender", request, "0.0.0.0", "0.0.0.0", "10.0.5.77:68", true, false, "10.0.5.77:68"},
		{"PXE port with the relayed exchange's giaddr: back to sender", request, "10.9.0.77", "10.9.0.1", "10.9.0.77:4011", true, false, "10.9.0.77:4011"},
		{"INFORM: to ciaddr", inform, "10.0.5.10", "0.0.0.0", "10.0.5.10:68", false, false, "10.0.5.10:68"},
		{"INFORM without ciaddr: to its sender, not broadcast", inform, "0.0.0.0", "0.0.0.0", "10.0.5.66:68", false, false, "10.0.5.66:68"},

		{"giaddr broadcast", discover, "0.0.0.0", "255.255.255.255", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr multicast", discover, "0.0.0.0", "224.0.0.1", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr loopback", discover, "0.0.0.0", "127.0.0.1", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr the subnet's broadcast", discover, "0.0.0.0", "10.0.5.255", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr the subnet's network address", discover, "0.0.0.0", "10.0.5.0", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr boots itself", discover, "0.0.0.0", "10.0.5.1", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr in 0/8", discover, "0.0.0.0", "0.1.2.3", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr link-local", discover, "0.0.0.0", "169.254.1.1", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr reserved", discover, "0.0.0.0", "240.0.0.1", "10.0.5.66:67", false, false, "refused giaddr"},
		{"giaddr broadcast, NAK", request, "0.0.0.0", "255.255.255.255", "10.0.5.66:67", false, true, "refused giaddr"},
		{"giaddr broadcast on the PXE port", request, "0.0.0.0", "255.255.255.255", "10.0.5.66:4011", true, false, "refused giaddr"},
		{"giaddr from a client's port: no relay", discover, "0.0.0.0", "10.9.0.1", "10.0.5.66:68", false, false, "refused giaddr"},
		{"INFORM ciaddr broadcast", inform, "255.255.255.255", "0.0.0.0", "10.0.5.66:68", false, false, "refused ciaddr"},
		{"INFORM ciaddr the subnet's broadcast", inform, "10.0.5.255", "0.0.0.0", "10.0.5.255:68", false, false, "refused ciaddr"},
		{"INFORM ciaddr loopback", inform, "127.0.0.1", "0.0.0.0", "10.0.5.66:68", false, false, "refused ciaddr"},
		{"INFORM ciaddr multicast", inform, "224.0.0.1", "0.0.0.0", "10.0.5.66:68", false, false, "refused ciaddr"},
		{"INFORM ciaddr another host's", inform, "10.0.5.10", "0.0.0.0", "10.0.5.66:68", false, false, "refused ciaddr"},
		{"INFORM from no address, no ciaddr", inform, "0.0.0.0", "0.0.0.0", "0.0.0.0:68", false, false, "refused ciaddr"},
		{"DISCOVER ciaddr multicast", discover, "239.1.2.3", "0.0.0.0", "0.0.0.0:68", false, false, "refused ciaddr"},
		{"REQUEST ciaddr broadcast, NAK", request, "255.255.255.255", "0.0.0.0", "0.0.0.0:68", false, true, "refused ciaddr"},
		{"relayed, ciaddr loopback", request, "127.0.0.1", "10.9.0.1", "10.9.0.1:67", false, false, "refused ciaddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := forged(t, tt.mt, tt.ciaddr, tt.giaddr)
			to, bad := Route(req, netip.MustParseAddrPort(tt.from), tt.pxePort, tt.nak, testLink)
			got := to.String()
			if bad.Why != "" {
				got = "refused " + bad.Field
				if to.IsValid() {
					t.Errorf("refused, yet a destination %s", to)
				}
			}
			if got != tt.want {
				t.Fatalf("%s (%v), want %s", got, bad, tt.want)
			}
		})
	}
}

func TestLastOf(t *testing.T) {
	for p, want := range map[string]string{"10.0.5.0/24": "10.0.5.255", "10.0.0.0/20": "10.0.15.255", "10.0.0.0/8": "10.255.255.255",
		"10.1.2.3/30": "10.1.2.3", "0.0.0.0/0": "255.255.255.255", "10.0.5.9/23": "10.0.5.255"} {
		if got := lastOf(netip.MustParsePrefix(p)).String(); got != want {
			t.Errorf("lastOf(%s) = %s, want %s", p, got, want)
		}
	}
	// /31 and /32 have no broadcast address (RFC 3021): both are hosts.
	l := Link{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.7.0/31")}}
	if why := unusable(netip.MustParseAddr("10.0.7.1"), l); why != "" {
		t.Errorf("10.0.7.1 on a /31: %s", why)
	}
}

// TestHandleRefusesForgedAddresses: through the handler, forged requests
// get no reply and are counted as bad_address.
func TestHandleRefusesForgedAddresses(t *testing.T) {
	for _, mode := range []Mode{Reservation, Proxy} {
		h := testHandler(mode)
		h.cfg.Link = testLink
		for _, tt := range []struct {
			mt             dhcpv4.MessageType
			ciaddr, giaddr string
			from           string
		}{
			{dhcpv4.MessageTypeDiscover, "0.0.0.0", "255.255.255.255", "10.0.5.66:67"},
			{dhcpv4.MessageTypeDiscover, "0.0.0.0", "224.0.0.1", "10.0.5.66:67"},
			{dhcpv4.MessageTypeDiscover, "0.0.0.0", "10.0.5.255", "10.0.5.66:67"},
			{dhcpv4.MessageTypeDiscover, "0.0.0.0", "127.0.0.1", "10.0.5.66:67"},
			{dhcpv4.MessageTypeInform, "255.255.255.255", "0.0.0.0", "10.0.5.66:68"},
		} {
			req := forged(t, tt.mt, tt.ciaddr, tt.giaddr)
			if out, to := h.AppendHandle(nil, req, netip.MustParseAddrPort(tt.from), false); out != nil {
				t.Errorf("%s: %s ciaddr %s giaddr %s answered to %s", mode, tt.mt, tt.ciaddr, tt.giaddr, to)
			}
		}
		if got := testutil.ToFloat64(h.packets.WithLabelValues("DISCOVER", OutcomeBadAddress)); got != 4 {
			t.Errorf("%s: bad_address DISCOVERs counted %v, want 4", mode, got)
		}
		// The same DISCOVER, relayed properly, is answered through the relay.
		if out, to := h.AppendHandle(nil, forged(t, dhcpv4.MessageTypeDiscover, "0.0.0.0", "10.9.0.1"), netip.MustParseAddrPort("10.9.0.1:67"), false); out == nil || to.String() != "10.9.0.1:67" {
			t.Errorf("%s: relayed DISCOVER: reply %v to %s", mode, out != nil, to)
		}
	}
}

func TestLongBootURLGoesToOption67(t *testing.T) {
	long := "http://10.0.5.1:8080/" + strings.Repeat("x", 140)
	req := packet(t, macBIOS, rawUserClass("iPXE"))
	r, err := Reply(req, dhcpv4.MessageTypeOffer, serverIP, nil, Boot{File: long}, Client{IPXE: true})
	if err != nil {
		t.Fatal(err)
	}
	r = mustParse(t, r.ToBytes())
	if r.BootFileName != "" || r.BootFileNameOption() != long {
		t.Fatalf("file %q opt67 %q", r.BootFileName, r.BootFileNameOption())
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(goldenPXEDiscover(f))
	for _, m := range []*dhcpv4.DHCPv4{
		packet(f, macBIOS, rawUserClass("iPXE"), arch(iana.EFI_X86_64)),
		packet(f, macBIOS, dhcpv4.WithRelay(net.IPv4(10, 9, 0, 1)), dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("x"))))),
		packet(f, macBIOS, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 5, 10)))),
	} {
		f.Add(m.ToBytes())
	}
	f.Add(forged(f, dhcpv4.MessageTypeInform, "255.255.255.255", "0.0.0.0").ToBytes())
	f.Add(forged(f, dhcpv4.MessageTypeDiscover, "0.0.0.0", "10.0.5.255").ToBytes())
	hr, hp := testHandler(Reservation), testHandler(Proxy)
	hr.cfg.Link, hp.cfg.Link = testLink, testLink
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		peers := []*net.UDPAddr{senderOf(req), {IP: net.IPv4zero, Port: 68}, {IP: net.IPv4(10, 0, 5, 66), Port: 67}, {IP: net.IPv4(10, 0, 5, 66), Port: 68}}
		for _, h := range []*Handler{hr, hp} {
			for _, port := range []bool{false, true} {
				for _, peer := range peers {
					if reply, dst := h.Handle(req, peer, port); reply != nil {
						if dst == nil {
							t.Fatal("reply without destination")
						}
						// Never where a forged packet could aim it: only
						// the link's broadcast to clients' port, or a
						// usable unicast address.
						to := dst.AddrPort()
						if to != netip.AddrPortFrom(bcast4, ClientPort) && unusable(to.Addr(), testLink) != "" {
							t.Fatalf("reply to %s: %s", to, unusable(to.Addr(), testLink))
						}
						if _, err := dhcpv4.FromBytes(reply.ToBytes()); err != nil {
							t.Fatalf("reply does not parse: %v", err)
						}
					}
				}
			}
		}
	})
}

type learned map[string]netip.Addr

func (l learned) Learn(mac net.HardwareAddr, ip netip.Addr) { l[mac.String()] = ip }

// TestProxyLearnsLeases: in proxy mode, the address a known MAC requests
// from the other server is learned (the HTTP and syslog sides' "own
// address"); unknown MACs and unusable addresses are not.
func TestProxyLearnsLeases(t *testing.T) {
	h := testHandler(Proxy)
	book := learned{}
	h.cfg.Link, h.cfg.Leases = testLink, book
	req := func(mac net.HardwareAddr, want string) *dhcpv4.DHCPv4 {
		return packet(t, mac, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), arch(iana.EFI_X86_64),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(want))), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 5, 2))))
	}
	roundTrip(t, h, req(macBIOS, "10.0.5.150"), false)
	roundTrip(t, h, req(macOther, "10.0.5.151"), false)
	roundTrip(t, h, req(macNoPXE, "10.0.5.255"), false)
	if len(book) != 1 || book[macBIOS.String()] != netip.MustParseAddr("10.0.5.150") {
		t.Fatalf("learned %v, want only %s at 10.0.5.150", book, macBIOS)
	}
	hr := testHandler(Reservation)
	hr.cfg.Leases = book
	roundTrip(t, hr, req(macNoPXE, "10.0.5.11"), false)
	if len(book) != 1 {
		t.Fatalf("reservation mode learned: %v", book)
	}
}

type takenNotes []string

func (n *takenNotes) Record(hwID, message string) { *n = append(*n, hwID+": "+message) }

// TestOfferNotes: an offer with a boot file is noted once for the
// machine's timeline (not its ACK); lease-only offers, unknown MACs and
// proxy silence are not.
func TestOfferNotes(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode Mode
		send func(h *Handler)
		want []string
	}{
		{"reservation DORA", Reservation, func(h *Handler) {
			offer, _ := roundTrip(t, h, mustParse(t, goldenPXEDiscover(t)), false)
			req, err := dhcpv4.NewRequestFromOffer(offer)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, h, req, false)
		}, []string{"hw-1: dhcp offer 10.0.5.10: tftp undionly.kpxe"}},
		{"iPXE asks for its script", Reservation, func(h *Handler) {
			roundTrip(t, h, packet(t, macBIOS, arch(iana.INTEL_X86PC), rawUserClass("iPXE")), false)
		}, []string{"hw-1: dhcp offer 10.0.5.10: ipxe script"}},
		{"netboot not allowed", Reservation, func(h *Handler) {
			roundTrip(t, h, packet(t, macNoPXE, arch(iana.INTEL_X86PC)), false)
		}, nil},
		{"not a netboot client", Reservation, func(h *Handler) { roundTrip(t, h, packet(t, macBIOS), false) }, nil},
		{"unknown MAC", Reservation, func(h *Handler) { roundTrip(t, h, packet(t, macOther, arch(iana.INTEL_X86PC)), false) }, nil},
		{"proxy offer", Proxy, func(h *Handler) {
			roundTrip(t, h, packet(t, macBIOS, vendor("PXEClient:Arch:00007:UNDI:003016"), arch(iana.EFI_X86_64)), false)
		}, []string{"hw-1: dhcp offer (proxy): tftp ipxe.efi"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHandler(tc.mode)
			var got takenNotes
			h.cfg.Notes = &got
			tc.send(h)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("notes %q, want %q", got, tc.want)
			}
		})
	}
}
