package connect

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Flags are the settings every herd-server client takes: --server,
// --cert-url, --ca-file, --token and --token-file (with the usual HERD_*
// environment fallbacks when parsed by pkg/config).
type Flags struct {
	Server, CertURL, CAFile, Token, TokenFile string
}

// Register adds the flags to fs; token says what the token is for this
// client (the admin token, a worker credential, ...).
func (f *Flags) Register(fs *flag.FlagSet, token string) {
	fs.StringVar(&f.Server, "server", "", "herd-server's gRPC address, host:port (port 42113; also read from HERD_GRPC_AUTHORITY)")
	fs.StringVar(&f.CertURL, "cert-url", "", "URL of herd-server's CA certificate, e.g. http://10.1.0.1:42114/cert")
	fs.StringVar(&f.CAFile, "ca-file", "", "PEM file of the CA to trust for herd-server (wins over --cert-url)")
	fs.StringVar(&f.Token, "token", "", token+" (prefer the environment or --token-file over a flag)")
	fs.StringVar(&f.TokenFile, "token-file", "", "file holding the token")
}

// Lookup extends an environment lookup so that HERD_SERVER falls back to
// HERD_GRPC_AUTHORITY, the variable every herd client reads.
func Lookup(lookup func(string) (string, bool)) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if v, ok := lookup(name); ok || name != "HERD_SERVER" {
			return v, ok
		}
		return lookup("HERD_GRPC_AUTHORITY")
	}
}

// Config is the dial configuration, after reading --token-file when no
// token was given directly.
func (f *Flags) Config() (Config, error) {
	if f.Server == "" {
		return Config{}, fmt.Errorf("no herd-server address: set --server or HERD_GRPC_AUTHORITY")
	}
	if f.Token == "" && f.TokenFile != "" {
		b, err := os.ReadFile(f.TokenFile)
		if err != nil {
			return Config{}, fmt.Errorf("token file: %w", err)
		}
		f.Token = strings.TrimSpace(string(b))
	}
	return Config{Authority: f.Server, CertURL: f.CertURL, CAFile: f.CAFile, Token: f.Token}, nil
}
