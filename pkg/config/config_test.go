package config

import (
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantDB  string
		wantP   int
		wantErr string
	}{
		{name: "defaults", wantDB: "postgres://default", wantP: 42113},
		{name: "env fills", env: map[string]string{"HERD_DB_URL": "postgres://env", "HERD_GRPC_PORT": "1"}, wantDB: "postgres://env", wantP: 1},
		{name: "flag beats env", args: []string{"--db-url", "postgres://flag"}, env: map[string]string{"HERD_DB_URL": "postgres://env"}, wantDB: "postgres://flag", wantP: 42113},
		{name: "bad env value names the variable", env: map[string]string{"HERD_GRPC_PORT": "x"}, wantErr: "HERD_GRPC_PORT"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			db := fs.String("db-url", "postgres://default", "database")
			port := fs.Int("grpc-port", 42113, "port")
			err := Parse(fs, tt.args, "HERD_", func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *db != tt.wantDB || *port != tt.wantP {
				t.Fatalf("got db=%q port=%d, want %q %d", *db, *port, tt.wantDB, tt.wantP)
			}
			if u := fs.Lookup("db-url").Usage; !strings.Contains(u, "HERD_DB_URL") {
				t.Fatalf("usage %q does not name its variable", u)
			}
		})
	}
}
