package leases

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestBook(t *testing.T) {
	now := time.Unix(1000, 0)
	b := New(2, time.Hour)
	b.now = func() time.Time { return now }
	a := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	c := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	d := net.HardwareAddr{2, 0, 0, 0, 0, 3}
	ip := netip.MustParseAddr

	b.Learn(a, ip("10.0.5.100"))
	if got, ok := b.Address(a); !ok || got != ip("10.0.5.100") {
		t.Fatalf("Address(a) = %v %v", got, ok)
	}
	if got, ok := b.MAC(ip("10.0.5.100")); !ok || got.String() != a.String() {
		t.Fatalf("MAC = %v %v", got, ok)
	}
	// a moves: its old address is no longer its.
	b.Learn(a, ip("10.0.5.101"))
	if _, ok := b.MAC(ip("10.0.5.100")); ok {
		t.Fatal("the old address still maps to a")
	}
	// c takes a's address: a loses it.
	b.Learn(c, ip("10.0.5.101"))
	if _, ok := b.Address(a); ok {
		t.Fatal("a still holds the address c took")
	}
	if got, _ := b.MAC(ip("::ffff:10.0.5.101")); got.String() != c.String() {
		t.Fatalf("mapped lookup: %v", got)
	}
	// Full of live entries: a new MAC is not learned, the old ones stay.
	b.Learn(a, ip("10.0.5.102"))
	b.Learn(d, ip("10.0.5.103"))
	if _, ok := b.Address(d); ok || b.Len() != 2 {
		t.Fatalf("learned beyond max: %d entries", b.Len())
	}
	// Expired entries are forgotten and make room.
	now = now.Add(time.Hour)
	if _, ok := b.Address(a); ok {
		t.Fatal("expired entry still answers")
	}
	b.Learn(d, ip("10.0.5.103"))
	if _, ok := b.Address(d); !ok || b.Len() != 1 {
		t.Fatalf("after expiry: %d entries", b.Len())
	}
	var none *Book
	if _, ok := none.Address(a); ok {
		t.Fatal("nil book answers")
	}
	if _, ok := none.MAC(ip("10.0.5.103")); ok {
		t.Fatal("nil book answers")
	}
}
