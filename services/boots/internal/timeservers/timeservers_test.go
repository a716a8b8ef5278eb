package timeservers

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"google.golang.org/grpc"

	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/dhcp"
)

// fakeResolver answers from a table a test changes; it never touches the
// network. It counts lookups.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	errs    map[string]error
	lookups map[string]int
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{answers: map[string][]netip.Addr{}, errs: map[string]error{}, lookups: map[string]int{}}
}

func (f *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if network != "ip4" {
		return nil, fmt.Errorf("asked for %s, want ip4", network)
	}
	f.lookups[host]++
	if err := f.errs[host]; err != nil {
		return nil, err
	}
	if a, ok := f.answers[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (f *fakeResolver) set(host string, addrs []netip.Addr, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host], f.errs[host] = addrs, err
}

func (f *fakeResolver) count(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups[host]
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// logBuffer collects log lines, safely for concurrent writers.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the lines holding every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		all := line != ""
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuffer) reset() {
	l.mu.Lock()
	l.b.Reset()
	l.mu.Unlock()
}

func TestUsable(t *testing.T) {
	tests := []struct {
		name    string
		in      []netip.Addr
		max     int
		want    []netip.Addr
		skipped []string
	}{
		{"IPv4 kept in order", addrs("192.0.2.2", "192.0.2.1"), 8, addrs("192.0.2.2", "192.0.2.1"), nil},
		{"IPv6 left out", addrs("2001:db8::1", "192.0.2.1"), 8, addrs("192.0.2.1"), []string{"2001:db8::1 (IPv6: option 42 carries IPv4 only)"}},
		{"IPv4-mapped taken as IPv4", addrs("::ffff:192.0.2.1"), 8, addrs("192.0.2.1"), nil},
		{"loopback left out (localhost)", addrs("127.0.0.1", "127.0.1.1"), 8, nil,
			[]string{"127.0.0.1 (loopback: the machine would ask itself)", "127.0.1.1 (loopback: the machine would ask itself)"}},
		{"unspecified, multicast, broadcast", addrs("0.0.0.0", "224.0.1.1", "255.255.255.255", "10.0.0.1"), 8, addrs("10.0.0.1"),
			[]string{"0.0.0.0 (unspecified)", "224.0.1.1 (multicast)", "255.255.255.255 (broadcast)"}},
		{"repeats once", addrs("10.0.0.1", "10.0.0.1"), 8, addrs("10.0.0.1"), nil},
		{"bounded", addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"), 2, addrs("10.0.0.1", "10.0.0.2"),
			[]string{"10.0.0.3 (beyond the 2 addresses kept per name)"}},
		{"nothing", nil, 8, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped := Usable(tc.in, tc.max)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || strings.Join(skipped, "|") != strings.Join(tc.skipped, "|") {
				t.Errorf("Usable(%v, %d) = %v, %q; want %v, %q", tc.in, tc.max, got, skipped, tc.want, tc.skipped)
			}
		})
	}
}

func record(id, mac, ip string, timeServers ...string) *hardware.Hardware {
	return &hardware.Hardware{Id: id, Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
		Dhcp: &hardware.Hardware_DHCP{Mac: mac, TimeServers: timeServers, LeaseTime: 3600,
			Ip: &hardware.Hardware_DHCP_IP{Address: ip, Netmask: "255.255.255.0"}},
	}}}}
}

func TestNames(t *testing.T) {
	hw := record("a", "52:54:00:00:00:01", "10.0.5.10", "10.0.5.123", "NTP.lab", "ntp.lab", "0.pool.ntp.org", "fd00::1", "10.0.5.300")
	hw.Network.Interfaces = append(hw.Network.Interfaces, &hardware.Hardware_Network_Interface{
		Dhcp: &hardware.Hardware_DHCP{Mac: "52:54:00:00:00:02", TimeServers: []string{"other.lab", "ntp.lab"}}}, nil)
	if got := strings.Join(Names(hw), ","); got != "ntp.lab,0.pool.ntp.org,other.lab" {
		t.Errorf("Names = %s", got)
	}
	if Names(nil) != nil {
		t.Error("Names(nil)")
	}
}

// watcher feeds a real inventory from a channel, as herd-server's Watch
// would.
type watcher struct{ events chan *hardware.WatchEvent }

type stream struct {
	grpc.ClientStream
	ctx    context.Context
	events chan *hardware.WatchEvent
}

func (s *stream) Recv() (*hardware.WatchEvent, error) {
	select {
	case ev := <-s.events:
		return ev, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

func (w *watcher) Watch(ctx context.Context, _ *hardware.WatchRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[hardware.WatchEvent], error) {
	return &stream{ctx: ctx, events: w.events}, nil
}

// rig is herd-boots' DHCP side as main wires it: a real inventory whose
// derive function is dhcp.Preparer over the cache, and a DHCP handler
// answering from it.
type rig struct {
	t     *testing.T
	inv   *inventory.Inventory
	cache *Cache
	h     *dhcp.Handler
	w     *watcher
	logs  *logBuffer
}

func newRig(t *testing.T, res Resolver, cfg Config) *rig {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cache := New(res, log, cfg)
	inv := inventory.New(log, dhcp.Preparer{Names: cache}.Prepare)
	w := &watcher{events: make(chan *hardware.WatchEvent)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = inv.Run(ctx, w) }()
	t.Cleanup(func() { cancel(); <-done })
	server := net.IPv4(10, 0, 5, 1).To4()
	h := dhcp.NewHandler(dhcp.Config{Mode: dhcp.Reservation, ServerID: server, DefaultLease: time.Hour,
		Boot: dhcp.BootConfig{NextServer: server, HTTPBase: "http://10.0.5.1"}}, inv, log, nil)
	r := &rig{t: t, inv: inv, cache: cache, h: h, w: w, logs: logs}
	return r
}

// push sends records: the snapshot (then SYNCED) the first time.
func (r *rig) push(synced bool, hws ...*hardware.Hardware) {
	r.t.Helper()
	for _, hw := range hws {
		r.w.events <- &hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_ADDED, Hardware: hw}
	}
	if synced {
		r.w.events <- &hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_SYNCED}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.inv.WaitSynced(ctx); err != nil {
			r.t.Fatal(err)
		}
	}
	// An event is applied once the next is taken: send a harmless one
	// (a delete of an unknown id) to know the last went in.
	r.w.events <- &hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_DELETED, Hardware: &hardware.Hardware{Id: "none"}}
	r.w.events <- &hardware.WatchEvent{Type: hardware.WatchEvent_TYPE_DELETED, Hardware: &hardware.Hardware{Id: "none"}}
}

// option42 is the NTP servers of the handler's offer to mac.
func (r *rig) option42(mac string) string {
	r.t.Helper()
	hw, _ := net.ParseMAC(mac)
	req, err := dhcpv4.NewDiscovery(hw)
	if err != nil {
		r.t.Fatal(err)
	}
	offer, _ := r.h.Handle(req, &net.UDPAddr{IP: net.IPv4zero, Port: dhcp.ClientPort}, false)
	if offer == nil {
		r.t.Fatalf("no offer to %s", mac)
	}
	return fmt.Sprint(offer.NTPServers())
}

const (
	id1  = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
	id2  = "5f2c6a3e-1111-4c4c-9a9a-222233334444"
	mac1 = "52:54:00:00:00:01"
	mac2 = "52:54:00:00:00:02"
)

// A name is resolved off the packet path: the record's first answer leaves
// it out, the round resolves it, the record is derived again and the next
// offer carries its addresses; later changes follow at each refresh; a
// failing resolver keeps the last answer, a name that stops existing is
// dropped; packets never cause a lookup.
func TestNameResolvedLaterUpdatesTheAnswer(t *testing.T) {
	res := newFakeResolver()
	res.set("ntp.lab", addrs("10.0.5.124", "2001:db8::123", "10.0.5.125"), nil)
	r := newRig(t, res, Config{})
	ctx := context.Background()

	r.push(true, record(id1, mac1, "10.0.5.10", "10.0.5.123", "NTP.lab"), record(id2, mac2, "10.0.5.11", "10.0.5.123"))
	if got := r.option42(mac1); got != "[10.0.5.123]" {
		t.Fatalf("before resolution: option 42 = %s", got)
	}
	if res.count("ntp.lab") != 0 {
		t.Fatal("a lookup before the round: on the packet path?")
	}
	r.cache.Round(ctx, r.inv, false)
	if got := r.option42(mac1); got != "[10.0.5.123 10.0.5.124 10.0.5.125]" {
		t.Fatalf("after resolution: option 42 = %s", got)
	}
	if got := r.option42(mac2); got != "[10.0.5.123]" {
		t.Errorf("a record without names: option 42 = %s", got)
	}
	if len(r.logs.lines("host names resolved to new addresses", "ntp.lab", "machines=1")) != 1 {
		t.Errorf("no log of the change:\n%s", r.logs.b.String())
	}
	if len(r.logs.lines("2001:db8::123 (IPv6", id1)) != 1 {
		t.Errorf("the IPv6 address left out is not logged with the hardware id:\n%s", r.logs.b.String())
	}
	for i := 0; i < 50; i++ {
		r.option42(mac1)
	}
	if n := res.count("ntp.lab"); n != 1 {
		t.Fatalf("%d lookups of ntp.lab, want 1: packets must not look names up", n)
	}

	// The name moves: the refresh picks it up.
	res.set("ntp.lab", addrs("10.0.5.126"), nil)
	r.cache.Round(ctx, r.inv, true)
	if got := r.option42(mac1); got != "[10.0.5.123 10.0.5.126]" {
		t.Fatalf("after the refresh: option 42 = %s", got)
	}
	// Unchanged at the next: nothing derived again, nothing logged.
	r.logs.reset()
	r.cache.Round(ctx, r.inv, true)
	if l := r.logs.lines("level=WARN"); len(l) != 0 {
		t.Errorf("warnings for a name that resolves: %q", l)
	}
	if l := r.logs.lines("resolved to new addresses"); len(l) != 0 {
		t.Errorf("a change logged without a change: %q", l)
	}

	// The resolver fails: the last answer stays, one warning per refresh.
	res.set("ntp.lab", nil, &net.DNSError{Err: "server misbehaving", Name: "ntp.lab", IsTemporary: true})
	r.logs.reset()
	r.cache.Round(ctx, r.inv, true)
	if got := r.option42(mac1); got != "[10.0.5.123 10.0.5.126]" {
		t.Errorf("resolver failing: option 42 = %s, want the last answer kept", got)
	}
	if l := r.logs.lines("level=WARN", "keeps its last addresses", "ntp.lab", id1); len(l) != 1 {
		t.Errorf("want one warning naming the hardware id, got %q", l)
	}

	// The name no longer exists: dropped, warned once per refresh.
	res.set("ntp.lab", nil, &net.DNSError{Err: "no such host", Name: "ntp.lab", IsNotFound: true})
	for i := 0; i < 2; i++ {
		r.logs.reset()
		r.cache.Round(ctx, r.inv, true)
		if got := r.option42(mac1); got != "[10.0.5.123]" {
			t.Errorf("name gone: option 42 = %s", got)
		}
		if l := r.logs.lines("level=WARN", "not resolved; left out", "ntp.lab", id1); len(l) != 1 {
			t.Errorf("refresh %d: want one warning naming the hardware id, got %q\n%s", i, l, r.logs.b.String())
		}
	}

	// A record pushed later with a new name: resolved by the next round,
	// which is the one Run starts at once.
	res.set("new.lab", addrs("10.0.5.127"), nil)
	r.push(false, record(id2, mac2, "10.0.5.11", "new.lab"))
	r.cache.Round(ctx, r.inv, false)
	if got := r.option42(mac2); got != "[10.0.5.127]" {
		t.Errorf("pushed later: option 42 = %s", got)
	}
	// Its name is forgotten once no record names it.
	r.push(false, record(id2, mac2, "10.0.5.11", "10.0.5.123"))
	r.cache.Round(ctx, r.inv, true)
	r.cache.mu.RLock()
	_, held := r.cache.entries["new.lab"]
	r.cache.mu.RUnlock()
	if held {
		t.Error("a name no record uses is still held")
	}
}

// Run resolves a name a record brings without being asked to, and stops
// with its context.
func TestRunResolvesNewNames(t *testing.T) {
	res := newFakeResolver()
	res.set("ntp.lab", addrs("10.0.5.124"), nil)
	r := newRig(t, res, Config{Refresh: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.cache.Run(ctx, r.inv) }()
	r.push(true, record(id1, mac1, "10.0.5.10", "ntp.lab"))
	deadline := time.Now().Add(10 * time.Second)
	for r.option42(mac1) != "[10.0.5.124]" {
		if time.Now().After(deadline) {
			t.Fatalf("option 42 = %s after 10s", r.option42(mac1))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// The cache holds at most MaxNames names; the rest are said so at each
// round, with a hardware id naming one.
func TestBounded(t *testing.T) {
	res := newFakeResolver()
	for _, n := range []string{"a.lab", "b.lab", "c.lab"} {
		res.set(n, addrs("10.0.5.200"), nil)
	}
	r := newRig(t, res, Config{MaxNames: 2})
	r.push(true, record(id1, mac1, "10.0.5.10", "a.lab", "b.lab"), record(id2, mac2, "10.0.5.11", "c.lab"))
	r.cache.Round(context.Background(), r.inv, false)
	r.cache.Round(context.Background(), r.inv, true)
	if res.count("c.lab") != 0 {
		t.Error("a name beyond the bound was looked up")
	}
	if got := r.option42(mac2); got != "[]" {
		t.Errorf("option 42 of the record beyond the bound = %s", got)
	}
	if got := r.option42(mac1); got != "[10.0.5.200]" {
		t.Errorf("option 42 within the bound = %s", got)
	}
	if l := r.logs.lines("level=WARN", "more host names in use than the cache holds", "c.lab", id2); len(l) != 2 {
		t.Errorf("want one warning per round, got %q\n%s", l, r.logs.b.String())
	}
}

// The system resolver on a name /etc/hosts answers (no DNS query leaves
// the machine): localhost is 127.0.0.1, which option 42 leaves out
// (a machine would ask itself for the time), and says so with the
// hardware id.
func TestSystemResolverLocalhost(t *testing.T) {
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil || !strings.Contains(string(hosts), "localhost") {
		t.Fatalf("/etc/hosts does not name localhost (%v): this test would send a DNS query", err)
	}
	r := newRig(t, net.DefaultResolver, Config{})
	r.push(true, record(id1, mac1, "10.0.5.10", "localhost", "10.0.5.123"))
	r.cache.Round(context.Background(), r.inv, false)
	if got := r.option42(mac1); got != "[10.0.5.123]" {
		t.Errorf("option 42 = %s", got)
	}
	if l := r.logs.lines("level=WARN", "no address a machine can use", "name=localhost", id1, "127.0.0.1 (loopback"); len(l) != 1 {
		t.Errorf("want one warning naming the loopback address and the hardware id, got %q\n%s", l, r.logs.b.String())
	}
	if a, _ := net.DefaultResolver.LookupNetIP(context.Background(), "ip4", "localhost"); len(a) == 0 {
		t.Error("the system resolver gave no address for localhost")
	}
}

// A lookup slower than Timeout is cut off and logged.
func TestLookupTimeout(t *testing.T) {
	slow := resolverFunc(func(ctx context.Context, _, _ string) ([]netip.Addr, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	r := newRig(t, slow, Config{Timeout: 50 * time.Millisecond})
	r.push(true, record(id1, mac1, "10.0.5.10", "slow.lab"))
	start := time.Now()
	r.cache.Round(context.Background(), r.inv, false)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("round took %v", d)
	}
	if l := r.logs.lines("level=WARN", "slow.lab", id1, "deadline exceeded"); len(l) != 1 {
		t.Errorf("want one warning, got %q", l)
	}
}

type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}
