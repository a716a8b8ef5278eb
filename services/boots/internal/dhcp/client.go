// Package dhcp is herd-boots' DHCP: which firmware is asking (Classify),
// what it should boot (Decide), the reply for reservation or proxy mode
// (Reply), where the reply goes (Route), and the server that puts
// them on one interface. The decisions are pure functions over the parsed
// request; only Server touches the network.
package dhcp

import (
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// Client is what a request says about the firmware that sent it.
type Client struct {
	// PXE: a PXE ROM (option 60 "PXEClient..." or any of options 93, 94,
	// 97, which RFC 4578 reserves for PXE clients).
	PXE bool
	// HTTP: a UEFI HTTP boot client (option 60 "HTTPClient..." or an HTTP
	// architecture type in option 93). It wants a URL, not a TFTP name.
	HTTP bool
	// IPXE: the firmware is already iPXE (option 77 "iPXE", our own user
	// class, or iPXE's encapsulated option 175). Handing it a binary again
	// would loop; it gets the auto.ipxe URL instead.
	IPXE bool
	// HTTPS: the iPXE says in option 175 that it was built with HTTPS
	// (feature DHCP_EB_FEATURE_HTTPS). Whether it trusts herd's CA option
	// 175 cannot say: that is the operator's opt-in (WantsHTTPS).
	HTTPS bool
	// Arch is option 93's first entry, or the Arch field of option 60
	// ("PXEClient:Arch:00007:UNDI:003016") when option 93 is missing, as
	// some ROMs send. HasArch is false when neither says.
	Arch    iana.Arch
	HasArch bool
	// VendorClass is option 60 as sent.
	VendorClass string
	// UUID is option 97 (client machine identifier) as sent, echoed in
	// replies to PXE clients.
	UUID []byte
}

// Netboot reports whether the client wants a boot file at all.
func (c Client) Netboot() bool { return c.PXE || c.HTTP || c.IPXE }

// httpArchs are the RFC 4578/IANA processor architecture types of HTTP boot
// clients.
var httpArchs = map[iana.Arch]bool{
	iana.EFI_X86_HTTP: true, iana.EFI_X86_64_HTTP: true, iana.EFI_BC_HTTP: true,
	iana.EFI_ARM32_HTTP: true, iana.EFI_ARM64_HTTP: true, iana.INTEL_X86PC_HTTP: true,
	iana.UBOOT_ARM32_HTTP: true, iana.UBOOT_ARM64_HTTP: true, iana.EFI_RISCV64_HTTP: true,
}

// Classify reads the firmware kind from m. userClass is herd's own iPXE
// user class (for iPXE builds that set one); "" means only "iPXE" counts.
func Classify(m *dhcpv4.DHCPv4, userClass string) Client {
	var c Client
	c.VendorClass = m.ClassIdentifier()
	switch {
	case strings.HasPrefix(c.VendorClass, "PXEClient"):
		c.PXE = true
	case strings.HasPrefix(c.VendorClass, "HTTPClient"):
		c.HTTP = true
	}
	if archs := m.ClientArch(); len(archs) > 0 {
		// Option 93 may list several types (RFC 4578 2.1); the first is
		// the one the firmware runs as.
		c.Arch, c.HasArch = archs[0], true
		c.PXE = true
	} else if a, ok := archFromVendorClass(c.VendorClass); ok {
		c.Arch, c.HasArch = a, true
	}
	if m.Options.Has(dhcpv4.OptionClientNetworkInterfaceIdentifier) {
		c.PXE = true
	}
	if u := m.GetOneOption(dhcpv4.OptionClientMachineIdentifier); u != nil {
		c.PXE = true
		c.UUID = u
	}
	if c.HasArch && httpArchs[c.Arch] {
		c.HTTP = true
	}
	if c.HTTP {
		c.PXE = false
	}
	for _, uc := range userClasses(m) {
		if uc == "iPXE" || (userClass != "" && uc == userClass) {
			c.IPXE = true
		}
	}
	if m.Options.Has(dhcpv4.OptionEtherboot) {
		c.IPXE = true
		c.HTTPS = HasIPXEFeature(m.GetOneOption(dhcpv4.OptionEtherboot), FeatureHTTPS)
	}
	return c
}

// FeatureHTTPS is iPXE's DHCP_EB_FEATURE_HTTPS (src/include/ipxe/features.h):
// the encapsulated option inside option 175 that an iPXE built with
// DOWNLOAD_PROTO_HTTPS sends (value: the feature's version, 1).
const FeatureHTTPS = 0x14

// HasIPXEFeature reports whether opt175, the value of iPXE's encapsulated
// option 175 (a run of code, length, value), holds feature. A run that is
// cut short holds no feature from the cut on: a forged or broken option
// must not talk boots into HTTPS, nor crash it.
func HasIPXEFeature(opt175 []byte, feature byte) bool {
	for i := 0; i < len(opt175); {
		code := opt175[i]
		switch code {
		case 0: // pad
			i++
			continue
		case 255: // end
			return false
		}
		if i+1 >= len(opt175) || i+2+int(opt175[i+1]) > len(opt175) {
			return false
		}
		if code == feature {
			return true
		}
		i += 2 + int(opt175[i+1])
	}
	return false
}

// userClasses returns option 77 both ways it is seen in the field: iPXE
// sends the bare string "iPXE" (not RFC 3004's length-prefixed list), other
// clients send the RFC 3004 form. A bare string can parse as a list by
// accident, so both readings are returned.
func userClasses(m *dhcpv4.DHCPv4) []string {
	raw := m.GetOneOption(dhcpv4.OptionUserClassInformation)
	if raw == nil {
		return nil
	}
	out := []string{string(raw)}
	var list dhcpv4.Strings
	if err := list.FromBytes(raw); err == nil {
		out = append(out, list...)
	}
	return out
}

// archFromVendorClass parses "PXEClient:Arch:00007:UNDI:003016" (the PXE
// 2.1 form, arch in decimal) into 7.
func archFromVendorClass(vc string) (iana.Arch, bool) {
	for rest := vc; ; {
		field, tail, more := strings.Cut(rest, ":")
		if !more {
			return 0, false
		}
		if field == "Arch" {
			num, _, _ := strings.Cut(tail, ":")
			n, err := strconv.ParseUint(num, 10, 16)
			if err != nil {
				return 0, false
			}
			return iana.Arch(n), true
		}
		rest = tail
	}
}
