package cli

import (
	"strings"
	"testing"

	"github.com/herd-metal/herd/pkg/connect"
)

func TestGlobalSettings(t *testing.T) {
	def := connect.Config{Authority: DefaultAuthority, CertURL: DefaultCertURL}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want connect.Config
	}{
		{name: "defaults", want: def},
		{
			name: "environment",
			env: map[string]string{"HERD_GRPC_AUTHORITY": "herd:1", "HERD_CERT_URL": "https://herd/cert",
				"HERD_CA_FILE": "/ca.pem", "HERD_TOKEN": "tok", "HERD_SERVER_NAME": "herd.example"},
			want: connect.Config{Authority: "herd:1", CertURL: "https://herd/cert", CAFile: "/ca.pem", Token: "tok", ServerName: "herd.example"},
		},
		{
			name: "flags win over environment",
			env:  map[string]string{"HERD_GRPC_AUTHORITY": "env:1", "HERD_TOKEN": "envtok", "HERD_CA_FILE": "/env.pem"},
			args: []string{"--authority", "flag:2", "--token", "flagtok", "--ca-file", "/flag.pem", "--cert-url", "http://flag/cert", "--server-name", "n"},
			want: connect.Config{Authority: "flag:2", CertURL: "http://flag/cert", CAFile: "/flag.pem", Token: "flagtok", ServerName: "n"},
		},
		{
			name: "Tinkerbell variables after herd's",
			env:  map[string]string{"TINKERBELL_GRPC_AUTHORITY": "tink:42113", "TINKERBELL_CERT_URL": "http://tink:42114/cert"},
			want: connect.Config{Authority: "tink:42113", CertURL: "http://tink:42114/cert"},
		},
		{
			name: "herd's variables before Tinkerbell's",
			env:  map[string]string{"TINKERBELL_GRPC_AUTHORITY": "tink:1", "HERD_GRPC_AUTHORITY": "herd:1"},
			want: connect.Config{Authority: "herd:1", CertURL: DefaultCertURL},
		},
		{
			name: "empty variable turns the CA download off",
			env:  map[string]string{"HERD_CERT_URL": ""},
			want: connect.Config{Authority: DefaultAuthority},
		},
		{
			name: "empty flag turns the CA download off",
			env:  map[string]string{"HERD_CERT_URL": "http://env/cert"},
			args: []string{"--cert-url="},
			want: connect.Config{Authority: DefaultAuthority},
		},
		{
			name: "flags after the subcommand",
			want: connect.Config{Authority: "late:3", CertURL: DefaultCertURL},
			args: []string{"workflow", "list", "--authority", "late:3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.env = tt.env
			args := tt.args
			if len(args) == 0 || args[0] != "workflow" {
				args = append(args, "hardware", "list")
			}
			r := h.run("", args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			d := h.dials()
			if len(d) != 1 {
				t.Fatalf("%d dials, want 1", len(d))
			}
			if d[0] != tt.want {
				t.Fatalf("dialled with %+v, want %+v", d[0], tt.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string // in stderr
	}{
		{name: "unknown command", args: []string{"hardwar"}, want: `unknown command "hardwar"`},
		{name: "unknown subcommand", args: []string{"hardware", "lst"}, want: `unknown command "lst" for "herd hardware" (did you mean "list"?)`},
		{name: "unknown flag", args: []string{"hardware", "list", "--nope"}, want: "unknown flag: --nope"},
		{name: "missing argument", args: []string{"hardware", "id"}, want: "accepts 1 arg(s)"},
		{name: "extra argument", args: []string{"hardware", "list", "x"}, want: `unknown command "x"`},
		{name: "id not a UUID", args: []string{"hardware", "id", "nope"}, want: `"nope" is not a hardware id`},
		{name: "delete id not a UUID", args: []string{"workflow", "delete", "42"}, want: `"42" is not a workflow id`},
		{name: "bad MAC", args: []string{"hardware", "mac", "zz:zz"}, want: `"zz:zz" is not a MAC address`},
		{name: "bad IP", args: []string{"hardware", "ip", "10.0.0.300"}, want: `"10.0.0.300" is not an IP address`},
		{name: "bad output", args: []string{"hardware", "list", "-o", "yaml"}, want: `--output "yaml": want table or json`},
		{name: "empty authority", args: []string{"hardware", "list", "--authority="}, want: "--authority is empty"},
		{name: "negative timeout", args: []string{"hardware", "list", "--timeout=-1s"}, want: "must not be negative"},
		{name: "bad duration", args: []string{"hardware", "list", "--timeout=soon"}, want: `invalid argument "soon"`},
		{name: "create without template", args: []string{"workflow", "create", "-r", `{"d":"10.0.0.1"}`}, want: `required flag(s) "template" not set`},
		{name: "devices not JSON", args: []string{"workflow", "create", "-t", "x", "-r", "device_1=aa"}, want: "want a JSON object"},
		{name: "device not an address", args: []string{"workflow", "create", "-t", "x", "-r", `{"device_1":"nope"}`}, want: `device_1: "nope" is neither a MAC nor an IP address`},
		{name: "no devices", args: []string{"workflow", "create", "-t", "x", "-r", `{}`}, want: "no devices"},
		{name: "exclusive data flags", args: []string{"workflow", "data", "bbbbbbbb-0000-4000-8000-000000000001", "-m", "-l"}, want: "none of the others can be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			r := h.run(tt.stdin, tt.args...)
			if r.code != ExitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, ExitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "herd: ") || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("stderr %q, want herd: ... %q", r.stderr, tt.want)
			}
			if !strings.Contains(r.stderr, "--help' for usage") {
				t.Errorf("stderr %q does not point at --help", r.stderr)
			}
			if len(h.dials()) != 0 {
				t.Fatal("dialled the server for a usage error")
			}
		})
	}
}

func TestHelp(t *testing.T) {
	h := newHarness(t)
	r := h.run("", "--help")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{"HERD_GRPC_AUTHORITY", "HERD_CERT_URL", "HERD_CA_FILE", "HERD_TOKEN", "--output", "--timeout", "hardware", "template", "workflow", "Exit codes"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help does not mention %s", want)
		}
	}
	// A bare group prints its help and succeeds.
	if r := h.run("", "workflow"); r.code != 0 || !strings.Contains(r.stdout, "watch") {
		t.Errorf("herd workflow: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := h.run("", "workflow", "watch", "--help"); r.code != 0 || !strings.Contains(r.stdout, "3 for FAILED") {
		t.Errorf("herd workflow watch --help: exit %d, stdout %q", r.code, r.stdout)
	}
	if len(h.dials()) != 0 {
		t.Fatal("help dialled the server")
	}
}

func TestServerErrors(t *testing.T) {
	h := newHarness(t)
	r := h.run("", "hardware", "id", "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94")
	if r.code != ExitError {
		t.Fatalf("exit %d, want 1", r.code)
	}
	if want := "herd: no hardware with id 0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94\n"; r.stderr != want {
		t.Fatalf("stderr %q, want the status message alone: %q", r.stderr, want)
	}
	if r.stdout != "" {
		t.Fatalf("stdout %q on error", r.stdout)
	}
}

func TestTimeout(t *testing.T) {
	h := newHarness(t)
	h.srv.block = true
	r := h.run("", "hardware", "id", "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94", "--timeout", "100ms")
	if r.code != ExitError || r.stderr != "herd: no answer within 100ms (--timeout)\n" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestUnreachable(t *testing.T) {
	var out, errb strings.Builder
	// Real dialling (connect.Dial) towards a port nobody listens on, with
	// the CA download off so the gRPC connection is what fails.
	cmd := New(strings.NewReader(""), &out, &errb, WithLookupEnv(func(string) (string, bool) { return "", false }))
	code := Run(t.Context(), cmd, []string{"hardware", "list", "--authority", "127.0.0.1:1", "--cert-url=", "--timeout", "5s"})
	if code != ExitError {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if !strings.HasPrefix(errb.String(), "herd: cannot reach herd-server at 127.0.0.1:1: ") {
		t.Fatalf("stderr %q", errb.String())
	}
}

func TestCertURLError(t *testing.T) {
	var out, errb strings.Builder
	cmd := New(strings.NewReader(""), &out, &errb, WithLookupEnv(func(string) (string, bool) { return "", false }))
	code := Run(t.Context(), cmd, []string{"hardware", "list", "--cert-url", "http://127.0.0.1:1/cert"})
	if code != ExitError || !strings.Contains(errb.String(), "http://127.0.0.1:1/cert") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
