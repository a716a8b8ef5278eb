package dhcp

import (
	"bytes"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// sameAsFromBytes fails t when parseInto and dhcpv4.FromBytes disagree on b.
func sameAsFromBytes(t *testing.T, m *dhcpv4.DHCPv4, b []byte) {
	t.Helper()
	want, werr := dhcpv4.FromBytes(b)
	gerr := parseInto(m, b)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("parseInto error %v, FromBytes error %v", gerr, werr)
	}
	if werr != nil {
		return
	}
	norm := func(d *dhcpv4.DHCPv4) string {
		c := *d
		c.Options = dhcpv4.Options{}
		for k, v := range d.Options {
			c.Options[k] = v
		}
		return fmt.Sprintf("%#v", c)
	}
	if g, w := norm(m), norm(want); g != w {
		t.Fatalf("parseInto:\n%s\nFromBytes:\n%s", g, w)
	}
	if !reflect.DeepEqual(map[uint8][]byte(m.Options), map[uint8][]byte(want.Options)) {
		t.Fatalf("options: parseInto %v, FromBytes %v", m.Options, want.Options)
	}
}

func parseSamples(t testing.TB) [][]byte {
	rai := dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("eth0/1/7")))
	s := [][]byte{
		goldenPXEDiscover(t),
		packet(t, macBIOS, rawUserClass("iPXE"), arch(iana.EFI_X86_64)).ToBytes(),
		packet(t, macBIOS, dhcpv4.WithRelay(net.IPv4(10, 9, 0, 1)), dhcpv4.WithOption(rai)).ToBytes(),
		packet(t, macBIOS, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 5, 10)))).ToBytes(),
	}
	g := goldenPXEDiscover(t)
	// Split option 60 in two instances (RFC 3396), an empty option,
	// no End, a short header, a wrong cookie.
	split := append(append([]byte{}, g[:240]...), 3, 4, 60, 3, 'P', 'X', 'E', 60, 6, 'C', 'l', 'i', 'e', 'n', 't', 77, 0, 77, 2, 'a', 'b', 255)
	s = append(s, split, g[:len(g)-1], g[:200], append([]byte{}, g[:240]...))
	bad := append([]byte{}, g...)
	bad[237] = 0
	return append(s, bad)
}

func TestParseIntoMatchesFromBytes(t *testing.T) {
	var m dhcpv4.DHCPv4 // reused, as Serve's readers do
	for i, b := range parseSamples(t) {
		t.Run(fmt.Sprint(i), func(t *testing.T) { sameAsFromBytes(t, &m, b) })
	}
}

func FuzzParseInto(f *testing.F) {
	for _, b := range parseSamples(f) {
		f.Add(b)
	}
	var m dhcpv4.DHCPv4
	f.Fuzz(func(t *testing.T, b []byte) { sameAsFromBytes(t, &m, b) })
}

// referenceReply builds the reply with insomniacslk's modifiers, as boots
// did before AppendReply: AppendReply must give the same bytes.
func referenceReply(t *testing.T, req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, serverID net.IP, lease *Lease, boot Boot, c Client) []byte {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(mt), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID))}
	if lease != nil && mt != dhcpv4.MessageTypeNak {
		if mt != dhcpv4.MessageTypeAck || req.MessageType() != dhcpv4.MessageTypeInform {
			mods = append(mods, dhcpv4.WithYourIP(lease.IP))
		}
		mods = append(mods, dhcpv4.WithNetmask(lease.Mask),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(lease.Broadcast())),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lease.Duration)),
			dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lease.Duration/2)),
			dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lease.Duration*7/8)))
		if lease.Gateway != nil {
			mods = append(mods, dhcpv4.WithRouter(lease.Gateway))
		}
		if len(lease.DNS) > 0 {
			mods = append(mods, dhcpv4.WithDNS(lease.DNS...))
		}
		if len(lease.NTP) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptNTPServers(lease.NTP...)))
		}
		if lease.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(lease.Hostname)))
		}
		if lease.Domain != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(lease.Domain)))
		}
	}
	if boot.File != "" && mt != dhcpv4.MessageTypeNak {
		mods = append(mods, func(d *dhcpv4.DHCPv4) {
			if len(boot.File) < 128 {
				d.BootFileName = boot.File
			}
			if boot.NextServer != nil {
				d.ServerIPAddr = boot.NextServer
			}
		})
		if len(boot.File) >= 128 || req.IsOptionRequested(dhcpv4.OptionBootfileName) {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptBootFileName(boot.File)))
		}
		if boot.VendorClass != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(boot.VendorClass)))
		}
		if c.PXE && !c.IPXE {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions))
		}
		if c.UUID != nil {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, c.UUID))
		}
	}
	r, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return r.ToBytes()
}

func TestAppendReplyMatchesInsomniacslk(t *testing.T) {
	l, err := LeaseFrom(machine("hw-1", macBIOS, "10.0.5.10", true).Hardware().GetNetwork().GetInterfaces()[0], time.Hour, "lab")
	if err != nil {
		t.Fatal(err)
	}
	bare := Lease{IP: net.IPv4(10, 0, 5, 10).To4(), Mask: net.CIDRMask(24, 32), Duration: time.Hour}
	rai := dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("eth0/1/7")))
	golden := mustParse(t, goldenPXEDiscover(t))
	inform := packet(t, macBIOS, dhcpv4.WithMessageType(dhcpv4.MessageTypeInform), dhcpv4.WithClientIP(net.IPv4(10, 0, 5, 10)))
	relayed := packet(t, macBIOS, dhcpv4.WithRelay(net.IPv4(10, 9, 0, 1)), dhcpv4.WithOption(rai),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 3})), dhcpv4.WithRequestedOptions(dhcpv4.OptionBootfileName))
	ipxe := packet(t, macBIOS, rawUserClass("iPXE"))
	long := "http://10.0.5.1:8080/" + strings.Repeat("x", 300)
	for i, tc := range []struct {
		req   *dhcpv4.DHCPv4
		mt    dhcpv4.MessageType
		lease *Lease
	}{
		{golden, dhcpv4.MessageTypeOffer, &l},
		{golden, dhcpv4.MessageTypeOffer, nil},
		{golden, dhcpv4.MessageTypeNak, &l},
		{inform, dhcpv4.MessageTypeAck, &l},
		{relayed, dhcpv4.MessageTypeAck, &bare},
		{ipxe, dhcpv4.MessageTypeOffer, &l},
	} {
		c := Classify(tc.req, "herd")
		for _, boot := range []Boot{Decide(c, true, bootCfg), {}, {File: long, VendorClass: "HTTPClient"}} {
			want := referenceReply(t, tc.req, tc.mt, serverIP, tc.lease, boot, c)
			if got := AppendReply(nil, tc.req, tc.mt, serverIP, tc.lease, boot, c); !bytes.Equal(got, want) {
				t.Errorf("case %d, boot %q:\n got %x\nwant %x", i, boot.File, got, want)
			}
		}
	}
}

// A lease from a prepared record (packed servers) writes the same reply as
// one from LeaseFrom.
func TestPreparedLeaseMatchesLeaseFrom(t *testing.T) {
	hw := machine("hw-1", macBIOS, "10.0.5.10", true).Hardware()
	hw.Network.Interfaces[0].Dhcp.NameServers = []string{"10.0.5.53", "10.0.5.54", "bogus"}
	hw.Network.Interfaces[0].Dhcp.Hostname = "plain"
	hw.Network.Interfaces[0].Dhcp.LeaseTime = 0
	want, err := LeaseFrom(hw.GetNetwork().GetInterfaces()[0], 2*time.Hour, "lab")
	if err != nil {
		t.Fatal(err)
	}
	pi, ok := prepare(hw, nil).iface(macBIOS)
	if !ok {
		t.Fatal("prepared record lacks its interface")
	}
	var got Lease
	pi.lease(&got, 2*time.Hour, "lab")
	req := mustParse(t, goldenPXEDiscover(t))
	c := Classify(req, "")
	a := AppendReply(nil, req, dhcpv4.MessageTypeOffer, serverIP, &got, Boot{}, c)
	b := AppendReply(nil, req, dhcpv4.MessageTypeOffer, serverIP, &want, Boot{}, c)
	if !bytes.Equal(a, b) {
		t.Fatalf("prepared lease:\n%x\nLeaseFrom:\n%x", a, b)
	}
}
