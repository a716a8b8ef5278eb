package dhcp

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// opt175 decodes an option 175 value written as hex with spaces.
func opt175(t *testing.T, h string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// iPXE's option 175 as a build with HTTPS sends it: one encapsulated
// option per feature (code, length 1, version 1; features.h), the bus id
// (0xb1) and the version (0xeb: 1.21.1).
const (
	withHTTPS    = "b1 05 01 80 86 10 0e  eb 03 01 15 01  13 01 01  14 01 01  15 01 01  17 01 01  18 01 01  19 01 01  21 01 01  24 01 01"
	withoutHTTPS = "b1 05 01 80 86 10 0e  eb 03 01 00 00  13 01 01  15 01 01  17 01 01  18 01 01  21 01 01"
)

func TestHasIPXEFeature(t *testing.T) {
	tests := []struct {
		name, opt string
		want      bool
	}{
		{"iPXE with HTTPS", withHTTPS, true},
		{"iPXE without HTTPS (Debian's)", withoutHTTPS, false},
		{"empty", "", false},
		{"HTTPS alone", "14 01 01", true},
		{"pads before it", "00 00 14 01 01", true},
		{"after the end option", "13 01 01 ff 14 01 01", false},
		{"0x14 inside another option's value is no feature", "eb 03 14 01 01", false},
		{"cut short before it", "13 05 01 14 01 01", false},
		{"length byte missing", "14", false},
		{"value cut short", "14 02 01", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HasIPXEFeature(opt175(t, tt.opt), FeatureHTTPS); got != tt.want {
				t.Fatalf("HasIPXEFeature(%s) = %v, want %v", tt.opt, got, tt.want)
			}
		})
	}
}

// TestWantsHTTPS: the script URL an iPXE gets, from real request bytes:
// https only for iPXE that announces HTTPS, and only with the opt-in.
func TestWantsHTTPS(t *testing.T) {
	const httpsBase = "https://10.0.5.1:8443"
	ipxe := func(opt string) *dhcpv4.DHCPv4 {
		return packet(t, macBIOS, vendor("PXEClient:Arch:00000:UNDI:002001"), arch(iana.INTEL_X86PC), rawUserClass("iPXE"),
			dhcpv4.WithGeneric(dhcpv4.OptionEtherboot, opt175(t, opt)))
	}
	tests := []struct {
		name      string
		req       *dhcpv4.DHCPv4
		httpsBase string
		want      bool
		wantFile  string
	}{
		{"iPXE with HTTPS, opted in", ipxe(withHTTPS), httpsBase, true, httpsBase + "/auto.ipxe"},
		{"iPXE with HTTPS, no opt-in", ipxe(withHTTPS), "", false, "http://10.0.5.1:8080/auto.ipxe"},
		{"iPXE without HTTPS, opted in", ipxe(withoutHTTPS), httpsBase, false, "http://10.0.5.1:8080/auto.ipxe"},
		{"iPXE by user class only (no option 175)", packet(t, macBIOS, rawUserClass("iPXE")), httpsBase, false, "http://10.0.5.1:8080/auto.ipxe"},
		{"PXE ROM: a binary over TFTP", mustParse(t, goldenPXEDiscover(t)), httpsBase, false, "undionly.kpxe"},
		{"UEFI HTTP boot: the binary over HTTP", packet(t, macBIOS, vendor("HTTPClient:Arch:00016:UNDI:003016"), arch(iana.EFI_X86_64_HTTP)),
			httpsBase, false, "http://10.0.5.1:8080/ipxe/ipxe.efi"},
		{"option 175 with HTTPS but a truncated tail", ipxe("14 01 01 13 09"), httpsBase, true, httpsBase + "/auto.ipxe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Classify(tt.req, "herd")
			if got := WantsHTTPS(c, tt.httpsBase); got != tt.want {
				t.Fatalf("WantsHTTPS(%+v, %q) = %v, want %v", c, tt.httpsBase, got, tt.want)
			}
			cfg := bootCfg
			cfg.HTTPSBase = tt.httpsBase
			if b := Decide(c, true, cfg); b.File != tt.wantFile {
				t.Fatalf("Decide file %q, want %q (%s)", b.File, tt.wantFile, b.Reason)
			}
		})
	}
}
