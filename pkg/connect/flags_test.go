package connect

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-metal/herd/pkg/config"
)

func TestFlags(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"flags", []string{"--server", "s:1", "--cert-url", "http://c/cert", "--token", "t"}, nil, Config{Authority: "s:1", CertURL: "http://c/cert", Token: "t"}, ""},
		{"HERD_GRPC_AUTHORITY fills --server", nil, map[string]string{"HERD_GRPC_AUTHORITY": "g:1"}, Config{Authority: "g:1"}, ""},
		{"HERD_SERVER wins over HERD_GRPC_AUTHORITY", nil, map[string]string{"HERD_SERVER": "s:2", "HERD_GRPC_AUTHORITY": "g:1"}, Config{Authority: "s:2"}, ""},
		{"token file", []string{"--server", "s:1", "--token-file", tokenFile}, nil, Config{Authority: "s:1", Token: "from-file"}, ""},
		{"token beats token file", []string{"--server", "s:1", "--token", "t", "--token-file", tokenFile}, nil, Config{Authority: "s:1", Token: "t"}, ""},
		{"missing token file", []string{"--server", "s:1", "--token-file", "/nonexistent"}, nil, Config{}, "token file"},
		{"no server", nil, nil, Config{}, "no herd-server address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var f Flags
			f.Register(fs, "admin token")
			env := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			if err := config.Parse(fs, tt.args, "HERD_", Lookup(env)); err != nil {
				t.Fatal(err)
			}
			got, err := f.Config()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Config() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
