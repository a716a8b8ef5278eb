package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/herd-metal/herd/pkg/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestParseImport(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    importSettings
		wantErr string
	}{
		{name: "all flags", args: []string{"tink", "--from", "postgres://tink@db/tink", "--dry-run", "--replace", "--verbose"},
			want: importSettings{from: "postgres://tink@db/tink", dryRun: true, replace: true, verbose: true}},
		{name: "from the environment", args: []string{"tink"}, env: map[string]string{"HERD_IMPORT_FROM": "postgres://env/tink", "HERD_IMPORT_DRY_RUN": "true"},
			want: importSettings{from: "postgres://env/tink", dryRun: true}},
		{name: "no source kind", args: nil, wantErr: "import what?"},
		{name: "another source", args: []string{"metal3", "--from", "x"}, wantErr: "import what?"},
		{name: "no --from", args: []string{"tink"}, wantErr: "--from is required"},
		{name: "stray argument", args: []string{"tink", "--from", "x", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "unknown flag", args: []string{"tink", "--form", "x"}, wantErr: "form"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseImport(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// herd-server import runs with the server's own database settings: it
// migrates herd's database, then checks the source before writing.
func TestImportCommand(t *testing.T) {
	herdDB, notTink := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	none := func(string) (string, bool) { return "", false }
	err := run(context.Background(), []string{"--db-url", herdDB, "--log-level", "error", "import", "tink", "--from", notTink, "--dry-run"}, none, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not a Tinkerbell v0.6 database") {
		t.Errorf("err = %v", err)
	}
	err = run(context.Background(), []string{"--db-url", herdDB, "import", "tink"}, none, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--from is required") {
		t.Errorf("err = %v", err)
	}
}
