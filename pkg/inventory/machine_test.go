package inventory

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/herd-metal/herd/proto/hardware"
)

// The packed keys give back every MAC and IP the record's interfaces
// name, in their index forms; malformed ones are left out.
func TestPackKeys(t *testing.T) {
	iface := func(mac, ip string) *hardware.Hardware_Network_Interface {
		return &hardware.Hardware_Network_Interface{Dhcp: &hardware.Hardware_DHCP{Mac: mac, Ip: &hardware.Hardware_DHCP_IP{Address: ip}}}
	}
	tests := []struct {
		name   string
		ifaces []*hardware.Hardware_Network_Interface
		macs   []string
		ips    []string
	}{
		{"none", nil, nil, nil},
		{"one", []*hardware.Hardware_Network_Interface{iface("08:00:27:00:00:01", "10.1.0.11")},
			[]string{"\x08\x00\x27\x00\x00\x01"}, []string{"10.1.0.11"}},
		{"IPv4-mapped unmapped, IPv6 with a zone kept",
			[]*hardware.Hardware_Network_Interface{iface("08:00:27:00:00:01", "::ffff:10.1.0.11"), iface("08:00:27:00:00:02", "fe80::1%eth0")},
			[]string{"\x08\x00\x27\x00\x00\x01", "\x08\x00\x27\x00\x00\x02"}, []string{"10.1.0.11", "fe80::1%eth0"}},
		{"20-byte InfiniBand MAC", []*hardware.Hardware_Network_Interface{iface("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "")},
			[]string{"\x00\x00\x00\x00\xfe\x80\x00\x00\x00\x00\x00\x00\x02\x00\x5e\x10\x00\x00\x00\x01"}, nil},
		{"malformed left out", []*hardware.Hardware_Network_Interface{iface("08:00:27", "10.1.0.300"), iface("08:00:27:00:00:03", "")},
			[]string{"\x08\x00\x27\x00\x00\x03"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hw := &hardware.Hardware{Id: "x", Network: &hardware.Hardware_Network{Interfaces: tc.ifaces}}
			var macs, ips []string
			eachKey(packKeys(hw), func(m string) { macs = append(macs, m) }, func(a netip.Addr) { ips = append(ips, a.String()) })
			if !slices.Equal(macs, tc.macs) || !slices.Equal(ips, tc.ips) {
				t.Errorf("keys: MACs %q, IPs %q; want %q, %q", macs, ips, tc.macs, tc.ips)
			}
		})
	}
	// Bytes not written by packKeys end the walk, whatever they hold.
	for _, junk := range []string{"m", "m\x09abc", "i\x03abc", "x\x01a"} {
		eachKey(junk, func(string) {}, func(netip.Addr) {})
	}
}

type freeDerived struct{}

func (freeDerived) RecordFree() {}

// A machine keeps its record in wire form and hands out a decoded copy
// each time; a RecordFree derived value keeps neither record nor token.
func TestMachineRecord(t *testing.T) {
	hw := record(id1, "08:00:27:00:00:01", "10.1.0.11")
	m := NewMachine(hw, "tok", "derived")
	got := m.Hardware()
	if got.GetId() != id1 || got.GetNetwork().GetInterfaces()[0].GetDhcp().GetMac() != "08:00:27:00:00:01" || got.GetMetadata() != hw.GetMetadata() {
		t.Fatalf("decoded record: %v", got)
	}
	got.Id = "changed"
	if m.Hardware().GetId() != id1 || m.ID != id1 || m.WorkerToken != "tok" {
		t.Errorf("a change to a decoded copy reached the machine: %q, %q", m.Hardware().GetId(), m.ID)
	}
	free := NewMachine(hw, "tok", freeDerived{})
	if free.Hardware() != nil || free.WorkerToken != "" || free.ID != id1 || free.record != nil {
		t.Errorf("RecordFree machine kept %v, token %q, id %q", free.Hardware(), free.WorkerToken, free.ID)
	}
}
