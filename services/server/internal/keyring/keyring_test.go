package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func mustLine(t *testing.T) string {
	t.Helper()
	l, err := NewLine()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSealOpen(t *testing.T) {
	k, err := Parse("keys", []byte(mustLine(t)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := k.Seal("bmc/rack1", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if id != k.Current() || bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatalf("sealed under %q (current %q), plaintext visible: %v", id, k.Current(), bytes.Contains(sealed, []byte("hunter2")))
	}
	got, err := k.Open(id, "bmc/rack1", sealed)
	if err != nil || string(got) != "hunter2" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	_, again, _ := k.Seal("bmc/rack1", []byte("hunter2"))
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of one secret are equal: the nonce is not fresh")
	}
	if _, err := k.Open(id, "bmc/rack2", sealed); err == nil {
		t.Fatal("a secret opened for another record")
	}
	flipped := append([]byte(nil), sealed...)
	flipped[len(flipped)-1] ^= 1
	if _, err := k.Open(id, "bmc/rack1", flipped); err == nil {
		t.Fatal("a damaged secret opened")
	}
	if _, err := k.Open(id, "bmc/rack1", sealed[:5]); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := k.Open("other", "bmc/rack1", sealed); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
}

// After rotation the new first line seals and the old key still opens.
func TestRotation(t *testing.T) {
	old := mustLine(t)
	k1, _ := Parse("keys", []byte(old))
	id1, sealed, _ := k1.Seal("c", []byte("pw"))
	k2, err := Parse("keys", []byte("# rotated\n"+mustLine(t)+"\n\n"+old+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if k2.Current() == id1 {
		t.Fatal("the old key still seals after rotation")
	}
	if got, err := k2.Open(id1, "c", sealed); err != nil || string(got) != "pw" {
		t.Fatalf("old secret after rotation: %q, %v", got, err)
	}
}

func TestParseRefuses(t *testing.T) {
	good := mustLine(t)
	id := strings.Fields(good)[0]
	for _, c := range []struct{ name, data, want string }{
		{"empty", "", "no key"},
		{"comments only", "# nothing\n", "no key"},
		{"one field", "abc\n", "line 1: want"},
		{"three fields", good + " x\n", "line 1: want"},
		{"bad id", "a/b " + strings.Fields(good)[1], "key id"},
		{"short key", "a AAAA", "not 32 bytes"},
		{"not base64", "a !!!!", "not 32 bytes"},
		{"duplicate", good + "\n" + id + " " + strings.Fields(mustLine(t))[1], "line 2: key id " + `"` + id + `" is used twice`},
	} {
		if _, err := Parse("keys", []byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to say %q", c.name, err, c.want)
		}
	}
}

func TestLoadCreatesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "bmc.key")
	if _, err := Load(path, false); err == nil {
		t.Fatal("a missing operator key file was accepted")
	}
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := Load(path, true)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = k.Current()
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent first starts made different keys: %v", ids)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".bmc-key-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
