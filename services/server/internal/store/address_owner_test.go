package store

import (
	"context"
	"testing"

	"github.com/google/uuid"
)

// TestHardwareIDByIP: the owner of an interface address (what herd-server
// checks a worker's source address against), gone with a re-push that
// drops the address and with the record's deletion.
func TestHardwareIDByIP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := newStore(t)
	id := uuid.NewString()
	mustPush(t, s, newHW(id, iface{"08:00:27:aa:cc:01", "10.1.0.5"}, iface{"08:00:27:aa:cc:02", "10.2.0.5"}))
	for ip, want := range map[string]string{"10.1.0.5": id, "10.2.0.5": id, "10.1.0.6": "", "08:00:27:aa:cc:01": ""} {
		got, found, err := s.HardwareIDByIP(ctx, ip)
		if err != nil || got != want || found != (want != "") {
			t.Errorf("HardwareIDByIP(%s) = %q %v %v, want %q", ip, got, found, err, want)
		}
	}
	mustPush(t, s, newHW(id, iface{"08:00:27:aa:cc:01", "10.1.0.5"}))
	if _, found, err := s.HardwareIDByIP(ctx, "10.2.0.5"); found || err != nil {
		t.Errorf("an address the record no longer holds: found %v, %v", found, err)
	}
	if err := s.DeleteHardware(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.HardwareIDByIP(ctx, "10.1.0.5"); found || err != nil {
		t.Errorf("after the record's deletion: found %v, %v", found, err)
	}
}
