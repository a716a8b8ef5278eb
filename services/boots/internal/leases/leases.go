// Package leases remembers the address each known machine took from
// another DHCP server, as herd-boots' proxy mode sees its DHCPREQUESTs: in
// proxy mode a machine's own address is that one, not the reservation in
// its hardware record. The HTTP side accepts a machine's boot events from
// it, the syslog side names the machine by it.
//
// What it learns is only as trustworthy as DHCP on the link: a host that
// forges a DHCPREQUEST with a machine's MAC makes its own address that
// machine's (docs/security.md). Reservation mode needs none of it.
package leases

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Book maps MACs to the address last seen requested, and back. It holds
// at most max entries (the DHCP side learns only MACs the inventory has);
// an entry older than ttl is forgotten.
type Book struct {
	mu    sync.RWMutex
	max   int
	ttl   time.Duration
	now   func() time.Time
	byMAC map[[6]byte]entry
	byIP  map[netip.Addr][6]byte
}

type entry struct {
	ip   netip.Addr
	seen time.Time
}

// New returns a Book of at most max entries kept for ttl.
func New(max int, ttl time.Duration) *Book {
	return &Book{max: max, ttl: ttl, now: time.Now, byMAC: map[[6]byte]entry{}, byIP: map[netip.Addr][6]byte{}}
}

func key(mac net.HardwareAddr) ([6]byte, bool) {
	if len(mac) != 6 {
		return [6]byte{}, false
	}
	return [6]byte(mac), true
}

// Learn records that mac takes ip; a MAC that held another address, and a
// MAC that held ip, lose theirs.
func (b *Book) Learn(mac net.HardwareAddr, ip netip.Addr) {
	k, ok := key(mac)
	if !ok || !ip.IsValid() {
		return
	}
	ip = ip.Unmap()
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.byMAC[k]; ok {
		delete(b.byIP, old.ip)
	}
	if other, ok := b.byIP[ip]; ok && other != k {
		delete(b.byMAC, other)
	}
	if _, ok := b.byMAC[k]; !ok && len(b.byMAC) >= b.max {
		b.sweep(now)
		if len(b.byMAC) >= b.max {
			return // full of live entries: keep them
		}
	}
	b.byMAC[k] = entry{ip, now}
	b.byIP[ip] = k
}

// sweep forgets expired entries; b.mu is held.
func (b *Book) sweep(now time.Time) {
	for k, e := range b.byMAC {
		if now.Sub(e.seen) >= b.ttl {
			delete(b.byMAC, k)
			delete(b.byIP, e.ip)
		}
	}
}

// Address is the address mac was last seen taking, if not expired. A nil
// Book knows none.
func (b *Book) Address(mac net.HardwareAddr) (netip.Addr, bool) {
	k, ok := key(mac)
	if !ok || b == nil {
		return netip.Addr{}, false
	}
	b.mu.RLock()
	e, ok := b.byMAC[k]
	b.mu.RUnlock()
	if !ok || b.now().Sub(e.seen) >= b.ttl {
		return netip.Addr{}, false
	}
	return e.ip, true
}

// MAC is the MAC last seen taking ip, if not expired. A nil Book knows
// none.
func (b *Book) MAC(ip netip.Addr) (net.HardwareAddr, bool) {
	if b == nil {
		return nil, false
	}
	ip = ip.Unmap()
	b.mu.RLock()
	k, ok := b.byIP[ip]
	e := b.byMAC[k]
	b.mu.RUnlock()
	if !ok || e.ip != ip || b.now().Sub(e.seen) >= b.ttl {
		return nil, false
	}
	return net.HardwareAddr(k[:]), true
}

// Len is how many entries the book holds (expired ones included until
// swept).
func (b *Book) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.byMAC)
}
