package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The OVH layout: the provider's network on the first NIC, herd's on the
// second (herd-boots reserves 10.88.0.50, herd-metadata on 10.88.0.1).
var (
	provider = Lease{NIC: "eth0", Index: 2, NetConfig: NetConfig{
		Addr: netip.MustParsePrefix("10.89.0.23/24"), Gateway: netip.MustParseAddr("10.89.0.1"),
		DNS: []netip.Addr{netip.MustParseAddr("10.89.0.1")}, Server: net.IPv4(10, 89, 0, 1)}}
	herdNet = Lease{NIC: "eth1", Index: 3, NetConfig: NetConfig{
		Addr: netip.MustParsePrefix("10.88.0.50/24"), Gateway: netip.MustParseAddr("10.88.0.1"),
		DNS: []netip.Addr{netip.MustParseAddr("10.88.0.1"), netip.MustParseAddr("10.89.0.1")}, Server: net.IPv4(10, 88, 0, 1)}}
	noRouter = Lease{NIC: "eth1", Index: 3, NetConfig: NetConfig{
		Addr: netip.MustParsePrefix("10.88.0.50/24"), Server: net.IPv4(10, 88, 0, 1)}}
	qemuUser = Lease{NIC: "eth0", Index: 2, NetConfig: NetConfig{
		Addr: netip.MustParsePrefix("10.0.2.15/24"), Gateway: netip.MustParseAddr("10.0.2.2"), Server: net.IPv4(10, 0, 2, 2)}}
)

func TestMetadataCandidates(t *testing.T) {
	const path = "/2009-04-04/meta-data/hostname"
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name   string
		base   string
		leases []Lease
		want   []Candidate
		err    string
	}{
		{"one NIC, no URL: its DHCP server", "", []Lease{qemuUser},
			[]Candidate{{"http://10.0.2.2:50061" + path, "eth0", a("10.0.2.15")}}, ""},
		{"one NIC, URL on its subnet", "http://10.0.2.2:8080/", []Lease{qemuUser},
			[]Candidate{{"http://10.0.2.2:8080" + path, "eth0", a("10.0.2.15")}}, ""},
		{"OVH, no URL: each DHCP server in NIC order", "", []Lease{provider, herdNet},
			[]Candidate{{"http://10.89.0.1:50061" + path, "eth0", a("10.89.0.23")}, {"http://10.88.0.1:50061" + path, "eth1", a("10.88.0.50")}}, ""},
		{"OVH, URL on the second NIC's subnet: that NIC only", "http://10.88.0.1:50061", []Lease{provider, herdNet},
			[]Candidate{{"http://10.88.0.1:50061" + path, "eth1", a("10.88.0.50")}}, ""},
		{"URL on no leased subnet: the default route's NIC", "http://10.7.0.1:50061", []Lease{provider, herdNet},
			[]Candidate{{"http://10.7.0.1:50061" + path, "eth0", a("10.89.0.23")}}, ""},
		{"URL on no leased subnet and no router: no NIC to name", "http://10.7.0.1:50061", []Lease{noRouter},
			[]Candidate{{URL: "http://10.7.0.1:50061" + path}}, ""},
		{"URL with a host name: the resolver decides", "http://metadata.herd:50061", []Lease{provider, herdNet},
			[]Candidate{{"http://metadata.herd:50061" + path, "", netip.Addr{}}}, ""},
		{"two NICs, same DHCP server: asked once", "", []Lease{herdNet, {NIC: "eth2", NetConfig: NetConfig{Addr: netip.MustParsePrefix("10.88.0.51/24"), Server: net.IPv4(10, 88, 0, 1)}}},
			[]Candidate{{"http://10.88.0.1:50061" + path, "eth1", a("10.88.0.50")}}, ""},
		{"lease without a server skipped", "", []Lease{{NIC: "eth0", NetConfig: NetConfig{Addr: netip.MustParsePrefix("10.89.0.9/24")}}, herdNet},
			[]Candidate{{"http://10.88.0.1:50061" + path, "eth1", a("10.88.0.50")}}, ""},
		{"no URL, no server", "", []Lease{{NIC: "eth0", NetConfig: NetConfig{Addr: netip.MustParsePrefix("10.89.0.9/24")}}}, nil, "no lease names a DHCP server"},
		{"no URL, no lease", "", nil, nil, "no lease names a DHCP server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MetadataCandidates(tc.base, tc.leases)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDefaultRoute(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leases []Lease
		want   string // NIC, "" for none
	}{
		{"OVH: the provider's, not herd's", []Lease{provider, herdNet}, "eth0"},
		{"first lease has no router", []Lease{noRouter, provider}, "eth0"},
		{"no router anywhere", []Lease{noRouter}, ""},
		{"no lease", nil, ""},
	} {
		l, ok := DefaultRoute(tc.leases)
		if ok != (tc.want != "") || l.NIC != tc.want {
			t.Errorf("%s: got %q %v, want %q", tc.name, l.NIC, ok, tc.want)
		}
	}
}

func TestResolvConfMergesLeases(t *testing.T) {
	if got, want := ResolvConf(provider.NetConfig, herdNet.NetConfig), "nameserver 10.89.0.1\nnameserver 10.88.0.1\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := ResolvConf(); got != "" {
		t.Fatalf("no lease: %q", got)
	}
}

func TestLeaseLineAndCandidateErrors(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:57")
	if got, want := LeaseLine(noRouter, mac), "DHCP lease on eth1 (52:54:00:12:34:57): addr=10.88.0.50/24 gateway=none server=10.88.0.1"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	cands := []Candidate{{URL: "http://10.89.0.1:50061/x", NIC: "eth0", Src: netip.MustParseAddr("10.89.0.23")}, {URL: "http://m:1/x"}}
	err := CandidateErrors(cands, []error{errors.New("connection refused"), errors.New("404 Not Found")})
	if want := "connection refused [via eth0 10.89.0.23]; 404 Not Found"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if CandidateErrors(cands, []error{nil, nil}) != nil {
		t.Error("no failure made an error")
	}
}

// TestFetchHostnameTriesEachCandidate: the provider's DHCP server refuses
// (nothing listens), herd-metadata answers 404 until it knows the machine.
func TestFetchHostnameTriesEachCandidate(t *testing.T) {
	refused := httptest.NewServer(http.NotFoundHandler())
	refusedURL := refused.URL
	refused.Close()
	var calls atomic.Int32
	herd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "no hardware for 127.0.0.1", http.StatusNotFound)
			return
		}
		_, _ = w.Write([]byte("vm-ovh-1\n"))
	}))
	defer herd.Close()
	cands := []Candidate{{URL: refusedURL + "/h", NIC: "eth0"}, {URL: herd.URL + "/h", NIC: "eth1"}}
	var logged []string
	logf := func(f string, args ...any) { logged = append(logged, fmt.Sprintf(f, args...)) }
	name, from, err := fetchHostname(context.Background(), cands, time.Minute, logf)
	if err != nil || name != "vm-ovh-1" || from.NIC != "eth1" {
		t.Fatalf("got %q from %+v, %v", name, from, err)
	}
	// The first round's failures, once each: the refusal and the first 404.
	if len(logged) != 2 || !strings.Contains(logged[0], "via eth0") || !strings.Contains(logged[1], "404") {
		t.Errorf("logged %q", logged)
	}

	// Nobody answers: every candidate's failure is in the error.
	_, _, err = fetchHostname(context.Background(), cands[:1], time.Second, logf)
	if err == nil || !strings.Contains(err.Error(), "[via eth0") || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("error %v", err)
	}
}
