package spec

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/herd-metal/herd/proto/hardware"
	"google.golang.org/protobuf/proto"
)

// goodHardware is a record in the shape of Tinkerbell v0.6's examples.
const goodHardware = `{
  "id": "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94",
  "metadata": {
    "facility": {"facility_code": "onprem", "plan_slug": "c2.medium.x86"},
    "instance": {"hostname": "node-1", "storage": {"disks": [{"device": "/dev/sda", "wipe_table": true}]}, "tags": ["a<b", "ü"]},
    "state": "",
    "big": 12345678901234567890
  },
  "network": {
    "interfaces": [
      {
        "dhcp": {
          "arch": "x86_64",
          "hostname": "node-1",
          "ip": {"address": "10.1.0.10", "gateway": "10.1.0.1", "netmask": "255.255.0.0", "family": 4},
          "lease_time": 86400,
          "mac": "08:00:27:00:00:01",
          "name_servers": ["1.1.1.1", "2606:4700:4700::1111"],
          "time_servers": ["10.1.0.1"],
          "uefi": false,
          "iface_name": "eno1"
        },
        "netboot": {
          "allow_pxe": true,
          "allow_workflow": true,
          "osie": {"base_url": "http://10.1.0.2/misc/osie/current", "kernel": "vmlinuz-x86_64", "initrd": "initramfs-x86_64"}
        }
      },
      {
        "dhcp": {"mac": "08:00:27:00:00:02", "uefi": true, "ip": {"address": "fd00::10", "netmask": "ffff:ffff:ffff:ffff::", "gateway": "fd00::1", "family": 6}},
        "netboot": {"allow_pxe": false, "allow_workflow": false, "ipxe": {"contents": "#!ipxe\nchain http://10.1.0.2/x.ipxe\n"}}
      }
    ]
  }
}`

// minimalHardware is the least a record needs.
const minimalHardware = `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[{"dhcp":{"mac":"52:54:00:12:34:56"}}]}}`

// withBMC returns minimalHardware with a bmc field of that JSON.
func withBMC(bmc string) string {
	return `{"bmc":` + bmc + `,` + minimalHardware[1:]
}

// hw returns goodHardware with one substitution, for bad-input cases that
// differ from a good record in one place.
func hw(old, new string) string {
	if !strings.Contains(goodHardware, old) {
		panic("test fixture does not contain " + old)
	}
	return strings.Replace(goodHardware, old, new, 1)
}

// minimal returns a record whose first interface's dhcp object is dhcp.
func minimal(dhcp string) string {
	return `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[{"dhcp":` + dhcp + `}]}}`
}

func TestParseHardwareBad(t *testing.T) {
	const if0 = "network.interfaces[0]"
	const dhcp0 = if0 + ".dhcp"
	tests := []struct {
		name  string
		in    string
		field string // the field the error must name
		want  string // a substring of the problem
	}{
		{"syntax error", `{"id": "x",`, "hardware", "invalid JSON at line 1"},
		{"syntax error inside", "{\n \"network\": {\"interfaces\": [}\n}", "network.interfaces", "invalid JSON at line 2"},
		{"empty input", "  \n", "hardware", "is empty"},
		{"null document", "null", "hardware", "is null"},
		{"array document", "[]", "hardware", "must be an object"},
		{"trailing data", minimalHardware + " {}", "hardware", "after the JSON value"},
		{"too large", `{"id":"` + strings.Repeat("a", MaxHardwareBytes) + `"}`, "hardware", "the limit is 1048576"},
		{"id missing", `{"network":{"interfaces":[{"dhcp":{"mac":"52:54:00:12:34:56"}}]}}`, "id", "is required"},
		{"id not a UUID", hw(`"0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"`, `"node-1"`), "id", `"node-1" is not a UUID`},
		{"id braces", hw(`"0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"`, `"{0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94}"`), "id", "is not a UUID"},
		{"id nil UUID", hw(`"0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"`, `"00000000-0000-0000-0000-000000000000"`), "id", "nil UUID"},
		{"id number", hw(`"0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"`, `5`), "id", "must be a string, not a number"},
		{"unknown top key", hw(`"metadata"`, `"metdata"`), "metdata", `did you mean "metadata"`},
		{"duplicate key", hw(`"id": "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94",`, `"id": "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94", "id": "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a95",`), "id", "appears more than once"},
		{"duplicate key in metadata", hw(`"state": ""`, `"state": "", "state": "x"`), "metadata.state", "appears more than once"},
		{"version string", hw(`"metadata"`, `"version": "1", "metadata"`), "version", "must be a number"},
		{"metadata array", hw(`"metadata": {`, `"metadata": [], "x": {`), "metadata", "must be a JSON object, not a list"},
		{"metadata string not JSON", minimal(`{"mac":"52:54:00:12:34:56"}`)[:1] + `"metadata":"{oops",` + minimal(`{"mac":"52:54:00:12:34:56"}`)[1:], "metadata", "invalid JSON"},
		{"metadata string holding a list", `{"metadata":"[1]",` + minimalHardware[1:], "metadata", "must be a JSON object, not a list"},
		{"metadata too deep", `{"metadata":` + strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70) + "," + minimalHardware[1:], "metadata" + strings.Repeat(".a", 64), "nested more than 64 levels"},
		{"network missing", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a"}`, "network", "is required"},
		{"network not an object", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":[]}`, "network", "must be an object"},
		{"interfaces empty", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[]}}`, "network.interfaces", "at least one interface"},
		{"interfaces an object", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":{}}}`, "network.interfaces", "must be a list"},
		{"interface null", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[null]}}`, if0, "is null"},
		{"unknown network key", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interface":[]}}`, "network.interface", `did you mean "interfaces"`},
		{"dhcp missing", `{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[{"netboot":{}}]}}`, dhcp0, "is required"},
		{"unknown dhcp key", minimal(`{"mac":"52:54:00:12:34:56","mac_address":"x"}`), dhcp0 + ".mac_address", "unknown field"},
		{"bmc not an object", withBMC(`"ipmi"`), "bmc", "must be an object"},
		{"bmc unknown key", withBMC(`{"address":"10.9.0.5","protocol":"ipmi","credential":"rack1","password":"x"}`), "bmc.password", "unknown field"},
		{"bmc address missing", withBMC(`{"protocol":"ipmi","credential":"rack1"}`), "bmc.address", "is empty"},
		{"bmc address multicast", withBMC(`{"address":"224.0.0.1","protocol":"ipmi","credential":"rack1"}`), "bmc.address", "multicast"},
		{"bmc address not a host", withBMC(`{"address":"bmc_1;rm","protocol":"ipmi","credential":"rack1"}`), "bmc.address", "neither an IPv4 or IPv6 address nor a host name"},
		{"bmc protocol unknown", withBMC(`{"address":"10.9.0.5","protocol":"amt","credential":"rack1"}`), "bmc.protocol", `"amt" is not a BMC protocol herd speaks`},
		{"bmc protocol missing", withBMC(`{"address":"10.9.0.5","credential":"rack1"}`), "bmc.protocol", "is not a BMC protocol"},
		{"bmc port too big", withBMC(`{"address":"10.9.0.5","protocol":"ipmi","port":70000,"credential":"rack1"}`), "bmc.port", "70000 is not a port"},
		{"bmc port negative", withBMC(`{"address":"10.9.0.5","protocol":"ipmi","port":-1,"credential":"rack1"}`), "bmc.port", "-1 is not a port"},
		{"bmc port string", withBMC(`{"address":"10.9.0.5","protocol":"ipmi","port":"623","credential":"rack1"}`), "bmc.port", "must be a number"},
		{"bmc credential missing", withBMC(`{"address":"10.9.0.5","protocol":"ipmi"}`), "bmc.credential", "is empty"},
		{"bmc credential path", withBMC(`{"address":"10.9.0.5","protocol":"redfish","credential":"../etc"}`), "bmc.credential", "is not a credential name"},
		{"mac missing", minimal(`{"hostname":"a"}`), dhcp0 + ".mac", "is required"},
		{"mac malformed", minimal(`{"mac":"zz"}`), dhcp0 + ".mac", `"zz" is not a MAC address`},
		{"mac eight bytes", minimal(`{"mac":"00:11:22:33:44:55:66:77"}`), dhcp0 + ".mac", "is not a MAC address"},
		{"mac multicast", minimal(`{"mac":"01:00:5e:00:00:01"}`), dhcp0 + ".mac", "multicast"},
		{"mac all zero", minimal(`{"mac":"00:00:00:00:00:00"}`), dhcp0 + ".mac", "all-zero"},
		{"mac broadcast", minimal(`{"mac":"FF:FF:FF:FF:FF:FF"}`), dhcp0 + ".mac", "broadcast"},
		{"mac repeated in record", hw(`"08:00:27:00:00:02"`, `"08-00-27-00-00-01"`), "network.interfaces[1].dhcp.mac", "already the MAC of network.interfaces[0]"},
		{"address not an IP", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"10.0.0.300"}}`), dhcp0 + ".ip.address", `"10.0.0.300" is not an IPv4 or IPv6 address`},
		{"address loopback", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"127.0.0.1"}}`), dhcp0 + ".ip.address", "loopback"},
		{"address unspecified", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"0.0.0.0"}}`), dhcp0 + ".ip.address", "unspecified"},
		{"address with zone", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"fe80::1%eth0"}}`), dhcp0 + ".ip.address", "zone"},
		{"address v4-mapped", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"::ffff:10.0.0.1"}}`), dhcp0 + ".ip.address", "write it as 10.0.0.1"},
		{"address is network address", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"10.0.0.0","netmask":"255.255.255.0"}}`), dhcp0 + ".ip.address", "network address of 10.0.0.0/24"},
		{"address is broadcast address", minimal(`{"mac":"52:54:00:12:34:56","ip":{"address":"10.0.0.255","netmask":"255.255.255.0"}}`), dhcp0 + ".ip.address", "broadcast address of 10.0.0.0/24"},
		{"address missing with gateway", minimal(`{"mac":"52:54:00:12:34:56","ip":{"gateway":"10.0.0.1"}}`), dhcp0 + ".ip.address", "required when netmask or gateway"},
		{"address repeated in record", hw(`"fd00::10"`, `"10.1.0.10"`), "network.interfaces[1].dhcp.ip.address", "already the address of network.interfaces[0]"},
		{"netmask not contiguous", hw(`"255.255.0.0"`, `"255.0.255.0"`), dhcp0 + ".ip.netmask", "not contiguous"},
		{"netmask as prefix length", hw(`"255.255.0.0"`, `"16"`), dhcp0 + ".ip.netmask", "prefix length"},
		{"netmask wrong family", hw(`"255.255.0.0"`, `"ffff:ffff::"`), dhcp0 + ".ip.netmask", "not an IPv4 netmask"},
		{"netmask garbage", hw(`"255.255.0.0"`, `"mask"`), dhcp0 + ".ip.netmask", "is not a netmask"},
		{"gateway not an IP", hw(`"10.1.0.1", "netmask"`, `"10.1.0", "netmask"`), dhcp0 + ".ip.gateway", "is not an IPv4 or IPv6 address"},
		{"gateway other family", hw(`"fd00::1"`, `"10.1.0.1"`), "network.interfaces[1].dhcp.ip.gateway", "same family"},
		{"gateway is own address", hw(`"10.1.0.1", "netmask"`, `"10.1.0.10", "netmask"`), dhcp0 + ".ip.gateway", "own address"},
		{"family unknown", hw(`"family": 4`, `"family": 5`), dhcp0 + ".ip.family", "5 is not 4 or 6"},
		{"family mismatch", hw(`"family": 4`, `"family": 6`), dhcp0 + ".ip.family", "is 6 but address 10.1.0.10 is IPv4"},
		{"family not a number", hw(`"family": 4`, `"family": "4"`), dhcp0 + ".ip.family", "must be a number"},
		{"unknown ip key", hw(`"family": 4`, `"family": 4, "prefix": 16`), dhcp0 + ".ip.prefix", "unknown field"},
		{"hostname underscore", hw("\"hostname\": \"node-1\",\n", "\"hostname\": \"node_1\",\n"), dhcp0 + ".hostname", "not a hostname"},
		{"hostname leading hyphen", hw("\"hostname\": \"node-1\",\n", "\"hostname\": \"-node\",\n"), dhcp0 + ".hostname", "RFC 1123"},
		{"hostname label too long", hw("\"hostname\": \"node-1\",\n", "\"hostname\": \""+strings.Repeat("a", 64)+"\",\n"), dhcp0 + ".hostname", "longer than 63"},
		{"lease time negative", hw(`86400`, `-1`), dhcp0 + ".lease_time", "negative"},
		{"lease time too long", hw(`86400`, `4294967296`), dhcp0 + ".lease_time", "32-bit"},
		{"lease time string", hw(`86400`, `"86400"`), dhcp0 + ".lease_time", "must be a number, not a string"},
		{"lease time fraction", hw(`86400`, `3.5`), dhcp0 + ".lease_time", "not a whole number"},
		{"name servers not a list", hw(`["1.1.1.1", "2606:4700:4700::1111"]`, `"1.1.1.1"`), dhcp0 + ".name_servers", "must be a list of strings"},
		{"name server bad", hw(`"2606:4700:4700::1111"`, `"one.one"`), dhcp0 + ".name_servers[1]", "not an IPv4 or IPv6 address"},
		{"name server number", hw(`"2606:4700:4700::1111"`, `1`), dhcp0 + ".name_servers[1]", "must be a string"},
		{"time server garbage", hw(`["10.1.0.1"]`, `["10.1.0.1", "ntp server!"]`), dhcp0 + ".time_servers[1]", `"ntp server!" is neither an IPv4 or IPv6 address nor a host name (RFC 1123`},
		{"time server underscore", hw(`["10.1.0.1"]`, `["ntp_1.example"]`), dhcp0 + ".time_servers[0]", "nor a host name"},
		{"time server empty label", hw(`["10.1.0.1"]`, `["pool..ntp.org"]`), dhcp0 + ".time_servers[0]", "nor a host name"},
		{"time server trailing dot", hw(`["10.1.0.1"]`, `["pool.ntp.org."]`), dhcp0 + ".time_servers[0]", "nor a host name"},
		{"time server leading hyphen", hw(`["10.1.0.1"]`, `["-ntp.example"]`), dhcp0 + ".time_servers[0]", "nor a host name"},
		{"time server empty", hw(`["10.1.0.1"]`, `[""]`), dhcp0 + ".time_servers[0]", "is empty"},
		{"time server label too long", hw(`["10.1.0.1"]`, `["`+strings.Repeat("a", 64)+`.example"]`), dhcp0 + ".time_servers[0]", "label of 64 characters; a host name's labels have at most 63"},
		{"time server name too long", hw(`["10.1.0.1"]`, `["`+strings.Repeat(strings.Repeat("a", 63)+".", 4)+`org"]`), dhcp0 + ".time_servers[0]", "is 259 characters long; a host name has at most 253"},
		{"time server bad IPv4", hw(`["10.1.0.1"]`, `["10.1.0.300"]`), dhcp0 + ".time_servers[0]", "not a host name either (its last label is all digits)"},
		{"time server short IPv4", hw(`["10.1.0.1"]`, `["10.1.0"]`), dhcp0 + ".time_servers[0]", "last label is all digits"},
		{"time server bad IPv6", hw(`["10.1.0.1"]`, `["fd00::1::2"]`), dhcp0 + ".time_servers[0]", "is not an IPv4 or IPv6 address"},
		{"time server loopback", hw(`["10.1.0.1"]`, `["127.0.0.1"]`), dhcp0 + ".time_servers[0]", "is a loopback address"},
		{"time server not a string", hw(`["10.1.0.1"]`, `[123]`), dhcp0 + ".time_servers[0]", "must be a string"},
		{"arch upper case", hw(`"x86_64"`, `"X86_64"`), dhcp0 + ".arch", "not an architecture name"},
		{"uefi string", hw(`"uefi": false`, `"uefi": "no"`), dhcp0 + ".uefi", "must be true or false"},
		{"iface name with colon", hw(`"eno1"`, `"eno1:1"`), dhcp0 + ".iface_name", "not an interface name"},
		{"iface name too long", hw(`"eno1"`, `"enp0s31f6abcdefgh"`), dhcp0 + ".iface_name", "15 characters"},
		{"netboot not an object", minimal(`{"mac":"52:54:00:12:34:56"},"netboot":true`), if0 + ".netboot", "must be an object"},
		{"allow_pxe string", hw(`"allow_pxe": true`, `"allow_pxe": "true"`), if0 + ".netboot.allow_pxe", "must be true or false"},
		{"unknown netboot key", hw(`"allow_pxe": true`, `"allow_pxe": true, "allowPxe": true`), if0 + ".netboot.allowPxe", "unknown field"},
		{"ipxe url and contents", hw(`{"contents": "#!ipxe`, `{"url": "http://x/y.ipxe", "contents": "#!ipxe`), "network.interfaces[1].netboot.ipxe", "not both"},
		{"ipxe url scheme", hw(`{"contents": "#!ipxe\nchain http://10.1.0.2/x.ipxe\n"}`, `{"url": "ftp://10.1.0.2/x.ipxe"}`), "network.interfaces[1].netboot.ipxe.url", "not an http:// or https:// URL"},
		{"ipxe url no host", hw(`{"contents": "#!ipxe\nchain http://10.1.0.2/x.ipxe\n"}`, `{"url": "http:///x.ipxe"}`), "network.interfaces[1].netboot.ipxe.url", "has no host"},
		{"ipxe contents without signature", hw(`"#!ipxe\nchain`, `"chain`), "network.interfaces[1].netboot.ipxe.contents", `start with "#!ipxe"`},
		{"osie base url relative", hw(`"http://10.1.0.2/misc/osie/current"`, `"10.1.0.2/misc/osie"`), if0 + ".netboot.osie.base_url", "not an http:// or https:// URL"},
		{"osie base url bad port", hw(`"http://10.1.0.2/misc/osie/current"`, `"http://10.1.0.2:99999/osie"`), if0 + ".netboot.osie.base_url", "invalid port"},
		{"osie kernel with space", hw(`"vmlinuz-x86_64"`, `"vmlinuz x86_64"`), if0 + ".netboot.osie.kernel", "spaces"},
		{"osie initrd bad URL", hw(`"initramfs-x86_64"`, `"gopher://x/initrd"`), if0 + ".netboot.osie.initrd", "http"},
		{"unknown osie key", hw(`"initrd": "initramfs-x86_64"`, `"initrd": "initramfs-x86_64", "cmdline": "x"`), if0 + ".netboot.osie.cmdline", "unknown field"},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("duplicate case name")
			}
			seen[tc.name] = true
			got, err := ParseHardware([]byte(tc.in))
			if err == nil {
				t.Fatalf("ParseHardware accepted it: %v", got)
			}
			requireFieldError(t, err, tc.field, tc.want)
		})
	}
}

// requireFieldError checks that err holds a *FieldError for field whose
// problem contains want.
func requireFieldError(t *testing.T, err error, field, want string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %q (%T) is not a *FieldError", err, err)
	}
	for _, e := range flatten(err) {
		if errors.As(e, &fe) && fe.Field == field && strings.Contains(fe.Problem, want) {
			if !strings.Contains(err.Error(), field+": ") {
				t.Fatalf("error text %q does not name %s", err, field)
			}
			return
		}
	}
	t.Fatalf("error does not name field %q with problem containing %q:\n%v", field, want, err)
}

// flatten lists the errors inside errors.Join trees and %w wraps.
func flatten(err error) []error {
	out := []error{err}
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, c := range e.Unwrap() {
			out = append(out, flatten(c)...)
		}
	case interface{ Unwrap() error }:
		out = append(out, flatten(e.Unwrap())...)
	}
	return out
}

func TestParseHardwareGood(t *testing.T) {
	hwr, err := ParseHardware([]byte(goodHardware))
	if err != nil {
		t.Fatal(err)
	}
	d := hwr.GetNetwork().GetInterfaces()[0].GetDhcp()
	if d.GetMac() != "08:00:27:00:00:01" || d.GetIp().GetNetmask() != "255.255.0.0" || d.GetLeaseTime() != 86400 || d.GetIfaceName() != "eno1" {
		t.Errorf("dhcp = %v", d)
	}
	if nb := hwr.GetNetwork().GetInterfaces()[1].GetNetboot(); nb.GetAllowPxe() || !strings.HasPrefix(nb.GetIpxe().GetContents(), "#!ipxe\n") {
		t.Errorf("netboot = %v", nb)
	}
	const wantMeta = `{"facility":{"facility_code":"onprem","plan_slug":"c2.medium.x86"},"instance":{"hostname":"node-1","storage":{"disks":[{"device":"/dev/sda","wipe_table":true}]},"tags":["a<b","ü"]},"state":"","big":12345678901234567890}`
	if hwr.GetMetadata() != wantMeta {
		t.Errorf("metadata =\n%s\nwant\n%s", hwr.GetMetadata(), wantMeta)
	}
}

func TestHardwareRoundTrip(t *testing.T) {
	withVersion := strings.Replace(minimalHardware, `"network"`, `"version": 7, "metadata": "{\"a\": [1, 2.50, null]}", "network"`, 1)
	for name, in := range map[string]string{"good": goodHardware, "minimal": minimalHardware, "version and string metadata": withVersion,
		"bmc": withBMC(`{"address":"bmc-7.oob.example","protocol":"redfish","port":8443,"credential":"rack-1"}`)} {
		t.Run(name, func(t *testing.T) {
			first, err := ParseHardware([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			out, err := MarshalHardware(first)
			if err != nil {
				t.Fatal(err)
			}
			second, err := ParseHardware(out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !proto.Equal(first, second) {
				t.Fatalf("round trip changed the record:\n%v\n%v", first, second)
			}
			again, err := MarshalHardware(second)
			if err != nil || string(again) != string(out) {
				t.Fatalf("marshal is not stable: %v\n%s\n%s", err, out, again)
			}
		})
	}
}

func TestMetadataStringEqualsObject(t *testing.T) {
	obj, err := ParseHardware([]byte(`{"metadata":{"instance":{"hostname":"a"}},` + minimalHardware[1:]))
	if err != nil {
		t.Fatal(err)
	}
	str, err := ParseHardware([]byte(`{"metadata":"{\"instance\": {\"hostname\": \"a\"}}",` + minimalHardware[1:]))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(obj, str) || obj.GetMetadata() != `{"instance":{"hostname":"a"}}` {
		t.Fatalf("object %q, string %q", obj.GetMetadata(), str.GetMetadata())
	}
	out, err := MarshalHardware(str)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "\"metadata\": {\n    \"instance\": {\n      \"hostname\": \"a\"") {
		t.Fatalf("metadata not written as an object:\n%s", out)
	}
}

func TestMarshalHardwareShape(t *testing.T) {
	rec := &hardware.Hardware{
		Id:       "2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a",
		Metadata: `{"z":1,"a":"<&>"}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp:    &hardware.Hardware_DHCP{Mac: "52:54:00:12:34:56"},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true},
		}}},
	}
	out, err := MarshalHardware(rec)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{
  "id": "2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a",
  "metadata": {
    "z": 1,
    "a": "<&>"
  },
  "network": {
    "interfaces": [
      {
        "dhcp": {
          "mac": "52:54:00:12:34:56",
          "uefi": false
        },
        "netboot": {
          "allow_pxe": true,
          "allow_workflow": false
        }
      }
    ]
  }
}
`
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if _, err := MarshalHardware(&hardware.Hardware{Metadata: "{"}); err == nil {
		t.Fatal("MarshalHardware accepted metadata that is not JSON")
	}
	if _, err := MarshalHardware(nil); err == nil {
		t.Fatal("MarshalHardware accepted nil")
	}
}

func TestValidateHardwareProto(t *testing.T) {
	good := func() *hardware.Hardware {
		h, err := ParseHardware([]byte(minimalHardware))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	tests := []struct {
		name   string
		mutate func(*hardware.Hardware)
		field  string
		want   string
	}{
		{"nil network", func(h *hardware.Hardware) { h.Network = nil }, "network", "is required"},
		{"nil interface", func(h *hardware.Hardware) { h.Network.Interfaces[0] = nil }, "network.interfaces[0]", "is empty"},
		{"metadata not JSON", func(h *hardware.Hardware) { h.Metadata = "hostname=a" }, "metadata", "invalid JSON"},
		{"metadata not an object", func(h *hardware.Hardware) { h.Metadata = `"x"` }, "metadata", "must be a JSON object, not a string"},
		{"metadata repeated key", func(h *hardware.Hardware) { h.Metadata = `{"a":1,"a":2}` }, "metadata.a", "appears more than once"},
		{"negative version", func(h *hardware.Hardware) { h.Version = -1 }, "version", "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := good()
			tc.mutate(h)
			requireFieldError(t, ValidateHardware(h), tc.field, tc.want)
		})
	}
	requireFieldError(t, ValidateHardware(nil), "hardware", "is missing")
}

func TestValidateHardwareReportsEveryProblem(t *testing.T) {
	in := `{"id":"x","network":{"interfaces":[{"dhcp":{"mac":"zz","hostname":"a_b","lease_time":-1}}]}}`
	_, err := ParseHardware([]byte(in))
	for _, f := range []string{"id", "network.interfaces[0].dhcp.mac", "network.interfaces[0].dhcp.hostname", "network.interfaces[0].dhcp.lease_time"} {
		if !strings.Contains(err.Error(), f+": ") {
			t.Errorf("error does not name %s:\n%v", f, err)
		}
	}
	var many strings.Builder
	many.WriteString(`{"id":"2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a","network":{"interfaces":[`)
	for i := range 30 {
		if i > 0 {
			many.WriteString(",")
		}
		fmt.Fprintf(&many, `{"dhcp":{"mac":"bad%d"}}`, i)
	}
	many.WriteString("]}}")
	_, err = ParseHardware([]byte(many.String()))
	if n := strings.Count(err.Error(), "is not a MAC address"); n != maxReported {
		t.Errorf("reported %d problems, want %d", n, maxReported)
	}
	if !strings.Contains(err.Error(), "10 more problems not shown") {
		t.Errorf("no count of the rest:\n%v", err)
	}
}

func TestNormalizeHardware(t *testing.T) {
	in := `{"id":"2C9F1AC5-1BC9-4C7D-8D5E-4A1F6F1F1B0A","network":{"interfaces":[
		{"dhcp":{"mac":"52-54-00-AB-CD-EF","ip":{"address":"FD00:0:0::10","netmask":"FFFF:FFFF:FFFF:FFFF::","gateway":"fd00:0::1"},"name_servers":["2001:DB8::53"]}},
		{"dhcp":{"mac":"5254.00ab.cdf0","ip":{"address":"10.0.0.5","netmask":"255.255.255.0"}}}]}}`
	h, err := ParseHardware([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	NormalizeHardware(h)
	if err := ValidateHardware(h); err != nil {
		t.Fatalf("normalized record invalid: %v", err)
	}
	d0, d1 := h.Network.Interfaces[0].Dhcp, h.Network.Interfaces[1].Dhcp
	checks := map[string][2]string{
		"id":      {h.Id, "2c9f1ac5-1bc9-4c7d-8d5e-4a1f6f1f1b0a"},
		"mac0":    {d0.Mac, "52:54:00:ab:cd:ef"},
		"mac1":    {d1.Mac, "52:54:00:ab:cd:f0"},
		"address": {d0.Ip.Address, "fd00::10"},
		"netmask": {d0.Ip.Netmask, "ffff:ffff:ffff:ffff::"},
		"gateway": {d0.Ip.Gateway, "fd00::1"},
		"ns":      {d0.NameServers[0], "2001:db8::53"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", name, c[0], c[1])
		}
	}
	macs, ips := HardwareAddresses(h)
	if strings.Join(macs, ",") != "52:54:00:ab:cd:ef,52:54:00:ab:cd:f0" || strings.Join(ips, ",") != "fd00::10,10.0.0.5" {
		t.Errorf("HardwareAddresses = %v %v", macs, ips)
	}
	// Normalizing garbage leaves it for ValidateHardware to report, and nil
	// is fine.
	bad := &hardware.Hardware{Id: "X", Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{nil, {Dhcp: &hardware.Hardware_DHCP{Mac: "ZZ", Ip: &hardware.Hardware_DHCP_IP{Address: "a.b"}}}}}}
	NormalizeHardware(bad)
	NormalizeHardware(nil)
	if bad.Id != "X" || bad.Network.Interfaces[1].Dhcp.Mac != "ZZ" || bad.Network.Interfaces[1].Dhcp.Ip.Address != "a.b" {
		t.Errorf("garbage changed: %v", bad)
	}
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"08:00:27:00:00:01":       "08:00:27:00:00:01",
		"08-00-27-AA-BB-CC":       "08:00:27:aa:bb:cc",
		"0800.27aa.bbcc":          "08:00:27:aa:bb:cc",
		"":                        "",
		"08:00:27:00:00":          "",
		"08:00:27:00:00:01:02:03": "",
	} {
		got, err := NormalizeMAC(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("NormalizeMAC(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Time servers may be host names, as Tinkerbell v0.6 stored them
// (herd-boots resolves them for DHCP option 42); the record keeps them as
// pushed, case included, while addresses are still canonicalized.
func TestTimeServerNames(t *testing.T) {
	long := strings.Repeat(strings.Repeat("a", 62)+".", 4)[:249] + ".org" // 253 characters
	if len(long) != 253 {
		t.Fatalf("fixture is %d characters", len(long))
	}
	servers := []string{"0.pool.ntp.org", "NTP.Example.COM", "localhost", "time-1", "1.ntp", strings.Repeat("b", 63) + ".example", long,
		"10.1.0.1", "FD00:0::123"}
	list := `["` + strings.Join(servers, `", "`) + `"]`
	h, err := ParseHardware([]byte(hw(`["10.1.0.1"]`, list)))
	if err != nil {
		t.Fatal(err)
	}
	NormalizeHardware(h)
	got := h.GetNetwork().GetInterfaces()[0].GetDhcp().GetTimeServers()
	want := append(append([]string{}, servers[:7]...), "10.1.0.1", "fd00::123")
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("time servers = %q\nwant %q", got, want)
	}
	out, err := MarshalHardware(h)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"NTP.Example.COM"`) || !strings.Contains(string(out), `"0.pool.ntp.org"`) {
		t.Errorf("marshalled record lost the names:\n%s", out)
	}
	again, err := ParseHardware(out)
	if err != nil || !proto.Equal(h, again) {
		t.Fatalf("round trip: %v\n%v\n%v", err, h, again)
	}
}

func TestTimeServerIsName(t *testing.T) {
	for in, want := range map[string]bool{
		"0.pool.ntp.org": true, "localhost": true, "NTP.example": true, "a-b.c": true,
		"10.1.0.1": false, "fd00::1": false, "10.1.0.300": false, "10.1.0": false, "": false, "ntp server": false,
		"pool.ntp.org.": false, "fd00::1::2": false, "x_y": false, strings.Repeat("a", 64): false,
	} {
		if got := TimeServerIsName(in); got != want {
			t.Errorf("TimeServerIsName(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestBMC(t *testing.T) {
	for _, in := range []string{
		`{"address":"10.9.0.5","protocol":"ipmi","credential":"rack1"}`,
		`{"address":"127.0.0.1","protocol":"ipmi","port":6230,"credential":"tunnel"}`,
		`{"address":"FD00:9::5","protocol":"redfish","credential":"r.1_a-b"}`,
	} {
		if _, err := ParseHardware([]byte(withBMC(in))); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
	h, err := ParseHardware([]byte(withBMC(`{"address":"FD00:9:0::5","protocol":"redfish","credential":"rack1"}`)))
	if err != nil {
		t.Fatal(err)
	}
	NormalizeHardware(h)
	if h.Bmc.Address != "fd00:9::5" {
		t.Errorf("normalized bmc address = %q", h.Bmc.Address)
	}
	out, err := MarshalHardware(h)
	if err != nil || !strings.Contains(string(out), `"bmc": {`) || strings.Contains(string(out), `"port"`) {
		t.Errorf("marshal: %v\n%s", err, out)
	}
	ports := []struct {
		b    *hardware.Hardware_BMC
		want int32
	}{
		{&hardware.Hardware_BMC{Protocol: BMCIPMI}, 623},
		{&hardware.Hardware_BMC{Protocol: BMCRedfish}, 443},
		{&hardware.Hardware_BMC{Protocol: BMCRedfish, Port: 8443}, 8443},
		{&hardware.Hardware_BMC{Protocol: "amt"}, 0},
		{nil, 0},
	}
	for _, c := range ports {
		if got := BMCPort(c.b); got != c.want {
			t.Errorf("BMCPort(%v) = %d, want %d", c.b, got, c.want)
		}
	}
	names := map[string]string{"rack1": "", "a": "", "A.b_c-9": "", "": "is empty", "-x": "is not a credential name",
		"a/b": "is not a credential name", strings.Repeat("a", 64): "is not a credential name", "ü": "is not a credential name"}
	for name, want := range names {
		got := CredentialNameProblem(name)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("CredentialNameProblem(%q) = %q, want %q", name, got, want)
		}
	}
}
