package machines

import (
	"net/netip"
	"testing"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/proto/hardware"
)

// fakeInventory indexes interface addresses, as pkg/inventory does.
type fakeInventory struct {
	byID map[string]inventory.Machine
	byIP map[netip.Addr]inventory.Machine
}

func (f *fakeInventory) ByIP(a netip.Addr) (inventory.Machine, bool) {
	m, ok := f.byIP[a]
	return m, ok
}
func (f *fakeInventory) ByID(id string) (inventory.Machine, bool) { m, ok := f.byID[id]; return m, ok }

func (f *fakeInventory) put(x *Index, id, ifaceIP, docIP string) {
	hw := &hardware.Hardware{Id: id,
		Metadata: `{"instance": {"ip_addresses": [{"address": "` + docIP + `", "address_family": 4, "public": true}]}}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Ip: &hardware.Hardware_DHCP_IP{Address: ifaceIP}},
		}}}}
	m := inventory.NewMachine(hw, "", x.Derive(hw))
	for a, old := range f.byIP {
		if old.ID == id {
			delete(f.byIP, a)
		}
	}
	f.byID[id] = m
	f.byIP[netip.MustParseAddr(ifaceIP)] = m
}

func TestLookup(t *testing.T) {
	inv := &fakeInventory{byID: map[string]inventory.Machine{}, byIP: map[netip.Addr]inventory.Machine{}}
	x := New()
	x.SetInventory(inv)
	inv.put(x, "a", "10.0.0.1", "203.0.113.1")
	inv.put(x, "b", "10.0.0.2", "10.0.0.1") // b's document claims a's interface address

	tests := []struct {
		ip   string
		want string // "" = nobody
	}{
		{"10.0.0.1", "a"}, // the interface wins over b's document
		{"10.0.0.2", "b"},
		{"203.0.113.1", "a"}, // a's document address
		{"::ffff:203.0.113.1", "a"},
		{"198.51.100.1", ""},
	}
	check := func() {
		t.Helper()
		for _, tt := range tests {
			p, ok := x.Lookup(netip.MustParseAddr(tt.ip))
			got := ""
			if ok {
				got = p.ID
			}
			if got != tt.want {
				t.Errorf("Lookup(%s) = %q, want %q", tt.ip, got, tt.want)
			}
		}
	}
	check()

	// a's document address moves: the old one answers nobody.
	inv.put(x, "a", "10.0.0.1", "203.0.113.9")
	tests[2].want, tests[3].want = "", ""
	tests = append(tests, struct{ ip, want string }{"203.0.113.9", "a"})
	check()

	// a is deleted: its document address answers nobody.
	delete(inv.byID, "a")
	delete(inv.byIP, netip.MustParseAddr("10.0.0.1"))
	tests[len(tests)-1].want = ""
	// 10.0.0.1 is now only in b's document, so it is b's.
	if p, ok := x.Lookup(netip.MustParseAddr("10.0.0.1")); !ok || p.ID != "b" {
		t.Errorf("after a's deletion, 10.0.0.1 (b's document address) = %v, %v; want b", p, ok)
	}
	tests = tests[1:]
	check()

	// c's document lists c's own interface address: found through the
	// inventory's index, with no entry of the index's own.
	inv.put(x, "c", "10.0.0.3", "10.0.0.3")
	if _, held := x.extra[netip.MustParseAddr("10.0.0.3")]; held {
		t.Error("an interface address listed in the document got an entry of its own")
	}
	if p, ok := x.Lookup(netip.MustParseAddr("10.0.0.3")); !ok || p.ID != "c" {
		t.Errorf("Lookup(10.0.0.3) = %v, %v; want c", p, ok)
	}
}
