package dhcp

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/herd-metal/herd/pkg/inventory"
)

// fakeNames is a resolver cache with fixed answers; it records what it was
// asked.
type fakeNames struct {
	addrs map[string][]netip.Addr
	asked []string
}

func (f *fakeNames) Addrs(name string) []netip.Addr {
	f.asked = append(f.asked, name)
	return f.addrs[name]
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// Option 42 of a prepared record: time servers given by address as
// before, those given by host name with the addresses the cache has for
// them, in the record's order; IPv6 addresses and names the cache does
// not know (yet) left out; without a cache (Prepare) names are left out.
func TestTimeServersByName(t *testing.T) {
	names := map[string][]netip.Addr{
		"ntp.lab":        addrs("10.0.5.124", "10.0.5.125"),
		"0.pool.ntp.org": addrs("192.0.2.7"),
		"v6only.lab":     addrs("fd00::123"),
		"mixed.lab":      addrs("fd00::124", "10.0.5.126"),
		"dup.lab":        addrs("10.0.5.124", "10.0.5.123"),
	}
	tests := []struct {
		name    string
		servers []string
		noCache bool
		want    []byte // option 42's value; nil: no option 42
		asked   []string
	}{
		{"addresses only", []string{"10.0.5.123"}, false, []byte{10, 0, 5, 123}, nil},
		{"name between addresses", []string{"10.0.5.123", "ntp.lab", "fd00::1", "10.0.5.127"}, false,
			[]byte{10, 0, 5, 123, 10, 0, 5, 124, 10, 0, 5, 125, 10, 0, 5, 127}, []string{"ntp.lab"}},
		{"v0.6's example", []string{"0.pool.ntp.org"}, false, []byte{192, 0, 2, 7}, []string{"0.pool.ntp.org"}},
		{"unknown name skipped", []string{"new.lab", "10.0.5.123"}, false, []byte{10, 0, 5, 123}, []string{"new.lab"}},
		{"only unknown names: no option 42", []string{"new.lab"}, false, nil, []string{"new.lab"}},
		{"IPv6 answers skipped", []string{"v6only.lab", "mixed.lab"}, false, []byte{10, 0, 5, 126}, []string{"v6only.lab", "mixed.lab"}},
		{"shared addresses given once", []string{"10.0.5.123", "ntp.lab", "dup.lab"}, false,
			[]byte{10, 0, 5, 123, 10, 0, 5, 124, 10, 0, 5, 125}, []string{"ntp.lab", "dup.lab"}},
		{"name as written, case kept", []string{"NTP.lab"}, false, nil, []string{"NTP.lab"}},
		{"garbage never asked", []string{"not a name", "10.0.5.300"}, false, nil, nil},
		{"no cache: names left out", []string{"ntp.lab", "10.0.5.123"}, true, []byte{10, 0, 5, 123}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := machine("hw-1", macBIOS, "10.0.5.10", true).Hardware()
			rec.Network.Interfaces[0].Dhcp.TimeServers = tc.servers
			f := &fakeNames{addrs: names}
			var derived any
			if tc.noCache {
				derived = Prepare(rec)
			} else {
				derived = Preparer{Names: f}.Prepare(rec)
			}
			m := inventory.NewMachine(rec, "", derived)
			h := NewHandler(Config{Mode: Reservation, ServerID: serverIP, Boot: bootCfg, UserClass: "herd", DefaultLease: time.Hour},
				fakeMachines{macBIOS.String(): m}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			offer, _ := roundTrip(t, h, mustParse(t, goldenPXEDiscover(t)), false)
			if offer == nil {
				t.Fatal("no offer")
			}
			got := offer.GetOneOption(dhcpv4.OptionNTPServers)
			if !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Errorf("option 42 = %v, want %v", got, tc.want)
			}
			if len(f.asked) != len(tc.asked) {
				t.Fatalf("cache asked for %q, want %q", f.asked, tc.asked)
			}
			for i := range f.asked {
				if f.asked[i] != tc.asked[i] {
					t.Errorf("cache asked for %q, want %q", f.asked, tc.asked)
				}
			}
			// Answering asks the cache nothing: the names were read once,
			// when the record was prepared.
			before := len(f.asked)
			roundTrip(t, h, mustParse(t, goldenPXEDiscover(t)), false)
			if len(f.asked) != before {
				t.Errorf("a packet asked the cache: %q", f.asked[before:])
			}
		})
	}
	// Preparer satisfies the inventory's derive hook.
	var _ = inventory.New(slog.New(slog.DiscardHandler), Preparer{}.Prepare)
}
