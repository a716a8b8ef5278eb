// Package machines finds the prepared answers of the machine behind an IP:
// first among the interface addresses the shared inventory indexes, then
// among the addresses the machines' metadata documents give them
// (instance.ip_addresses), which the inventory does not index.
package machines

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/metadata/internal/ec2"
)

// Inventory is what the index needs of pkg/inventory.
type Inventory interface {
	ByIP(netip.Addr) (inventory.Machine, bool)
	ByID(string) (inventory.Machine, bool)
}

// Index answers "whose is this IP". Give Derive to inventory.New and the
// inventory to SetInventory before serving.
type Index struct {
	inv  Inventory
	tree *ec2.Tree

	mu sync.RWMutex
	// extra maps a metadata-document address to the id of the record that
	// last claimed it. Entries are checked against the current record at
	// lookup, so one left behind by a change or a deletion answers nothing.
	extra map[netip.Addr]string
}

// New returns an empty index.
func New() *Index { return &Index{extra: map[netip.Addr]string{}, tree: ec2.NewTree()} }

// SetInventory sets the inventory the index reads (it is built with
// Derive, so it comes second).
func (x *Index) SetInventory(inv Inventory) { x.inv = inv }

// Derive is the inventory's derive hook: it prepares every answer of the
// record (see ec2.Tree.Prepare) and notes its metadata addresses.
func (x *Index) Derive(hw *hardware.Hardware) any {
	p := x.tree.Prepare(hw)
	var own []netip.Addr
	if len(p.Addresses) > 0 {
		own = interfaceAddrs(hw)
	}
	x.mu.Lock()
	for _, a := range p.Addresses {
		// An address of the record's own interfaces is found in the
		// inventory's index first: an entry for it would never answer
		// (and takes memory on every machine of a fleet that lists its
		// interface address in its document too).
		if !slices.Contains(own, a) {
			x.extra[a] = hw.GetId()
		}
	}
	x.mu.Unlock()
	return p
}

// interfaceAddrs are the addresses the inventory indexes hw by (as
// pkg/inventory reads them).
func interfaceAddrs(hw *hardware.Hardware) []netip.Addr {
	_, ips := spec.HardwareAddresses(hw)
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Lookup returns the answers of the machine with address ip. An address
// on a machine's interfaces wins over one written in a metadata document.
func (x *Index) Lookup(ip netip.Addr) (*ec2.Prepared, bool) {
	ip = ip.Unmap()
	if m, ok := x.inv.ByIP(ip); ok {
		p, ok := m.Derived.(*ec2.Prepared)
		return p, ok
	}
	x.mu.RLock()
	id, ok := x.extra[ip]
	x.mu.RUnlock()
	if !ok {
		return nil, false
	}
	m, ok := x.inv.ByID(id)
	if !ok {
		return nil, false
	}
	p, ok := m.Derived.(*ec2.Prepared)
	if !ok || !slices.Contains(p.Addresses, ip) {
		return nil, false
	}
	return p, true
}
