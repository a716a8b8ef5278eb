package hw

import (
	"net"
	"net/netip"
	"testing"

	"github.com/herd-metal/herd/proto/hardware"
)

func TestInterfaceAndSettings(t *testing.T) {
	h := &hardware.Hardware{Id: "hw", Metadata: `{"boots": {"ipxe_params": "off", "console": "ttyS1", "kernel_args": "quiet"}, "other": 1}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{
			{Dhcp: &hardware.Hardware_DHCP{Mac: "52:54:00:00:00:01", Ip: &hardware.Hardware_DHCP_IP{Address: "10.0.5.10"}}},
			{Dhcp: &hardware.Hardware_DHCP{Mac: "52-54-00-00-00-02", Ip: &hardware.Hardware_DHCP_IP{Address: "10.0.6.10"}},
				Netboot: &hardware.Hardware_Netboot{AllowPxe: true}},
		}}}
	i, ok := Interface(h, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2})
	if !ok || !AllowPXE(i) {
		t.Fatalf("second interface: %v %v", i, ok)
	}
	if _, ok := Interface(h, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}); ok {
		t.Fatal("unknown MAC found")
	}
	if i, ok := InterfaceByIP(h, netip.MustParseAddr("10.0.5.10")); !ok || AllowPXE(i) {
		t.Fatal("by IP")
	}
	if s := BootSettings(h); s != (Settings{IPXEParams: "off", Console: "ttyS1", KernelArgs: "quiet"}) {
		t.Fatalf("settings %+v", s)
	}
	for _, md := range []string{"", "[]", "{bad", `{"boots": 3}`} {
		if s := BootSettings(&hardware.Hardware{Metadata: md}); s != (Settings{}) {
			t.Errorf("metadata %q: %+v", md, s)
		}
	}
}
