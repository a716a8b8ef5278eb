package dhcp

import (
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/iana"
)

// Boot file names, as served by herd-boots' TFTP and HTTP (/ipxe/NAME).
const (
	FileUndionly = "undionly.kpxe" // BIOS PXE: iPXE on the ROM's UNDI driver
	FileIPXEEFI  = "ipxe.efi"      // UEFI x86-64: iPXE with its own drivers
	FileSNPEFI   = "snp.efi"       // UEFI arm64: iPXE on the firmware's SNP driver
)

// binaries maps option 93 to the iPXE binary that runs on it.
var binaries = map[iana.Arch]string{
	iana.INTEL_X86PC: FileUndionly,
	iana.EFI_X86_64:  FileIPXEEFI,
	// Type 9 is "EFI BC" in RFC 4578, but x86-64 UEFI firmware sends it
	// (the RFC's 7/9 mix-up, corrected in the IANA registry); treat as x86-64.
	iana.EFI_BC:          FileIPXEEFI,
	iana.EFI_ARM64:       FileSNPEFI,
	iana.EFI_X86_64_HTTP: FileIPXEEFI,
	iana.EFI_ARM64_HTTP:  FileSNPEFI,
}

// BootConfig is where boot files live.
type BootConfig struct {
	// NextServer is the TFTP server (siaddr) for PXE clients.
	NextServer net.IP
	// HTTPBase is boots' HTTP root as firmware reaches it, e.g.
	// "http://10.0.5.1:80" (no trailing slash).
	HTTPBase string
	// HTTPSBase, when set (herd-boots --ipxe-https-url), is boots' HTTPS
	// root, e.g. "https://10.0.5.1:443": iPXE that can fetch over HTTPS
	// is pointed there (WantsHTTPS).
	HTTPSBase string
}

// WantsHTTPS reports whether c is to fetch its script over HTTPS: it is
// iPXE, it says (option 175) that it has HTTPS, and the operator opted in
// with an HTTPS root (httpsBase). Firmware without HTTPS (Debian's iPXE,
// OVH's, PXE ROMs, UEFI HTTP boot) keeps plain HTTP. The opt-in stands for
// what option 175 cannot say: that the firmware trusts herd's CA (an iPXE
// built with TRUST= naming it); one that does not would fail every fetch.
func WantsHTTPS(c Client, httpsBase string) bool {
	return httpsBase != "" && c.IPXE && c.HTTPS
}

// Boot is what a client is told to boot. A zero File means no boot file.
type Boot struct {
	File       string
	NextServer net.IP
	// VendorClass is echoed as option 60: PXE ROMs ignore offers without
	// "PXEClient" and HTTP boot clients ones without "HTTPClient".
	VendorClass string
	// Reason says why (for logs and metrics' decision label).
	Reason string
}

// Decide picks the boot file for c. allowPXE is the hardware interface's
// netboot.allow_pxe.
func Decide(c Client, allowPXE bool, cfg BootConfig) Boot {
	switch {
	case !c.Netboot():
		return Boot{Reason: "not a netboot client"}
	case !allowPXE:
		return Boot{Reason: "netboot not allowed"}
	case c.IPXE:
		// Already iPXE: point it at the script, not at another iPXE
		// binary, which would chainload forever.
		b := Boot{File: cfg.HTTPBase + "/auto.ipxe", NextServer: cfg.NextServer, Reason: "ipxe script"}
		if WantsHTTPS(c, cfg.HTTPSBase) {
			b.File, b.Reason = cfg.HTTPSBase+"/auto.ipxe", "ipxe script over https"
		}
		if c.HTTP {
			b.VendorClass = "HTTPClient"
		} else if c.PXE {
			b.VendorClass = "PXEClient"
		}
		return b
	}
	if !c.HasArch {
		// A PXE client without option 93 or an Arch in option 60 is a
		// pre-RFC 4578 BIOS ROM.
		c.Arch, c.HasArch = iana.INTEL_X86PC, true
	}
	file, ok := binaries[c.Arch]
	if !ok {
		return Boot{Reason: fmt.Sprintf("unsupported architecture %d (%s)", uint16(c.Arch), c.Arch)}
	}
	if c.HTTP {
		return Boot{File: cfg.HTTPBase + "/ipxe/" + file, NextServer: cfg.NextServer, VendorClass: "HTTPClient", Reason: "http boot " + file}
	}
	return Boot{File: file, NextServer: cfg.NextServer, VendorClass: "PXEClient", Reason: "tftp " + file}
}
