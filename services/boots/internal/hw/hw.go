// Package hw holds boots' read-only views of a hardware record: which of
// its interfaces a MAC or IP belongs to, and the per-machine boot settings
// carried in its metadata.
package hw

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"

	"github.com/herd-metal/herd/proto/hardware"
)

// Interface returns the record's interface whose DHCP MAC is mac.
func Interface(h *hardware.Hardware, mac net.HardwareAddr) (*hardware.Hardware_Network_Interface, bool) {
	for _, i := range h.GetNetwork().GetInterfaces() {
		m, err := net.ParseMAC(i.GetDhcp().GetMac())
		if err == nil && string(m) == string(mac) {
			return i, true
		}
	}
	return nil, false
}

// InterfaceByIP returns the record's interface whose reserved address is ip.
func InterfaceByIP(h *hardware.Hardware, ip netip.Addr) (*hardware.Hardware_Network_Interface, bool) {
	for _, i := range h.GetNetwork().GetInterfaces() {
		a, err := netip.ParseAddr(i.GetDhcp().GetIp().GetAddress())
		if err == nil && a.Unmap() == ip.Unmap() {
			return i, true
		}
	}
	return nil, false
}

// AllowPXE reports whether any of the record's interfaces allows netboot
// (Tinkerbell v0.6 keeps the flag per interface; boots honours the one of
// the interface that asked, see Interface).
func AllowPXE(i *hardware.Hardware_Network_Interface) bool {
	return i.GetNetboot().GetAllowPxe()
}

// Settings are the per-hardware boots overrides read from the record's
// metadata document, under the "boots" key:
//
//	{"boots": {"ipxe_params": "off", "console": "ttyS1,115200", "kernel_args": "..."}}
//
// Unknown keys are ignored; a malformed document yields the zero Settings.
type Settings struct {
	// IPXEParams overrides the global --ipxe-params: "on", "off" or "auto".
	IPXEParams string `json:"ipxe_params"`
	// Console overrides the kernel console= argument.
	Console string `json:"console"`
	// KernelArgs are appended to the OSIE kernel command line.
	KernelArgs string `json:"kernel_args"`
}

// BootSettings parses Settings from h's metadata.
func BootSettings(h *hardware.Hardware) Settings {
	var doc struct {
		Boots Settings `json:"boots"`
	}
	md := strings.TrimSpace(h.GetMetadata())
	if md == "" || md[0] != '{' {
		return Settings{}
	}
	if err := json.Unmarshal([]byte(md), &doc); err != nil {
		return Settings{}
	}
	return doc.Boots
}
