package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// netbootFleet is a fleet whose machines do not netboot yet (allow_pxe
// false, as an operator leaves a machine that runs its OS), hw1 with two
// interfaces, the second without netboot settings.
func netbootFleet(t *testing.T) *fleet {
	t.Helper()
	f := newFleet(t, 0)
	h1 := newHW(f.hw1, iface{mac1, ip1}, iface{"08:00:27:00:01:11", ""})
	h1.Network.Interfaces[0].Netboot.AllowPxe = false
	h1.Network.Interfaces[1].Netboot = nil
	h2 := newHW(f.hw2, iface{mac2, ip2})
	h2.Network.Interfaces[0].Netboot.AllowPxe = false
	mustPush(t, f.s, h1)
	mustPush(t, f.s, h2)
	return f
}

// pxe returns the allow_pxe of each interface of a record and its version.
func pxe(t *testing.T, s *Store, id string) ([]bool, int64) {
	t.Helper()
	hw, err := s.HardwareByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var allow []bool
	for _, in := range hw.GetNetwork().GetInterfaces() {
		allow = append(allow, in.GetNetboot().GetAllowPxe())
	}
	return allow, hw.GetVersion()
}

func wantPXE(t *testing.T, s *Store, id string, want bool, version int64) {
	t.Helper()
	allow, v := pxe(t, s, id)
	for i, a := range allow {
		if a != want {
			t.Errorf("hardware %s interface %d: allow_pxe %v, want %v", id, i, a, want)
		}
	}
	if v != version {
		t.Errorf("hardware %s: version %d, want %d", id, v, version)
	}
}

// netbootEvents returns a workflow's netboot notes as "STATE worker:
// message" lines.
func netbootEvents(t *testing.T, s *Store, id string) []string {
	t.Helper()
	_, evs := events(t, s, id, 0)
	var out []string
	for _, e := range evs {
		if e.GetTaskName() == NetbootEventName {
			if e.GetActionName() != NetbootEventName {
				t.Errorf("netboot event with action %q", e.GetActionName())
			}
			out = append(out, fmt.Sprintf("%s %s: %s", e.GetActionStatus(), e.GetWorkerId(), e.GetMessage()))
		}
	}
	return out
}

// wantNotes checks each line of got against its want, a list of
// substrings.
func wantNotes(t *testing.T, got []string, want ...[]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("netboot events:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i, parts := range want {
		for _, p := range parts {
			if !strings.Contains(got[i], p) {
				t.Errorf("netboot event %d %q does not say %q", i, got[i], p)
			}
		}
	}
}

// runAll reports every action of the fleet's workflow id: RUNNING then
// SUCCESS.
func (f *fleet) runAll(t *testing.T, id string) {
	t.Helper()
	for _, a := range []struct{ worker, task, action string }{
		{f.hw1, "disk", "wipe"}, {f.hw1, "disk", "partition"}, {f.hw2, "os", "write"},
	} {
		f.mustReport(t, id, a.worker, a.task, a.action, workflow.State_STATE_RUNNING)
		f.mustReport(t, id, a.worker, a.task, a.action, workflow.State_STATE_SUCCESS)
	}
}

// TestNetbootToggledByDefault: a workflow created without a choice switches
// its machines' netboot on, and off when it succeeds, each change a new
// version announced to watchers and noted in the workflow's events.
func TestNetbootToggledByDefault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := netbootFleet(t)
	_, hwCh, _ := startHub(t, f.url)
	ids := []string{f.hw1, f.hw2}
	slices.Sort(ids)

	id := f.createWith(t, CreateOptions{})
	for _, want := range ids {
		if got := next(t, hwCh); got != want {
			t.Errorf("hardware notification %q, want %s", got, want)
		}
	}
	quiet(t, hwCh)
	wantPXE(t, f.s, f.hw1, true, 3) // both interfaces, the one without netboot settings too
	wantPXE(t, f.s, f.hw2, true, 3)
	if wf, err := f.s.GetWorkflow(ctx, id); err != nil || !wf.GetToggleNetboot() {
		t.Fatalf("workflow %v (%v): want toggle_netboot true", wf, err)
	}
	on := func(hw string) []string {
		return []string{"STATE_PENDING " + hw + ": allow_pxe switched on for hardware " + hw, "switches it off at SUCCESS"}
	}
	wantNotes(t, netbootEvents(t, f.s, id), on(ids[0]), on(ids[1]))

	f.runAll(t, id)
	for _, want := range ids {
		if got := next(t, hwCh); got != want {
			t.Errorf("hardware notification %q, want %s", got, want)
		}
	}
	quiet(t, hwCh)
	wantPXE(t, f.s, f.hw1, false, 4)
	wantPXE(t, f.s, f.hw2, false, 4)
	off := func(hw string) []string {
		return []string{"STATE_SUCCESS " + hw + ": workflow succeeded; allow_pxe switched off for hardware " + hw, "boots from its disk next"}
	}
	wantNotes(t, netbootEvents(t, f.s, id), on(ids[0]), on(ids[1]), off(ids[0]), off(ids[1]))
	// The notes come after the last action's report, which ended it.
	_, evs := events(t, f.s, id, 0)
	if n := len(evs); n != 10 || evs[n-3].GetActionName() != "write" || evs[n-3].GetActionStatus() != workflow.State_STATE_SUCCESS {
		t.Errorf("%d events, the third last %v", n, evs[n-3])
	}
	// A resent last report changes nothing.
	f.mustReport(t, id, f.hw2, "os", "write", workflow.State_STATE_SUCCESS)
	quiet(t, hwCh)
	if n := len(netbootEvents(t, f.s, id)); n != 4 {
		t.Errorf("%d netboot events after a resend, want 4", n)
	}
}

// TestNetbootStaysOnAfterFailure: FAILED and TIMEOUT leave netboot on, so
// the machine netboots into a retry.
func TestNetbootStaysOnAfterFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := netbootFleet(t)
	failed := f.createWith(t, CreateOptions{})
	f.mustReport(t, failed, f.hw1, "disk", "wipe", workflow.State_STATE_RUNNING)
	f.mustReport(t, failed, f.hw1, "disk", "wipe", workflow.State_STATE_FAILED)
	wantPXE(t, f.s, f.hw1, true, 3)
	wantPXE(t, f.s, f.hw2, true, 3)
	if n := len(netbootEvents(t, f.s, failed)); n != 2 {
		t.Errorf("%d netboot events, want the 2 of the creation", n)
	}

	timedOut := f.createWith(t, CreateOptions{})
	wantNotes(t, netbootEvents(t, f.s, timedOut), []string{"allow_pxe already on"}, []string{"allow_pxe already on"})
	f.mustReport(t, timedOut, f.hw1, "disk", "wipe", workflow.State_STATE_RUNNING)
	if n, err := f.s.ExpireWorkflows(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ExpireWorkflows = %d, %v", n, err)
	}
	wantPXE(t, f.s, f.hw1, true, 3) // "already on" wrote nothing
	if n := len(netbootEvents(t, f.s, timedOut)); n != 2 {
		t.Errorf("%d netboot events, want the 2 of the creation", n)
	}
}

// TestNetbootNotToggled: a workflow told not to toggle, by its request or
// by its template, leaves the hardware alone; the request beats the
// template.
func TestNetbootNotToggled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := netbootFleet(t)
	off, err := f.s.CreateTemplate(ctx, "toggle-off", "toggle_netboot: false\n"+fmt.Sprintf(twoMachines, 0))
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, f.s)
	byRequest := f.createWith(t, CreateOptions{ToggleNetboot: new(false)})
	devices := map[string]string{"device_1": mac1, "device_2": mac2}
	byTemplate, err := f.s.CreateWorkflow(ctx, off, devices, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{byRequest, byTemplate} {
		f.runAll(t, id)
		if wf, err := f.s.GetWorkflow(ctx, id); err != nil || wf.GetToggleNetboot() || wf.GetState() != workflow.State_STATE_SUCCESS {
			t.Errorf("workflow %v (%v): want SUCCESS without toggle_netboot", wf, err)
		}
		if notes := netbootEvents(t, f.s, id); len(notes) != 0 {
			t.Errorf("netboot events %q", notes)
		}
	}
	if after := snapshot(t, f.s); after != before {
		t.Errorf("workflows that do not toggle changed the hardware:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The request's true beats the template's false.
	id, err := f.s.CreateWorkflow(ctx, "toggle-off", devices, CreateOptions{ToggleNetboot: new(true)})
	if err != nil {
		t.Fatal(err)
	}
	wantPXE(t, f.s, f.hw1, true, 3)
	if wf, err := f.s.GetWorkflow(ctx, id); err != nil || !wf.GetToggleNetboot() {
		t.Errorf("workflow %v (%v): want toggle_netboot true", wf, err)
	}
}

// TestNetbootLeftOnForTheNextWorkflow: a machine another toggling
// workflow still waits for keeps netbooting when the first succeeds.
func TestNetbootLeftOnForTheNextWorkflow(t *testing.T) {
	t.Parallel()
	f := netbootFleet(t)
	first := f.createWith(t, CreateOptions{})
	second := f.createWith(t, CreateOptions{})
	f.runAll(t, first)
	wantPXE(t, f.s, f.hw1, true, 3)
	wantPXE(t, f.s, f.hw2, true, 3)
	notes := netbootEvents(t, f.s, first)
	wantNotes(t, notes[2:], []string{"allow_pxe left on", "workflow " + second + " still needs it"}, []string{"left on"})

	f.runAll(t, second)
	wantPXE(t, f.s, f.hw1, false, 4)
	wantPXE(t, f.s, f.hw2, false, 4)
}

// solo runs on device_1 only and names device_2 in its environment.
const solo = `version: "0.1"
name: solo
tasks:
  - name: only
    worker: "{{.device_1}}"
    environment:
      PEER: "{{.device_2}}"
    actions:
      - name: run
        image: alpine
`

// TestNetbootRace: SUCCESS and FAILED of the last action race; the
// machines' netboot follows the winner, switched off exactly once.
func TestNetbootRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := netbootFleet(t)
	if _, err := f.s.CreateTemplate(ctx, "solo", solo); err != nil {
		t.Fatal(err)
	}
	devices := map[string]string{"device_1": mac1, "device_2": mac2}
	for round := range 4 {
		id, err := f.s.CreateWorkflow(ctx, "solo", devices, CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.mustReport(t, id, f.hw1, "only", "run", workflow.State_STATE_RUNNING)
		const n = 20
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			st := workflow.State_STATE_SUCCESS
			if i%2 == 1 {
				st = workflow.State_STATE_FAILED
			}
			wg.Go(func() {
				<-start
				if err := f.report(id, f.hw1, "only", "run", st); err != nil && !errors.Is(err, ErrPrecondition) {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		wf, err := f.s.GetWorkflow(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		offs := 0
		for _, e := range netbootEvents(t, f.s, id) {
			if strings.HasPrefix(e, "STATE_SUCCESS") {
				offs++
			}
		}
		allow, _ := pxe(t, f.s, f.hw1)
		switch wf.GetState() {
		case workflow.State_STATE_SUCCESS:
			if offs != 2 || allow[0] {
				t.Errorf("round %d SUCCESS: %d netboot-off events (want 2), allow_pxe %v", round, offs, allow)
			}
		case workflow.State_STATE_FAILED:
			if offs != 0 || !allow[0] {
				t.Errorf("round %d FAILED: %d netboot-off events (want 0), allow_pxe %v", round, offs, allow)
			}
		default:
			t.Fatalf("round %d: state %s", round, wf.GetState())
		}
	}
}

// TestNetbootRecordGone: a named machine that is no worker may be deleted
// while the workflow runs; its end says so and switches the rest.
func TestNetbootRecordGone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := netbootFleet(t)
	if _, err := f.s.CreateTemplate(ctx, "solo", solo); err != nil {
		t.Fatal(err)
	}
	id, err := f.s.CreateWorkflow(ctx, "solo", map[string]string{"device_1": mac1, "device_2": ip2}, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.DeleteHardware(ctx, f.hw2); err != nil {
		t.Fatal(err)
	}
	f.mustReport(t, id, f.hw1, "only", "run", workflow.State_STATE_RUNNING)
	f.mustReport(t, id, f.hw1, "only", "run", workflow.State_STATE_SUCCESS)
	wantPXE(t, f.s, f.hw1, false, 4)
	var gone int
	for _, e := range netbootEvents(t, f.s, id) {
		if strings.Contains(e, "hardware "+f.hw2+" no longer exists: its netboot was not switched off") {
			gone++
		}
	}
	if gone != 1 {
		t.Errorf("netboot events %q: want one saying %s is gone", netbootEvents(t, f.s, id), f.hw2)
	}
}

func TestSetAllowPXE(t *testing.T) {
	nb := func(pxe bool) *hardware.Hardware_Netboot {
		return &hardware.Hardware_Netboot{AllowPxe: pxe, AllowWorkflow: true}
	}
	rec := func(nbs ...*hardware.Hardware_Netboot) *hardware.Hardware {
		hw := &hardware.Hardware{Id: uuid.NewString(), Network: &hardware.Hardware_Network{}}
		for _, n := range nbs {
			hw.Network.Interfaces = append(hw.Network.Interfaces, &hardware.Hardware_Network_Interface{Netboot: n})
		}
		return hw
	}
	tests := []struct {
		name    string
		in      *hardware.Hardware
		allow   bool
		changed bool
		want    *hardware.Hardware
	}{
		{"off to on", rec(nb(false)), true, true, rec(nb(true))},
		{"on already", rec(nb(true)), true, false, rec(nb(true))},
		{"on to off", rec(nb(true), nb(true)), false, true, rec(nb(false), nb(false))},
		{"one of two", rec(nb(true), nb(false)), true, true, rec(nb(true), nb(true))},
		{"no netboot settings: added", rec(nil), true, true, rec(&hardware.Hardware_Netboot{AllowPxe: true})},
		{"no netboot settings, off", rec(nil), false, false, rec(&hardware.Hardware_Netboot{})},
		{"no interfaces", &hardware.Hardware{}, true, false, &hardware.Hardware{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.Id = tt.in.GetId()
			if got := setAllowPXE(tt.in, tt.allow); got != tt.changed {
				t.Errorf("changed = %v, want %v", got, tt.changed)
			}
			if !proto.Equal(tt.in, tt.want) {
				t.Errorf("record %v, want %v", tt.in, tt.want)
			}
		})
	}
}
