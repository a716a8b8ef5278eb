package inventory

import (
	"context"
	"database/sql"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, true)) }

func record(id, mac, ip string) *hardware.Hardware {
	return &hardware.Hardware{Id: id, Metadata: `{"instance":{"hostname":"n"}}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp:    &hardware.Hardware_DHCP{Mac: mac, Ip: &hardware.Hardware_DHCP_IP{Address: ip, Netmask: "255.255.255.0"}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}}}
}

const (
	id1 = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
	id2 = "5f2c6a3e-1111-4c4c-9a9a-222233334444"
)

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mac(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

func TestInventoryFollowsTheServer(t *testing.T) {
	s := servertest.Start(t)
	hc := hardware.NewHardwareServiceClient(s.Dial(servertest.AdminToken))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, r := range []*hardware.Hardware{record(id1, "08:00:27:00:00:01", "10.1.0.11"), record(id2, "08:00:27:00:00:02", "10.1.0.12")} {
		if _, err := hc.Push(ctx, &hardware.PushRequest{Data: r}); err != nil {
			t.Fatal(err)
		}
	}

	inv := New(slog.New(slog.DiscardHandler), func(hw *hardware.Hardware) any { return "derived:" + hw.GetId() })
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx, hc) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := inv.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	m, ok := inv.ByMAC(mac("08:00:27:00:00:01"))
	if !ok || m.ID != id1 || m.Derived != "derived:"+id1 || m.WorkerToken != s.WorkerToken(id1) {
		t.Fatalf("ByMAC: %+v %v", m, ok)
	}
	if m, ok := inv.ByIP(netip.MustParseAddr("10.1.0.12")); !ok || m.ID != id2 {
		t.Fatalf("ByIP: %+v %v", m, ok)
	}
	if _, ok := inv.ByIP(netip.MustParseAddr("::ffff:10.1.0.12")); !ok {
		t.Fatal("IPv4-mapped address not found")
	}
	if _, ok := inv.ByMAC(mac("08:00:27:00:00:09")); ok {
		t.Fatal("unknown MAC found")
	}

	// An update moves the IP: the old one stops resolving.
	if _, err := hc.Push(ctx, &hardware.PushRequest{Data: record(id2, "08:00:27:00:00:02", "10.1.0.13")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "update visible", func() bool { _, ok := inv.ByIP(netip.MustParseAddr("10.1.0.13")); return ok })
	if _, ok := inv.ByIP(netip.MustParseAddr("10.1.0.12")); ok {
		t.Fatal("old IP still resolves after the update")
	}
	if _, err := hc.Delete(ctx, &hardware.DeleteRequest{Id: id2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delete visible", func() bool { _, ok := inv.ByID(id2); return !ok })

	// The server goes away: the inventory keeps answering.
	s.Stop()
	time.Sleep(300 * time.Millisecond)
	if _, ok := inv.ByMAC(mac("08:00:27:00:00:01")); !ok {
		t.Fatal("inventory lost its records while the server is away")
	}
	// Meanwhile node 1 is deleted behind its back (another server of the
	// same database); after the reconnection it is gone.
	db, err := sql.Open("postgres", s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM hardware WHERE id = $1`, id1); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	eventually(t, "resync after reconnect", func() bool { return inv.Len() == 0 })
	if _, err := hc.Push(ctx, &hardware.PushRequest{Data: record(id1, "08:00:27:00:00:01", "10.1.0.11")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "changes after reconnect", func() bool { _, ok := inv.ByID(id1); return ok })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

// Rederive recomputes the derived answers of the records it matches, and
// a record derived before a Rederive but put after it is derived again, so
// no answer from before the change survives it.
func TestRederive(t *testing.T) {
	var mu sync.Mutex
	suffix := "old"
	derive := func(hw *hardware.Hardware) any {
		mu.Lock()
		defer mu.Unlock()
		return hw.GetId() + ":" + suffix
	}
	set := func(s string) { mu.Lock(); suffix = s; mu.Unlock() }
	inv := New(slog.New(slog.DiscardHandler), derive)
	inv.replace(map[string]*Machine{
		id1: inv.machine(&hardware.WatchEvent{Hardware: record(id1, "08:00:27:00:00:01", "10.1.0.11")}),
		id2: inv.machine(&hardware.WatchEvent{Hardware: record(id2, "08:00:27:00:00:02", "10.1.0.12")}),
	})
	held, _ := inv.ByMAC(mac("08:00:27:00:00:01"))

	set("new")
	if n := inv.Rederive(func(hw *hardware.Hardware) bool { return hw.GetId() == id1 }); n != 1 {
		t.Fatalf("Rederive re-derived %d records, want 1", n)
	}
	if m, _ := inv.ByMAC(mac("08:00:27:00:00:01")); m.Derived != id1+":new" {
		t.Errorf("matched record: Derived = %v", m.Derived)
	}
	if m, _ := inv.ByIP(netip.MustParseAddr("10.1.0.11")); m.Derived != id1+":new" {
		t.Errorf("matched record by IP: Derived = %v", m.Derived)
	}
	if m, _ := inv.ByID(id2); m.Derived != id2+":old" {
		t.Errorf("record not matched: Derived = %v", m.Derived)
	}
	if held.Derived != id1+":old" {
		t.Errorf("a copy handed out before changed: %v", held.Derived)
	}

	// Derived before the change, put after the Rederive: derived again.
	stale := inv.machine(&hardware.WatchEvent{Hardware: record(id2, "08:00:27:00:00:02", "10.1.0.13")})
	set("newer")
	inv.Rederive(func(*hardware.Hardware) bool { return false })
	inv.put(stale)
	if m, _ := inv.ByIP(netip.MustParseAddr("10.1.0.13")); m.Derived != id2+":newer" {
		t.Errorf("record derived before a Rederive: Derived = %v", m.Derived)
	}
	// Derived after it: kept as derived.
	fresh := inv.machine(&hardware.WatchEvent{Hardware: record(id1, "08:00:27:00:00:01", "10.1.0.11")})
	set("ignored")
	inv.put(fresh)
	if m, _ := inv.ByID(id1); m.Derived != id1+":newer" {
		t.Errorf("fresh record: Derived = %v", m.Derived)
	}

	var ids []string
	inv.Each(func(m Machine) bool { ids = append(ids, m.ID); return true })
	if len(ids) != 2 {
		t.Errorf("Each saw %v", ids)
	}
	n := 0
	inv.Each(func(Machine) bool { n++; return false })
	if n != 1 {
		t.Errorf("Each went on after false: %d calls", n)
	}
	if New(slog.New(slog.DiscardHandler), nil).Rederive(func(*hardware.Hardware) bool { return true }) != 0 {
		t.Error("Rederive without a derive function")
	}
}
