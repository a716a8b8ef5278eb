package main

import "testing"

// herd-server's netboot notes (task and action "netboot") come with the
// events but are no action: the action times and the final state leave
// them out.
func TestNetbootNotesAreNoAction(t *testing.T) {
	var evs []event
	for _, l := range []string{
		`{"workflow_id":"w","task_name":"netboot","action_name":"netboot","action_status":"STATE_PENDING","message":"allow_pxe already on for hardware h","worker_id":"h","created_at":"2026-01-01T00:00:00Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"reboot","action_status":"STATE_RUNNING","created_at":"2026-01-01T00:00:10Z"}`,
		`{"workflow_id":"w","task_name":"install","action_name":"reboot","action_status":"STATE_SUCCESS","seconds":"1","created_at":"2026-01-01T00:00:11Z"}`,
		`{"workflow_id":"w","task_name":"netboot","action_name":"netboot","action_status":"STATE_SUCCESS","message":"workflow succeeded; allow_pxe switched off for hardware h","worker_id":"h","created_at":"2026-01-01T00:00:11Z"}`,
	} {
		e, err := parseEvent(l)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	if !netbootNote(evs[0]) || netbootNote(evs[1]) {
		t.Fatalf("netbootNote: %+v", evs[:2])
	}
	if at := actionTimes(evs); len(at) != 1 || at[0].Name != "reboot" || at[0].State != "SUCCESS" {
		t.Errorf("actionTimes = %+v, want the reboot action alone", at)
	}
	if acts := actionEvents(evs); len(acts) != 2 || acts[1].Action != "reboot" {
		t.Errorf("actionEvents = %+v", acts)
	}
	if !allActionsSucceeded(evs) {
		t.Error("the netboot notes must not count as an unfinished action")
	}
}
