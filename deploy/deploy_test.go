package deploy

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/sirupsen/logrus"
)

// missing fails the test under CI=true (a real part the tests need is
// absent) and skips it elsewhere.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (CI=true: run scripts/deps.sh as root)", what)
	}
	t.Skipf("%s is missing", what)
}

func command(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		missing(t, "command "+name)
	}
	return p
}

// envrc runs generate-envrc.sh with args and returns its output parsed
// into names and values (as bash sourcing it would see them), and the text.
func envrc(t *testing.T, env []string, args ...string) (map[string]string, string) {
	t.Helper()
	cmd := exec.Command("./generate-envrc.sh", args...)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("generate-envrc.sh %v: %v: %s", args, err, stderrOf(err))
	}
	return sourced(t, string(out)), string(out)
}

// cleanEnv is the test's environment without HERD_ and TINKERBELL_
// settings a developer's shell may hold.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERD_") && !strings.HasPrefix(kv, "TINKERBELL_") {
			env = append(env, kv)
		}
	}
	return env
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// sourced sources text in bash and returns every HERD_ variable it set.
func sourced(t *testing.T, text string) map[string]string {
	t.Helper()
	cmd := exec.Command("bash", "-c", `set -eu; eval "$1"; env -0`, "bash", text)
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sourcing the envrc: %v: %s", err, stderrOf(err))
	}
	vars := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "HERD_") {
			vars[k] = v
		}
	}
	return vars
}

var exportLine = regexp.MustCompile(`(?m)^export (HERD_[A-Z0-9_]+)=`)

// TestEnvrcShape: every setting is an export with a one-line comment above
// it, and names the settings.
func TestEnvrcShape(t *testing.T) {
	_, text := envrc(t, nil, "lo")
	lines := strings.Split(text, "\n")
	names := 0
	for i, l := range lines {
		if !strings.HasPrefix(l, "export ") {
			continue
		}
		names++
		if i == 0 || !strings.HasPrefix(lines[i-1], "# ") {
			t.Errorf("line %d %q has no comment line above it", i+1, l)
		}
	}
	for _, want := range []string{"HERD_INTERFACE", "HERD_CIDR", "HERD_HOST_IP", "HERD_DHCP_MODE", "HERD_IPXE_PARAMS",
		"HERD_DB_USER", "HERD_DB_PASSWORD", "HERD_DB_NAME", "HERD_AUTH_TOKEN", "HERD_REGISTRY_USER", "HERD_REGISTRY_PASSWORD",
		"HERD_SERVER_IMAGE", "HERD_BOOTS_IMAGE", "HERD_METADATA_IMAGE", "HERD_DB_IMAGE", "HERD_REGISTRY_IMAGE", "HERD_STATE_DIR",
		"HERD_SERVICE_TOKEN", "HERD_BMC_TOKEN", "HERD_BMC_IMAGE", "HERD_BMC_HTTP_PORT"} {
		if !strings.Contains(text, "export "+want+"=") {
			t.Errorf("no export of %s", want)
		}
	}
	if names < 20 {
		t.Errorf("%d settings: %s", names, text)
	}
}

func TestEnvrcSecretsAreFreshEachRun(t *testing.T) {
	a, _ := envrc(t, nil, "lo")
	b, _ := envrc(t, nil, "lo")
	hex48 := regexp.MustCompile(`^[0-9a-f]{48}$`)
	secrets := []string{"HERD_DB_PASSWORD", "HERD_AUTH_TOKEN", "HERD_SERVICE_TOKEN", "HERD_BMC_TOKEN", "HERD_REGISTRY_PASSWORD"}
	owner := map[string]string{}
	for _, k := range secrets {
		if !hex48.MatchString(a[k]) || !hex48.MatchString(b[k]) {
			t.Errorf("%s = %q, %q: want 24 random bytes in hex", k, a[k], b[k])
		}
		if a[k] == b[k] {
			t.Errorf("%s is the same in two runs: %s", k, a[k])
		}
		// Each credential opens its own part: the BMC agent's token is
		// neither the admin's nor boots' and metadata's.
		if o, ok := owner[a[k]]; ok {
			t.Errorf("%s and %s share a value", o, k)
		}
		owner[a[k]] = k
	}
	// The CLI's settings follow from the others once sourced.
	if a["HERD_TOKEN"] != a["HERD_AUTH_TOKEN"] || a["HERD_GRPC_AUTHORITY"] != a["HERD_HOST_IP"]+":42113" ||
		a["HERD_CERT_URL"] != "http://"+a["HERD_HOST_IP"]+":42114/cert" {
		t.Errorf("CLI settings: token %q authority %q cert %q", a["HERD_TOKEN"], a["HERD_GRPC_AUTHORITY"], a["HERD_CERT_URL"])
	}
	// Images pinned to one version.
	for _, k := range []string{"HERD_SERVER_IMAGE", "HERD_BOOTS_IMAGE", "HERD_METADATA_IMAGE", "HERD_BMC_IMAGE", "HERD_DB_IMAGE", "HERD_REGISTRY_IMAGE"} {
		if !strings.HasSuffix(a[k], ":"+a["HERD_VERSION"]) || a["HERD_VERSION"] == "" {
			t.Errorf("%s = %q, version %q", k, a[k], a["HERD_VERSION"])
		}
	}
}

func TestEnvrcRefusesMissingInterface(t *testing.T) {
	cmd := exec.Command("./generate-envrc.sh", "herd-no-such0")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("exit 0 for a missing interface: %s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("exit %v, want 1", err)
	}
	msg := string(out)
	if !strings.Contains(msg, "no interface herd-no-such0") || !strings.Contains(msg, "there are:") || strings.Contains(msg, "export ") {
		t.Errorf("message %q: want it to name the interface, list the others and print no settings", msg)
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if i.Name != "lo" && !strings.Contains(msg, i.Name) {
			t.Errorf("message does not list %s: %q", i.Name, msg)
		}
	}
	// No interface at all, and an unknown option, are usage errors.
	for _, args := range [][]string{nil, {"-x", "lo"}, {"lo", "eth0"}} {
		cmd := exec.Command("./generate-envrc.sh", args...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "usage:") {
			t.Errorf("%v: %v %q, want usage and exit 2", args, err, out)
		}
	}
}

func TestEnvrcOutputFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "envrc")
	if err := os.WriteFile(f, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("./generate-envrc.sh", "-o", f, "lo").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--force") {
		t.Errorf("overwrote %s without --force: %v %q", f, err, out)
	}
	if b, _ := os.ReadFile(f); string(b) != "mine\n" {
		t.Fatalf("file changed: %q", b)
	}
	if out, err := exec.Command("./generate-envrc.sh", "-o", f, "--force", "lo").CombinedOutput(); err != nil {
		t.Fatalf("--force: %v %s", err, out)
	}
	b, _ := os.ReadFile(f)
	if !exportLine.Match(b) {
		t.Errorf("no settings in %s: %q", f, b)
	}
	if st, _ := os.Stat(f); st.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s has mode %v: it holds secrets", f, st.Mode().Perm())
	}
	g := filepath.Join(t.TempDir(), "new")
	if out, err := exec.Command("./generate-envrc.sh", "-o", g, "lo").CombinedOutput(); err != nil {
		t.Fatalf("-o new file: %v %s", err, out)
	}
	if st, err := os.Stat(g); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new file: %v %v", st, err)
	}
}

// TestEnvrcAddresses runs generate-envrc.sh in a network namespace of its
// own, on a veth with and without an address.
func TestEnvrcAddresses(t *testing.T) {
	if os.Geteuid() != 0 {
		missing(t, "root (for a network namespace)")
	}
	command(t, "unshare")
	command(t, "ip")
	for _, c := range []struct {
		name, addr, host, cidr string
	}{
		{"an address: that one", "10.77.3.9/16", "10.77.3.9", "16"},
		{"no address: the seed's default", "", "192.168.1.1", "24"},
	} {
		t.Run(c.name, func(t *testing.T) {
			script := `set -e; ip link add herdtest0 type veth peer name herdtest1; ip link set herdtest0 up; `
			if c.addr != "" {
				script += `ip addr add ` + c.addr + ` dev herdtest0; `
			}
			script += `exec ./generate-envrc.sh herdtest0`
			cmd := exec.Command("unshare", "--net", "--", "sh", "-c", script)
			cmd.Env = cleanEnv()
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, stderrOf(err))
			}
			v := sourced(t, string(out))
			if v["HERD_HOST_IP"] != c.host || v["HERD_CIDR"] != c.cidr || v["HERD_INTERFACE"] != "herdtest0" {
				t.Errorf("host %q cidr %q iface %q, want %s/%s on herdtest0", v["HERD_HOST_IP"], v["HERD_CIDR"], v["HERD_INTERFACE"], c.host, c.cidr)
			}
			if c.addr == "" && !strings.Contains(string(out), "has no IPv4 address") {
				t.Errorf("the default is not pointed out for editing:\n%s", out)
			}
		})
	}
}

// The settings preset in the environment win over the defaults, but never
// the secrets: those are new on every run.
func TestEnvrcPresets(t *testing.T) {
	v, _ := envrc(t, []string{"HERD_STATE_DIR=/srv/herd", "HERD_DHCP_MODE=proxy", "HERD_VERSION=v9.9.9", "HERD_AUTH_TOKEN=old"}, "lo")
	if v["HERD_STATE_DIR"] != "/srv/herd" || v["HERD_DHCP_MODE"] != "proxy" || v["HERD_SERVER_IMAGE"] != "herd/herd-server:v9.9.9" {
		t.Errorf("presets not kept: %v", v)
	}
	if v["HERD_AUTH_TOKEN"] == "old" {
		t.Error("a preset secret was reused")
	}
}

var composeVar = regexp.MustCompile(`\$\{([A-Z][A-Z0-9_]*)[^}]*\}`)

func composeVars(t *testing.T, files ...string) map[string]bool {
	t.Helper()
	vars := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range composeVar.FindAllStringSubmatch(string(b), -1) {
			vars[m[1]] = true
		}
	}
	return vars
}

var composeFiles = []string{"docker-compose.yml", "docker-compose.external-db.yml"}

// TestComposeAndEnvrcAgree: every variable the compose files use is one
// generate-envrc.sh prints and setup.sh writes to .env; and every setting
// generate-envrc.sh prints is read by the compose files, setup.sh or the
// herd CLI.
func TestComposeAndEnvrcAgree(t *testing.T) {
	v, _ := envrc(t, nil, "lo")
	used := composeVars(t, composeFiles...)
	// HERD_DB_URL is the external database's URL, which only the override
	// reads and the operator sets.
	delete(used, "HERD_DB_URL")
	setup, err := os.ReadFile("settings.sh")
	if err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*s (HERD_[A-Z0-9_]+) `).FindAllStringSubmatch(string(setup), -1) {
		written[m[1]] = true
	}
	for k := range used {
		if _, ok := v[k]; !ok {
			t.Errorf("the compose files use %s, which generate-envrc.sh does not print", k)
		}
		if !written[k] {
			t.Errorf("the compose files use %s, which setup.sh does not write to .env", k)
		}
	}
	setupSh, _ := os.ReadFile("setup.sh")
	cli := map[string]string{
		"HERD_TOKEN":          "the herd CLI's token",
		"HERD_GRPC_AUTHORITY": "the herd CLI's server",
		"HERD_CERT_URL":       "the herd CLI's CA",
	}
	var unread []string
	for k := range v {
		if used[k] || cli[k] != "" || strings.Contains(string(setupSh)+string(setup), "$"+k) || strings.Contains(string(setup), " "+k+" ") {
			continue
		}
		unread = append(unread, k)
	}
	sort.Strings(unread)
	if len(unread) > 0 {
		t.Errorf("generate-envrc.sh prints settings nothing reads: %v", unread)
	}
	if len(used) < 15 {
		t.Errorf("only %d variables found in the compose files: %v", len(used), used)
	}
}

// TestComposeFileRules: no address, port or secret written into the compose
// file; host networking, restart policies and log rotation everywhere.
func TestComposeFileRules(t *testing.T) {
	p := loadCompose(t, []string{"docker-compose.yml"}, envFor(t), nil)
	b, _ := os.ReadFile("docker-compose.yml")
	text := regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(string(b), "")
	if m := regexp.MustCompile(`\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b`).FindAllString(text, -1); len(slices.DeleteFunc(m, func(s string) bool { return s == "127.0.0.1" })) > 0 {
		t.Errorf("addresses written into the compose file: %v", m)
	}
	for _, port := range []string{"42113", "42114", "42115", "50061", "5000", "5432", ":80"} {
		if strings.Contains(text, port) {
			t.Errorf("port %s written into the compose file", port)
		}
	}
	long := []string{"db", "herd-server", "herd-boots", "herd-metadata", "herd-bmc", "registry"}
	for _, name := range long {
		s, ok := p.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if s.NetworkMode != "host" {
			t.Errorf("%s: network_mode %q, want host", name, s.NetworkMode)
		}
		if s.Restart != "unless-stopped" {
			t.Errorf("%s: restart %q", name, s.Restart)
		}
		if s.Logging == nil || s.Logging.Options["max-size"] == "" {
			t.Errorf("%s: no log rotation", name)
		}
	}
	if s := p.Services["herd-server"]; s.DependsOn["db"].Condition != "service_healthy" {
		t.Errorf("herd-server depends on db: %+v", s.DependsOn)
	}
	// --scale herd-server=N: the replicas share the host's ports, so no
	// fixed container name and SO_REUSEPORT on.
	if s := p.Services["herd-server"]; s.ContainerName != "" || s.Environment["HERD_REUSE_PORT"] == nil || *s.Environment["HERD_REUSE_PORT"] != "true" {
		t.Errorf("herd-server cannot be scaled: container_name %q, HERD_REUSE_PORT %v", s.ContainerName, s.Environment["HERD_REUSE_PORT"])
	}
	// herd-server's ports are shared by SO_REUSEPORT with any process of
	// its user (65532, from its image): every other service on the host
	// network runs as another.
	users := map[string]string{}
	for _, name := range []string{"herd-metadata", "herd-bmc"} {
		u := p.Services[name].User
		if u == "" || strings.HasPrefix(u, "65532") || users[u] != "" {
			t.Errorf("%s: user %q, want one of its own (not herd-server's 65532, not %s's)", name, u, users[u])
		}
		users[u] = name
	}
	if s := p.Services["herd-boots"]; !slices.Equal(s.CapDrop, []string{"ALL"}) || len(s.CapAdd) == 0 || slices.Contains(s.CapAdd, "SYS_ADMIN") {
		t.Errorf("herd-boots capabilities: drop %v add %v", s.CapDrop, s.CapAdd)
	}
	if s := p.Services["db"]; s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
		t.Error("db has no healthcheck")
	}
	bmc := p.Services["herd-bmc"]
	if bmc.HealthCheck == nil || !slices.Equal(bmc.HealthCheck.Test, types.HealthCheckTest{"CMD", "/herd-bmc", "healthcheck"}) {
		t.Errorf("herd-bmc healthcheck: %+v", bmc.HealthCheck)
	}
	if bmc.DependsOn["herd-server"].Condition != "service_healthy" {
		t.Errorf("herd-bmc depends on: %+v", bmc.DependsOn)
	}
}

// TestComposeTokens: each service gets the one token it needs; the BMC
// agent's reaches herd-server (which checks it) and herd-bmc only.
func TestComposeTokens(t *testing.T) {
	env := envFor(t)
	p := loadCompose(t, []string{"docker-compose.yml"}, env, nil)
	get := func(svc, k string) string {
		if v := p.Services[svc].Environment[k]; v != nil {
			return *v
		}
		return ""
	}
	for _, c := range []struct{ svc, key, want string }{
		{"herd-server", "HERD_AUTH_TOKEN", "HERD_AUTH_TOKEN"},
		{"herd-server", "HERD_SERVICE_TOKEN", "HERD_SERVICE_TOKEN"},
		{"herd-server", "HERD_BMC_TOKEN", "HERD_BMC_TOKEN"},
		{"herd-boots", "HERD_TOKEN", "HERD_SERVICE_TOKEN"},
		{"herd-metadata", "HERD_TOKEN", "HERD_SERVICE_TOKEN"},
		{"herd-bmc", "HERD_TOKEN", "HERD_BMC_TOKEN"},
	} {
		if got := get(c.svc, c.key); got == "" || got != env[c.want] {
			t.Errorf("%s %s = %q, want %s (%q)", c.svc, c.key, got, c.want, env[c.want])
		}
	}
	for name, s := range p.Services {
		if name == "herd-server" || name == "herd-bmc" {
			continue
		}
		for k, v := range s.Environment {
			if v != nil && *v == env["HERD_BMC_TOKEN"] {
				t.Errorf("%s gets the BMC agent's token as %s", name, k)
			}
		}
	}
	if got, want := get("herd-bmc", "HERD_BMC_HTTP_ADDR"), env["HERD_HOST_IP"]+":42115"; got != want {
		t.Errorf("herd-bmc HERD_BMC_HTTP_ADDR = %q, want %q", got, want)
	}
	if got, want := get("herd-bmc", "HERD_SERVER"), env["HERD_HOST_IP"]+":42113"; got != want {
		t.Errorf("herd-bmc HERD_SERVER = %q, want %q", got, want)
	}
}

// envFor is a generated envrc's settings, as the shell would hand them to
// docker-compose.
func envFor(t *testing.T) map[string]string {
	v, _ := envrc(t, []string{"HERD_STATE_DIR=/srv/herd-state"}, "lo")
	return v
}

// loadCompose loads the files as docker compose v2 does (compose-go).
func loadCompose(t *testing.T, files []string, env map[string]string, profiles []string) *types.Project {
	t.Helper()
	var cfs []types.ConfigFile
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		cfs = append(cfs, types.ConfigFile{Filename: abs})
	}
	wd, _ := os.Getwd()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{WorkingDir: wd, ConfigFiles: cfs, Environment: env},
		func(o *loader.Options) { o.SetProjectName("herd", true); o.Profiles = profiles })
	if err != nil {
		t.Fatalf("compose v2 (compose-go) refuses %v: %v", files, err)
	}
	return p
}

// TestComposeV2Accepts: docker compose v2's own loader takes both files
// with a generated envrc, and refuses them, naming the variable, without.
func TestComposeV2Accepts(t *testing.T) {
	env := envFor(t)
	p := loadCompose(t, []string{"docker-compose.yml"}, env, []string{"setup", "tools"})
	if len(p.Services) != 8 {
		t.Errorf("services: %v", p.ServiceNames())
	}
	if got := p.Services["herd-boots"].Environment["HERD_PUBLIC_IP"]; got == nil || *got != env["HERD_HOST_IP"] {
		t.Errorf("herd-boots HERD_PUBLIC_IP = %v", got)
	}
	env["HERD_DB_URL"] = "postgres://herd:x@db.example:5432/herd"
	p = loadCompose(t, composeFiles, env, nil)
	if got := p.Services["herd-server"].Environment["HERD_DB_URL"]; got == nil || *got != env["HERD_DB_URL"] {
		t.Errorf("external db: herd-server HERD_DB_URL = %v", got)
	}
	// compose-go warns through logrus for each unset variable.
	logrus.SetOutput(io.Discard)
	defer logrus.SetOutput(os.Stderr)
	_, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{WorkingDir: ".",
		ConfigFiles: []types.ConfigFile{{Filename: "docker-compose.yml"}}, Environment: map[string]string{}},
		func(o *loader.Options) { o.SetProjectName("herd", true) })
	if err == nil || !strings.Contains(err.Error(), "source the envrc") {
		t.Errorf("without an envrc: %v, want the hint to source it", err)
	}
}

// TestDockerComposeConfig: Debian's docker-compose 1.29 validates both
// files with a generated envrc sourced, and without one names what is
// missing.
func TestDockerComposeConfig(t *testing.T) {
	dc := command(t, "docker-compose")
	_, text := envrc(t, []string{"HERD_STATE_DIR=/srv/herd-state"}, "lo")
	// An empty --env-file: a .env a developer's setup.sh left must not
	// stand in for the envrc.
	empty := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(extra string, files ...string) (string, error) {
		args := " --env-file " + empty
		for _, f := range files {
			args += " -f " + f
		}
		cmd := exec.Command("bash", "-c", `eval "$1"; `+extra+` exec "$2"`+args+` config`, "bash", text, dc)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("", "docker-compose.yml"); err != nil {
		t.Errorf("docker-compose config: %v\n%s", err, out)
	} else if !strings.Contains(out, "herd-boots:") || !strings.Contains(out, "/srv/herd-state/webroot") {
		t.Errorf("config output lacks the services or the state dir:\n%s", out)
	}
	if out, err := run(`export HERD_DB_URL=postgres://h:p@db.example/herd;`, composeFiles...); err != nil {
		t.Errorf("external db: %v\n%s", err, out)
	}
	if out, err := run(``, composeFiles...); err == nil || !strings.Contains(out, "HERD_DB_URL") {
		t.Errorf("external db without HERD_DB_URL: %v %s", err, out)
	}
	cmd := exec.Command(dc, "--env-file", empty, "config")
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "source the envrc") {
		t.Errorf("no envrc: %v %s", err, out)
	}
}

// settings runs settings.sh's resolve_settings and write_compose_env, as
// setup.sh does, with env; it returns what .env then holds.
func settings(t *testing.T, envFile string, env ...string) (map[string]string, string, error) {
	t.Helper()
	cmd := exec.Command("bash", "-c", `set -euo pipefail
deploy=$PWD env_file=$1
fail() { printf 'setup.sh: %s\n' "$1" >&2; exit 1; }
. ./settings.sh
resolve_settings
write_compose_env`, "bash", envFile)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	got := map[string]string{}
	b, _ := os.ReadFile(envFile)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(k, "#") {
			got[k] = v
		}
	}
	return got, string(out), err
}

// TestSettingsTinkerbellNames: a Tinkerbell v0.6 envrc sourced instead of
// herd's still gives every setting; herd's names win where both are set;
// a later run keeps the secrets it made.
func TestSettingsTinkerbellNames(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), ".env")
	tink := []string{"TINKERBELL_NETWORK_INTERFACE=eth1", "TINKERBELL_HOST_IP=10.0.5.1", "TINKERBELL_CIDR=16",
		"TINKERBELL_TINK_USERNAME=admin", "TINKERBELL_TINK_PASSWORD=tinkpass", "TINKERBELL_REGISTRY_USERNAME=reguser",
		"TINKERBELL_REGISTRY_PASSWORD=regpass", "TINKERBELL_NGINX_IP=10.0.5.2"}
	got, out, err := settings(t, envFile, tink...)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for k, want := range map[string]string{"HERD_INTERFACE": "eth1", "HERD_HOST_IP": "10.0.5.1", "HERD_CIDR": "16",
		"HERD_AUTH_TOKEN": "tinkpass", "HERD_REGISTRY_USER": "reguser", "HERD_REGISTRY_PASSWORD": "regpass", "HERD_DHCP_MODE": "reservation"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if len(got["HERD_DB_PASSWORD"]) != 48 {
		t.Errorf("no database password made: %q", got["HERD_DB_PASSWORD"])
	}
	// Every variable the compose file reads is in .env.
	for k := range composeVars(t, "docker-compose.yml") {
		if _, ok := got[k]; !ok {
			t.Errorf(".env lacks %s", k)
		}
	}
	if st, _ := os.Stat(envFile); st.Mode().Perm() != 0o600 {
		t.Errorf(".env mode %v", st.Mode().Perm())
	}
	// Again with no envrc at all: .env carries everything, secrets kept.
	again, out, err := settings(t, envFile)
	if err != nil {
		t.Fatalf("second run: %v: %s", err, out)
	}
	if !maps(again, got) {
		t.Errorf("second run changed .env:\n%v\n%v", got, again)
	}
	// herd's name wins over Tinkerbell's.
	both, _, err := settings(t, envFile, append(tink, "HERD_HOST_IP=10.9.9.9")...)
	if err != nil || both["HERD_HOST_IP"] != "10.9.9.9" {
		t.Errorf("HERD_HOST_IP with both names: %q %v", both["HERD_HOST_IP"], err)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestSettingsRefuseBadValues(t *testing.T) {
	base := []string{"HERD_INTERFACE=eth1", "HERD_HOST_IP=10.0.5.1"}
	for _, c := range []struct{ env, want string }{
		{"HERD_HOST_IP=", "HERD_INTERFACE and HERD_HOST_IP are not set"},
		{"HERD_HOST_IP=10.0.5", "not an IPv4 address"},
		{"HERD_CIDR=33", "want a prefix length"},
		{"HERD_DHCP_MODE=both", "want reservation or proxy"},
		{"HERD_IPXE_PARAMS=yes", "want on, off or auto"},
		{"HERD_GRPC_PORT=70000", "want a port"},
		{"HERD_STATE_DIR=state", "absolute path"},
		{"HERD_DB_PASSWORD=a b", "more than docker-compose's .env can hold"},
		{"HERD_AUTH_TOKEN=a$b", "more than docker-compose's .env can hold"},
	} {
		envFile := filepath.Join(t.TempDir(), ".env")
		_, out, err := settings(t, envFile, append(base, c.env)...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: %v %q, want an error saying %q", c.env, err, out, c.want)
		}
		if _, err := os.Stat(envFile); err == nil {
			t.Errorf("%s: .env written after an error", c.env)
		}
	}
}

// TestSetupSaysWhatIsMissing: setup.sh stops before it changes anything
// when a prerequisite is missing, and names it with its Debian package.
func TestSetupSaysWhatIsMissing(t *testing.T) {
	command(t, "docker")
	dir := t.TempDir()
	base := append(cleanEnv(), "HERD_INTERFACE=lo", "HERD_HOST_IP=127.0.0.1", "HERD_COMPOSE_DIR="+dir,
		"HERD_STATE_DIR="+filepath.Join(dir, "state"))
	run := func(env ...string) string {
		t.Helper()
		cmd := exec.Command("./setup.sh")
		cmd.Env = append(append([]string{}, base...), env...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("exit %v, want 1:\n%s", err, out)
		}
		return string(out)
	}
	if out := run("DOCKER_HOST=unix:///nonexistent/docker.sock"); !strings.Contains(out, "no Docker engine answers at unix:///nonexistent/docker.sock") ||
		!strings.Contains(out, "apt-get install docker.io") {
		t.Errorf("no engine: %q", out)
	}
	// A PATH with every command setup.sh needs but docker-compose.
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"bash", "od", "tr", "dirname", "git", "ip", "openssl", "curl", "make", "awk", "grep", "cat", "env", "docker"} {
		p, err := exec.LookPath(c)
		if err != nil {
			missing(t, "command "+c)
		}
		if err := os.Symlink(p, filepath.Join(bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	// docker compose v2 counts as docker-compose: only test without it.
	if exec.Command("docker", "compose", "version").Run() != nil {
		if out := run("PATH=" + bin); !strings.Contains(out, "docker-compose (apt-get install docker-compose)") {
			t.Errorf("no docker-compose: %q", out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Error("setup.sh made the state directory before its checks passed")
	}
	if _, err := os.Stat(filepath.Join(dir, ".env")); err == nil {
		t.Error("setup.sh wrote .env before its checks passed")
	}
}
