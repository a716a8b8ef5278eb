package ui

import (
	"fmt"
	"testing"
	"time"
)

func TestLoginAdmit(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	const every = 10 * time.Second
	for _, tc := range []struct {
		name  string
		paid  time.Time
		burst int
		ok    bool
		wait  time.Duration
	}{
		{"never wrong", time.Time{}, 5, true, 0},
		{"paid off", now.Add(-time.Minute), 5, true, 0},
		{"one wrong", now.Add(every), 5, true, 0},
		{"four wrong: the fifth try allowed", now.Add(4 * every), 5, true, 0},
		{"five wrong: refused for one period", now.Add(5 * every), 5, false, every},
		{"five wrong, 3 s ago", now.Add(5*every - 3*time.Second), 5, false, every - 3*time.Second},
		{"burst of one, one wrong", now.Add(every), 1, false, every},
		{"burst of one, paid now", now, 1, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, wait := loginAdmit(tc.paid, now, tc.burst, every)
			if ok != tc.ok || wait != tc.wait {
				t.Fatalf("loginAdmit = %v, %v; want %v, %v", ok, wait, tc.ok, tc.wait)
			}
		})
	}
}

func TestLoginCharge(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		paid, want time.Time
	}{
		{"first", time.Time{}, now.Add(time.Second)},
		{"paid off long ago", now.Add(-time.Hour), now.Add(time.Second)},
		{"in debt", now.Add(3 * time.Second), now.Add(4 * time.Second)},
	} {
		if got := loginCharge(tc.paid, now, time.Second); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLoginSource(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:5000":              "10.0.0.1",
		"[::ffff:10.0.0.1]:5000":     "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[fe80::1%eth0]:1":           "fe80::/64",
		"not an address":             "not an address",
		"@":                          "@",
	} {
		if got := loginSource(in); got != want {
			t.Errorf("loginSource(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoginLimiterBounded(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	l := newLoginLimiter(2, time.Second, 3, func() time.Time { return now })
	l.charge("a")
	l.charge("a")
	if ok, _ := l.admit("a"); ok {
		t.Fatal("a: two wrong with a burst of two, still admitted")
	}
	if ok, _ := l.admit("b"); !ok {
		t.Fatal("b refused for a's tries")
	}
	for i := range 10 {
		l.charge(fmt.Sprint("spray-", i))
	}
	if n := l.len(); n > 3 {
		t.Fatalf("%d sources kept, want at most 3", n)
	}
	now = now.Add(time.Minute)
	l.charge("c")
	if n := l.len(); n != 1 {
		t.Fatalf("%d sources after every debt was paid off and one new, want 1", n)
	}
}
