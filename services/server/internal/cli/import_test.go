package cli

import (
	"strings"
	"testing"
)

// herd import tink points at herd-server import tink, which alone writes
// herd's database, with the URL given (password hidden): exit code 2 and
// no call to the server.
func TestImportTinkPointsAtTheServer(t *testing.T) {
	h := newHarness(t)
	r := h.run("", "import", "tink", "--from", "postgres://tink:secret@db:5432/tinkerbell?sslmode=disable", "--dry-run")
	if r.code != ExitUsage {
		t.Fatalf("exit %d, want %d", r.code, ExitUsage)
	}
	want := "herd-server import tink --from 'postgres://tink:PASSWORD@db:5432/tinkerbell?sslmode=disable' --dry-run"
	if !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "secret") {
		t.Errorf("stderr %q, want it to show %q without the password", r.stderr, want)
	}
	if len(h.dials()) != 0 {
		t.Error("dialled the server")
	}
	if r := h.run("", "import", "tink", "--help"); r.code != 0 || !strings.Contains(r.stdout, "herd-server import tink --from") {
		t.Errorf("help: exit %d, stdout %q", r.code, r.stdout)
	}
}
