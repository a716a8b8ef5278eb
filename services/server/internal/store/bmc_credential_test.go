package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/herd-metal/herd/proto/hardware"
)

func withBMC(hw *hardware.Hardware, credential string) *hardware.Hardware {
	hw.Bmc = &hardware.Hardware_BMC{Address: "10.9.0.1", Protocol: "ipmi", Credential: credential}
	return hw
}

// TestBMCCredentialReferences: a record names only a stored credential;
// a credential in use is not deleted; pointing the record elsewhere (or
// deleting it) frees it.
func TestBMCCredentialReferences(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()

	_, err := s.PushHardware(ctx, withBMC(newHW(id, iface{mac1, ip1}), "rack1"))
	wantErr(t, err, ErrPrecondition, `bmc.credential "rack1" is not a stored credential`)
	if _, err := s.HardwareByID(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused push stored the record: %v", err)
	}

	for _, name := range []string{"rack1", "rack2"} {
		if _, err := s.PutBMCCredential(ctx, name, "k1", []byte("sealed-"+name)); err != nil {
			t.Fatal(err)
		}
	}
	mustPush(t, s, withBMC(newHW(id, iface{mac1, ip1}), "rack1"))
	list, err := s.ListBMCCredentials(ctx)
	if err != nil || len(list) != 2 || !slices.Equal(list[0].UsedBy, []string{id}) || len(list[1].UsedBy) != 0 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if list[0].Sealed != nil {
		t.Fatal("the list carries the sealed secrets")
	}
	wantErr(t, s.DeleteBMCCredential(ctx, "rack1"), ErrPrecondition, "used by hardware "+id)

	mustPush(t, s, withBMC(newHW(id, iface{mac1, ip1}), "rack2"))
	if err := s.DeleteBMCCredential(ctx, "rack1"); err != nil {
		t.Fatalf("rack1 is no longer used: %v", err)
	}
	wantErr(t, s.DeleteBMCCredential(ctx, "rack1"), ErrNotFound, "rack1")
	if err := s.DeleteHardware(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBMCCredential(ctx, "rack2"); err != nil {
		t.Fatalf("rack2 after its record's deletion: %v", err)
	}
}

// TestResealBMCCredentials: only rows under other keys are resealed; one
// that cannot be opened is named and the rest still move.
func TestResealBMCCredentials(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for name, key := range map[string]string{"a": "old", "b": "old", "c": "new", "lost": "gone"} {
		if _, err := s.PutBMCCredential(ctx, name, key, []byte(key+"/"+name)); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	n, err := s.ResealBMCCredentials(ctx, "new", func(c SealedCredential) (string, []byte, error) {
		seen = append(seen, c.Name)
		if c.KeyID == "gone" {
			return "", nil, errors.New("no such key")
		}
		return "new", []byte("new/" + c.Name), nil
	})
	if n != 2 || err == nil || !strings.Contains(err.Error(), "bmc credential lost: no such key") {
		t.Fatalf("resealed %d, err %v; want 2 and lost named", n, err)
	}
	if !slices.Equal(seen, []string{"a", "b", "lost"}) {
		t.Fatalf("offered %v, want a b lost", seen)
	}
	for name, want := range map[string]string{"a": "new", "b": "new", "c": "new", "lost": "gone"} {
		c, err := s.BMCCredential(ctx, name)
		if err != nil || c.KeyID != want || string(c.Sealed) != want+"/"+name {
			t.Fatalf("%s: %+v %v, want under %s", name, c, err, want)
		}
	}
	_, err = s.BMCCredential(ctx, "nobody")
	wantErr(t, err, ErrNotFound, "nobody")
}
