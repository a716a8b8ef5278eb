package syslog

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Message
		ok   bool
	}{
		{"<190>ipxe: Downloading kernel", Message{Facility: 23, Severity: 6, App: "ipxe", Text: "Downloading kernel"}, true},
		{"<13>Nov 27 04:39:37 node1 herd-worker[42]: action 1 started", Message{Facility: 1, Severity: 5, Hostname: "node1", App: "herd-worker", Text: "action 1 started"}, true},
		{"<34>1 2026-11-27T04:39:37Z node1 osie 1 - - disk wiped", Message{Facility: 4, Severity: 2, Hostname: "node1", App: "osie", Text: "disk wiped", RFC5424: true}, true},
		{`<34>1 2026-11-27T04:39:37Z node1 osie - ID1 [x@1 a="b"] with sd`, Message{Facility: 4, Severity: 2, Hostname: "node1", App: "osie", Text: "with sd", RFC5424: true}, true},
		{"<34>1 - - - - - -", Message{Facility: 4, Severity: 2, RFC5424: true}, true},
		{"no pri", Message{}, false},
		{"<999>x", Message{}, false},
		{"<>x", Message{}, false},
		// Strict PRIVAL (issue 14, finding 6): 1 to 3 digits, 0..191,
		// nothing else.
		{"<0>kern: x", Message{App: "kern", Text: "x"}, true},
		{"<191>x", Message{Facility: 23, Severity: 7, Text: "x"}, true},
		{"<007>x", Message{Severity: 7, Text: "x"}, true},
		{"<192>x", Message{}, false},
		{"<-1>x", Message{}, false},
		{"<+1>x", Message{}, false},
		{"<-0>x", Message{}, false},
		{"< 1>x", Message{}, false},
		{"<1 >x", Message{}, false},
		{"<1a>x", Message{}, false},
		{"<0x1>x", Message{}, false},
		{"<1000>x", Message{}, false},
		{"<１>x", Message{}, false}, // a fullwidth digit
	}
	for _, tt := range tests {
		got, ok := Parse([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("Parse(%q) = %+v %v, want %+v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("<190>ipxe: x"))
	f.Add([]byte("<34>1 2026-11-27T04:39:37Z node1 osie - ID1 [x@1 a=\"]\"] m"))
	f.Add([]byte("<-1>x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := Parse(b)
		if ok && (m.Facility < 0 || m.Facility > 23 || m.Severity < 0 || m.Severity > 7) {
			t.Fatalf("%q: facility %d severity %d", b, m.Facility, m.Severity)
		}
	})
}

func TestLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a, b := netip.MustParseAddr("10.0.5.10"), netip.MustParseAddr("10.0.5.11")
	l := newLimiter(2, 5, 3)
	took := func(src netip.Addr, at time.Duration, n int) int {
		k := 0
		for range n {
			if l.allow(src, t0.Add(at)) {
				k++
			}
		}
		return k
	}
	if got := took(a, 0, 50); got != 5 {
		t.Fatalf("burst: %d of 50 let through, want 5", got)
	}
	if got := took(b, 0, 3); got != 3 {
		t.Fatalf("another source: %d of 3", got)
	}
	if got := took(a, time.Second, 10); got != 2 {
		t.Fatalf("after 1 s at 2/s: %d", got)
	}
	if got := took(a, time.Hour, 10); got != 5 {
		t.Fatalf("refilled to the burst, not beyond: %d", got)
	}
	// A flood of new sources: bounded map, and the ones beyond share one
	// bucket.
	for i := range 1000 {
		l.allow(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), t0.Add(time.Hour))
	}
	if len(l.buckets) > 3 {
		t.Fatalf("%d sources remembered, max 3", len(l.buckets))
	}
	if got := took(netip.MustParseAddr("10.2.0.1"), time.Hour, 10); got != 0 {
		t.Fatalf("a new source beyond max got %d through the spent shared bucket", got)
	}
	// Quiet sources are forgotten once their bucket is full again.
	if got := took(netip.MustParseAddr("10.2.0.1"), 2*time.Hour, 1); got != 1 {
		t.Fatalf("after the sources went quiet: %d", got)
	}
	if _, ok := l.buckets[netip.MustParseAddr("10.2.0.1")]; !ok {
		t.Fatalf("the new source has no bucket of its own: %v", fmt.Sprint(len(l.buckets)))
	}
	if off := newLimiter(0, 0, 0); !off.allow(a, t0) {
		t.Fatal("rate 0 limits")
	}
}
