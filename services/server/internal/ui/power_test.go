package ui

import "testing"

func TestBMCRequest(t *testing.T) {
	for _, tc := range []struct {
		action  string
		netboot bool
		ok      bool
	}{
		{"on", false, true}, {"off", false, true}, {"cycle", false, true}, {"netboot", true, true},
		{"reset", false, false}, {"status", false, false}, {"", false, false}, {"ON", false, false}, {"on;off", false, false},
	} {
		netboot, err := bmcRequest(tc.action)
		if netboot != tc.netboot || (err == nil) != tc.ok {
			t.Errorf("bmcRequest(%q) = %v, %v; want netboot %v, ok %v", tc.action, netboot, err, tc.netboot, tc.ok)
		}
	}
}

func TestPowerState(t *testing.T) {
	states := map[string]string{"a": "on", "b": ""}
	for id, want := range map[string]string{"a": "on", "b": "", "c": noBMC} {
		if got := powerState(states, id); got != want {
			t.Errorf("powerState(%q) = %q, want %q", id, got, want)
		}
	}
}
