package clientip

import (
	"net/netip"
	"testing"
)

func TestClient(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string // "" = not identified
	}{
		{"plain peer", "192.0.2.10:5555", nil, nil, "192.0.2.10"},
		{"ipv6 peer", "[2001:db8::10]:5555", nil, nil, "2001:db8::10"},
		{"mapped ipv4 peer", "[::ffff:192.0.2.10]:5555", nil, nil, "192.0.2.10"},
		{"zoned peer", "[fe80::1%eth0]:5555", nil, nil, "fe80::1"},
		{"bad peer", "nonsense", nil, nil, ""},
		{"peer without port", "192.0.2.10", nil, nil, ""},
		{"forged header, no proxies configured", "192.0.2.10:5555", []string{"192.0.2.99"}, nil, "192.0.2.10"},
		{"forged header from untrusted peer", "192.0.2.10:5555", []string{"192.0.2.99"}, proxies, "192.0.2.10"},
		{"garbage header from untrusted peer", "192.0.2.10:5555", []string{"\x00garbage, ,"}, proxies, "192.0.2.10"},
		{"trusted proxy", "10.0.0.5:5555", []string{"192.0.2.99"}, proxies, "192.0.2.99"},
		{"trusted proxy, right-most untrusted wins", "10.0.0.5:5555", []string{"198.51.100.1, 192.0.2.99"}, proxies, "192.0.2.99"},
		{"chain of trusted proxies", "10.0.0.5:5555", []string{"192.0.2.99, 10.0.0.7,10.0.0.6"}, proxies, "192.0.2.99"},
		{"several header lines: the last is right-most", "10.0.0.5:5555", []string{"198.51.100.1", "192.0.2.99, 10.0.0.6"}, proxies, "192.0.2.99"},
		{"spoofed left part ignored", "10.0.0.5:5555", []string{"10.0.0.9, 203.0.113.5, 10.0.0.6"}, proxies, "203.0.113.5"},
		{"all trusted: left-most", "10.0.0.5:5555", []string{"10.0.0.9, 10.0.0.6"}, proxies, "10.0.0.9"},
		{"proxy sent no header", "10.0.0.5:5555", nil, proxies, "10.0.0.5"},
		{"empty header", "10.0.0.5:5555", []string{""}, proxies, "10.0.0.5"},
		{"entry with port", "10.0.0.5:5555", []string{"192.0.2.99:4711"}, proxies, "192.0.2.99"},
		{"ipv6 entry with port", "10.0.0.5:5555", []string{"[2001:db8::9]:4711"}, proxies, "2001:db8::9"},
		{"ipv6 proxy", "[fd00::2]:5555", []string{"2001:db8::9"}, proxies, "2001:db8::9"},
		{"malformed right-most entry identifies nobody", "10.0.0.5:5555", []string{"192.0.2.99, not-an-ip"}, proxies, ""},
		{"malformed entry left of the client is ignored", "10.0.0.5:5555", []string{"not-an-ip, 192.0.2.99"}, proxies, "192.0.2.99"},
		{"empty elements skipped", "10.0.0.5:5555", []string{" , 192.0.2.99 ,, "}, proxies, "192.0.2.99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Client(tt.remote, tt.xff, tt.trusted)
			if tt.want == "" {
				if ok {
					t.Fatalf("Client = %v, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("Client = %v, %v; want %s", got, ok, tt.want)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "", want: nil},
		{in: " , ", want: nil},
		{in: "10.0.0.0/8", want: []string{"10.0.0.0/8"}},
		{in: "10.0.0.1/8, 192.0.2.1, fd00::/64, ::1", want: []string{"10.0.0.0/8", "192.0.2.1/32", "fd00::/64", "::1/128"}},
		{in: "::ffff:192.0.2.1", want: []string{"192.0.2.1/32"}},
		{in: "10.0.0.0/33", wantErr: true},
		{in: "example.com", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParsePrefixes(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePrefixes(%q) error %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("ParsePrefixes(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i].String() != tt.want[i] {
				t.Errorf("ParsePrefixes(%q)[%d] = %v, want %s", tt.in, i, got[i], tt.want[i])
			}
		}
	}
}

func TestClientAllocs(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	xff := []string{"198.51.100.1, 192.0.2.99, 10.0.0.6"}
	n := testing.AllocsPerRun(100, func() { Client("10.0.0.5:5555", xff, proxies) })
	if n != 0 {
		t.Errorf("Client allocates %v times per call", n)
	}
}

// Whatever a peer sends, Client neither panics nor names an address that
// is neither the peer nor one written in the header.
func FuzzClient(f *testing.F) {
	f.Add("10.0.0.5:5555", "192.0.2.99, 10.0.0.6")
	f.Add("[fd00::2]:1", "[2001:db8::9]:4711,,")
	f.Add("x", "\x00")
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		a, ok := Client(remote, []string{xff}, proxies)
		if !ok {
			return
		}
		peer, _ := Peer(remote)
		if a != peer && !proxies[0].Contains(peer) && !proxies[1].Contains(peer) {
			t.Fatalf("untrusted peer %v, client %v", peer, a)
		}
	})
}
