package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// iface is one interface of a test record: a MAC and optionally an IP.
type iface struct{ mac, ip string }

func newHW(id string, ifs ...iface) *hardware.Hardware {
	hw := &hardware.Hardware{Id: id, Network: &hardware.Hardware_Network{}}
	for _, f := range ifs {
		d := &hardware.Hardware_DHCP{Mac: f.mac, Hostname: "node", Arch: "x86_64"}
		if f.ip != "" {
			d.Ip = &hardware.Hardware_DHCP_IP{Address: f.ip, Netmask: "255.255.255.0", Family: 4}
		}
		hw.Network.Interfaces = append(hw.Network.Interfaces, &hardware.Hardware_Network_Interface{
			Dhcp:    d,
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		})
	}
	return hw
}

func mustPush(t testing.TB, s *Store, hw *hardware.Hardware) *hardware.Hardware {
	t.Helper()
	got, err := s.PushHardware(context.Background(), hw)
	if err != nil {
		t.Fatalf("push %s: %v", hw.GetId(), err)
	}
	return got
}

func wantErr(t *testing.T, err, kind error, contains ...string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("err = %v, want %v", err, kind)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("err %q does not mention %q", err, c)
		}
	}
}

// snapshot is the database's hardware state as text, to show that a
// refused change changed nothing.
func snapshot(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	rows, err := s.db.Query(`SELECT h.id, h.version, h.data::text, h.updated_at,
		coalesce((SELECT string_agg(kind || '=' || value, ',' ORDER BY kind, value)
			FROM hardware_address a WHERE a.hardware_id = h.id), '')
		FROM hardware h ORDER BY h.id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, data, addrs, updated string
		var version int64
		if err := rows.Scan(&id, &version, &data, &updated, &addrs); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s v%d %s %s\n%s\n", id, version, updated, addrs, data)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestHardwarePushGetUpdateDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	id := uuid.NewString()

	hw := newHW(strings.ToUpper(id), iface{"08:00:27:AA:BB:01", "10.1.0.5"}, iface{"08-00-27-aa-bb-02", ""})
	hw.Metadata = `{"zeta":1,"alpha":{"y":2,"b":[1,2]},"instance":{"hostname":"node"}}`
	hw.Version = 42 // ignored
	in := proto.Clone(hw)
	got := mustPush(t, s, hw)
	if !proto.Equal(hw, in) {
		t.Error("PushHardware changed its argument")
	}
	if got.Id != id || got.Version != 1 {
		t.Errorf("pushed id %s version %d, want %s version 1", got.Id, got.Version, id)
	}
	if m := got.Network.Interfaces[1].Dhcp.Mac; m != "08:00:27:aa:bb:02" {
		t.Errorf("stored mac %q, want it normalized", m)
	}

	for name, get := range map[string]func() (*hardware.Hardware, error){
		"ByID":           func() (*hardware.Hardware, error) { return s.HardwareByID(ctx, id) },
		"ByID upper":     func() (*hardware.Hardware, error) { return s.HardwareByID(ctx, strings.ToUpper(id)) },
		"ByMAC":          func() (*hardware.Hardware, error) { return s.HardwareByMAC(ctx, "08:00:27:aa:bb:01") },
		"ByMAC spelling": func() (*hardware.Hardware, error) { return s.HardwareByMAC(ctx, "0800.27AA.BB02") },
		"ByIP":           func() (*hardware.Hardware, error) { return s.HardwareByIP(ctx, "10.1.0.5") },
	} {
		rec, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// jsonb keeps the metadata's content, not its key order.
		if sameJSON(t, rec.Metadata, got.Metadata) {
			rec.Metadata = got.Metadata
		}
		if !proto.Equal(rec, got) {
			t.Errorf("%s = %v\nwant %v", name, rec, got)
		}
	}
	// The metadata comes back with the same content (jsonb may reorder keys).
	if rec, _ := s.HardwareByID(ctx, id); !sameJSON(t, rec.Metadata, hw.Metadata) {
		t.Errorf("metadata %s, want %s", rec.Metadata, hw.Metadata)
	}

	// Update: the second interface gets an IP, the first loses its.
	upd := newHW(id, iface{"08:00:27:aa:bb:01", ""}, iface{"08:00:27:aa:bb:02", "10.1.0.6"})
	got2 := mustPush(t, s, upd)
	if got2.Version != 2 {
		t.Errorf("version after update %d, want 2", got2.Version)
	}
	if _, err := s.HardwareByIP(ctx, "10.1.0.5"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old IP still resolves: %v", err)
	}
	if rec, err := s.HardwareByIP(ctx, "10.1.0.6"); err != nil || rec.Version != 2 {
		t.Errorf("new IP: %v %v", rec, err)
	}
	if got3 := mustPush(t, s, upd); got3.Version != 3 {
		t.Errorf("version after same push %d, want 3", got3.Version)
	}

	var all []string
	if err := s.AllHardware(ctx, func(h *hardware.Hardware) error { all = append(all, h.Id); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0] != id {
		t.Errorf("AllHardware = %v", all)
	}

	if err := s.DeleteHardware(ctx, id); err != nil {
		t.Fatal(err)
	}
	_, err := s.HardwareByID(ctx, id)
	wantErr(t, err, ErrNotFound, id)
	_, err = s.HardwareByMAC(ctx, "08:00:27:aa:bb:01")
	wantErr(t, err, ErrNotFound, "08:00:27:aa:bb:01")
	wantErr(t, s.DeleteHardware(ctx, id), ErrNotFound)
	if snap := snapshot(t, s); snap != "" {
		t.Errorf("left after delete:\n%s", snap)
	}
	// The freed addresses can be claimed again; a re-created id starts over.
	if again := mustPush(t, s, newHW(id, iface{"08:00:27:aa:bb:01", "10.1.0.5"})); again.Version != 1 {
		t.Errorf("re-created record has version %d", again.Version)
	}
}

func TestHardwareBadKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	_, err := s.HardwareByID(ctx, "not-a-uuid")
	wantErr(t, err, ErrInvalid, "not-a-uuid")
	_, err = s.HardwareByMAC(ctx, "zz")
	wantErr(t, err, ErrInvalid)
	_, err = s.HardwareByIP(ctx, "10.1")
	wantErr(t, err, ErrInvalid)
	wantErr(t, s.DeleteHardware(ctx, "x"), ErrInvalid)
	_, err = s.PushHardware(ctx, newHW("x", iface{"08:00:27:00:00:01", ""}))
	wantErr(t, err, ErrInvalid)
	_, err = s.PushHardware(ctx, nil)
	wantErr(t, err, ErrInvalid)
	_, err = s.HardwareByMAC(ctx, "08:00:27:00:00:01")
	wantErr(t, err, ErrNotFound)
	_, err = s.HardwareByIP(ctx, "10.9.9.9")
	wantErr(t, err, ErrNotFound)
}

func TestHardwareAddressConflicts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	mustPush(t, s, newHW(a, iface{"08:00:27:00:00:01", "10.2.0.1"}))
	mustPush(t, s, newHW(c, iface{"08:00:27:00:00:03", "10.2.0.3"}))
	before := snapshot(t, s)

	// A new record claiming a's MAC (in another spelling) is refused whole.
	_, err := s.PushHardware(ctx, newHW(b, iface{"08:00:27:00:00:02", "10.2.0.2"}, iface{"08:00:27:00:00:01", ""}))
	wantErr(t, err, ErrConflict, "mac 08:00:27:00:00:01", a)
	// Or a's IP.
	_, err = s.PushHardware(ctx, newHW(b, iface{"08:00:27:00:00:02", "10.2.0.1"}))
	wantErr(t, err, ErrConflict, "ip 10.2.0.1", a)
	// Both, from two owners: every one is named.
	_, err = s.PushHardware(ctx, newHW(b, iface{"08:00:27:00:00:01", "10.2.0.3"}))
	wantErr(t, err, ErrConflict, "mac 08:00:27:00:00:01 already belongs to hardware "+a, "ip 10.2.0.3 already belongs to hardware "+c)
	// An update of an existing record that takes c's MAC leaves a as it was.
	_, err = s.PushHardware(ctx, newHW(a, iface{"08:00:27:00:00:01", "10.2.0.1"}, iface{"08:00:27:00:00:03", ""}))
	wantErr(t, err, ErrConflict, "08:00:27:00:00:03", c)

	if after := snapshot(t, s); after != before {
		t.Errorf("refused pushes changed the database:\nbefore\n%s\nafter\n%s", before, after)
	}
	if _, err := s.HardwareByID(ctx, b); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused record exists: %v", err)
	}

	// Once a gives its MAC up, b may take it.
	mustPush(t, s, newHW(a, iface{"08:00:27:00:00:0a", "10.2.0.1"}))
	mustPush(t, s, newHW(b, iface{"08:00:27:00:00:01", "10.2.0.2"}))
	if rec, err := s.HardwareByMAC(ctx, "08:00:27:00:00:01"); err != nil || rec.Id != b {
		t.Errorf("mac owner after the move: %v %v", rec, err)
	}
}

// Records racing for one MAC: exactly one wins and the others get
// ErrConflict naming it (not a unique violation or a deadlock).
func TestHardwareConcurrentClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = uuid.NewString()
		// Each also claims the shared MAC plus its own, in opposite orders.
		ifs := []iface{{"08:00:27:00:01:00", ""}, {fmt.Sprintf("08:00:27:00:02:%02x", i), ""}}
		if i%2 == 1 {
			ifs[0], ifs[1] = ifs[1], ifs[0]
		}
		wg.Go(func() { _, errs[i] = s.PushHardware(ctx, newHW(ids[i], ifs...)) })
	}
	wg.Wait()
	winner, err := s.HardwareByMAC(ctx, "08:00:27:00:01:00")
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		switch {
		case ids[i] == winner.Id:
			if err != nil {
				t.Errorf("winner %d: %v", i, err)
			}
		default:
			wantErr(t, err, ErrConflict, winner.Id)
		}
	}
	var count int
	if err := s.db.QueryRow("SELECT count(*) FROM hardware").Scan(&count); err != nil || count != 1 {
		t.Errorf("%d records stored (%v), want 1", count, err)
	}
}

// AllHardware reads in pages; the callback's error ends it.
func TestAllHardwarePages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	total := hardwarePage*2 + 7
	// Pushing one by one costs a commit each: write the rows directly.
	if _, err := s.db.Exec(`
		INSERT INTO hardware (id, data)
		SELECT u, json_build_object('id', u, 'network', json_build_object('interfaces', json_build_array(
			json_build_object('dhcp', json_build_object('mac', '08:00:27:' || substr(md5(u::text), 1, 2) || ':' ||
				substr(md5(u::text), 3, 2) || ':' || substr(md5(u::text), 5, 2))))))
		FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, $1)) g`, total); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := s.AllHardware(ctx, func(h *hardware.Hardware) error { ids = append(ids, h.Id); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != total {
		t.Fatalf("AllHardware gave %d records, want %d", len(ids), total)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i-1] >= ids[i] {
			t.Fatalf("not in id order at %d: %s then %s", i, ids[i-1], ids[i])
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := s.AllHardware(ctx, func(*hardware.Hardware) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("AllHardware = %v after %d calls, want the callback's error after 1", err, calls)
	}
}

// insertWorkflow adds a workflow running on the hardware, the way the
// workflow code stores one, with the given state.
func insertWorkflow(t *testing.T, s *Store, hardwareID string, state workflow.State) string {
	t.Helper()
	tid, err := s.CreateTemplate(context.Background(), "wf-"+uuid.NewString(), "version: \"0.1\"")
	if err != nil {
		t.Fatal(err)
	}
	wid := uuid.NewString()
	if _, err := s.db.Exec(`INSERT INTO workflow (id, template_id, hardware_map, rendered, actions, state)
		VALUES ($1, $2, '{}', '', '[]', $3)`, wid, tid, int32(state)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec("INSERT INTO workflow_worker (workflow_id, worker_id) VALUES ($1, $2)", wid, hardwareID); err != nil {
		t.Fatal(err)
	}
	return wid
}

func TestDeleteHardwareInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	id := uuid.NewString()
	mustPush(t, s, newHW(id, iface{"08:00:27:00:00:01", "10.3.0.1"}))

	insertWorkflow(t, s, id, workflow.State_STATE_SUCCESS) // finished: no obstacle
	for _, state := range []workflow.State{workflow.State_STATE_PENDING, workflow.State_STATE_RUNNING} {
		wid := insertWorkflow(t, s, id, state)
		wantErr(t, s.DeleteHardware(ctx, id), ErrPrecondition, id, wid)
		if _, err := s.HardwareByID(ctx, id); err != nil {
			t.Fatalf("refused delete removed the record: %v", err)
		}
		if _, err := s.HardwareByMAC(ctx, "08:00:27:00:00:01"); err != nil {
			t.Fatalf("refused delete released the MAC: %v", err)
		}
		// A deleted workflow no longer holds the machine.
		if _, err := s.db.Exec("UPDATE workflow SET deleted_at = now() WHERE id = $1", wid); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteHardware(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
