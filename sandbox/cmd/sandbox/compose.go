package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The compose stack (--stack compose): the services are not started by
// the sandbox but by the operator's path, run inside the namespace against
// a private dockerd: deploy/generate-envrc.sh br0 > envrc, source envrc,
// deploy/setup.sh, docker-compose up -d.

const (
	stackProcess = "process"
	stackCompose = "compose"
)

// The compose stack's files in the state directory.
const (
	composeDirName  = "compose"      // a copy of deploy/'s compose files; setup.sh writes .env there
	deployStateName = "deploy-state" // HERD_STATE_DIR
)

// dockerHost is the private engine's address (startDockerd).
func (sb *sandbox) dockerHost() string {
	return "unix://" + filepath.Join(sb.dir, "docker", "docker.sock")
}

// downCompose removes what a compose stack left running (make sandbox
// STACK=compose leaves it up), before its engine is stopped; quietly, as
// down goes on either way.
func (sb *sandbox) downCompose() {
	if !exists(filepath.Join(sb.dir, composeDirName, ".env")) || !exists(filepath.Join(sb.dir, "docker", "docker.sock")) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sb.say("docker-compose down -v (the stack in %s)", filepath.Join(sb.dir, composeDirName))
	if _, err := sb.compose(ctx, sb.composeEnv(sb.dockerHost()), "down", "-v"); err != nil {
		sb.say("  %v", err)
	}
}

// composeEnv is what the operator's shell holds besides the envrc: the
// private engine, a Docker client config of the run's own, and where the
// sandbox wants setup.sh's files. HERD_ and TINKERBELL_ settings of the
// caller's shell are left out.
func (sb *sandbox) composeEnv(dockerHost string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERD_") && !strings.HasPrefix(kv, "TINKERBELL_") && !strings.HasPrefix(kv, "DOCKER_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"DOCKER_HOST="+dockerHost,
		"DOCKER_CONFIG="+filepath.Join(sb.dir, "docker-config"),
		// The classic builder: BuildKit is not part of Debian's docker.io.
		"DOCKER_BUILDKIT=0",
		"COMPOSE_DOCKER_CLI_BUILD=0",
		// Presets generate-envrc.sh prints instead of its defaults.
		"HERD_STATE_DIR="+filepath.Join(sb.dir, deployStateName),
		"HERD_LOG_LEVEL=debug", // the live view follows herd-boots' per-packet lines
		// Where setup.sh puts the registry's CA for the host's engine: the
		// private engine trusts the registry by --insecure-registry instead,
		// and the host's /etc/docker stays untouched.
		"HERD_DOCKER_CERTS_DIR="+filepath.Join(sb.dir, "docker-certs"),
		"HERD_COMPOSE_DIR="+filepath.Join(sb.dir, composeDirName),
	)
}

// deployShell runs a bash command line inside the namespace with env, its
// output in logs/deploy.log, and shows it as the operator would type it.
func (sb *sandbox) deployShell(ctx context.Context, env []string, shown, script string) error {
	sb.say("$ %s", shown)
	f, err := os.OpenFile(sb.logPath("deploy"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "\n$ %s\n", shown)
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+nsPath(), "--", "bash", "-c", "set -euo pipefail; "+script)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env // the operator's shell: no settings of the caller's
	t := time.Now()
	if err := cmd.Run(); err != nil {
		return sb.withLog(fmt.Errorf("%s: %w", shown, err), "deploy")
	}
	sb.say("  done in %s", fmtDur(time.Since(t)))
	return nil
}

// startCompose brings the stack up the operator's way and returns the herd
// CLI's environment and the tag the action images were pushed with.
func (sb *sandbox) startCompose(ctx context.Context) (clientEnv []string, tag string, err error) {
	o := sb.opts
	deploy := filepath.Join(o.repo, "deploy")
	composeDir := filepath.Join(sb.dir, composeDirName)
	if err := os.MkdirAll(composeDir, 0o755); err != nil {
		return nil, "", err
	}
	for _, f := range []string{"docker-compose.yml", "docker-compose.external-db.yml"} {
		if err := copyFile(filepath.Join(deploy, f), filepath.Join(composeDir, f)); err != nil {
			return nil, "", err
		}
	}
	sb.stage("Docker engine for the stack: private dockerd in %s (data under %s/docker)", nsName, sb.dir)
	host, _, err := sb.startDockerd(ctx, 36)
	if err != nil {
		return nil, "", err
	}
	if host != sb.dockerHost() {
		return nil, "", fmt.Errorf("dockerd at %s, want %s", host, sb.dockerHost())
	}
	env := sb.composeEnv(host)
	// The namespace has no way out, and the PostgreSQL and registry images
	// are made from Debian's packages (mmdebstrap): build them here, in the
	// host's network; setup.sh's make images then finds them current.
	sb.stage("images: make images against the private engine, from the host's network (log: %s)", sb.logPath("images"))
	if err := sb.runLogged(ctx, "images", []string{"DOCKER_HOST=" + host, "DOCKER_BUILDKIT=0"}, "make", "-C", o.repo, "images"); err != nil {
		return nil, "", err
	}
	envrc := filepath.Join(sb.dir, "envrc")
	sb.stage("deploying as an operator would (log: %s)", sb.logPath("deploy"))
	steps := []struct{ shown, script string }{
		{"deploy/generate-envrc.sh " + bridge + " > envrc", fmt.Sprintf("%q %q > %q", filepath.Join(deploy, "generate-envrc.sh"), bridge, envrc)},
		{"source ./envrc && deploy/setup.sh", fmt.Sprintf("source %q && %q", envrc, filepath.Join(deploy, "setup.sh"))},
		{"cd deploy && docker-compose up -d", fmt.Sprintf("source %q && cd %q && docker-compose up -d", envrc, composeDir)},
	}
	for _, s := range steps {
		if err := sb.deployShell(ctx, env, s.shown, s.script); err != nil {
			return nil, "", err
		}
	}
	settings, err := readEnvrc(ctx, envrc, "HERD_AUTH_TOKEN", "HERD_VERSION", "HERD_HOST_IP", "HERD_SERVICE_TOKEN", "HERD_BMC_TOKEN", "HERD_REGISTRY_PASSWORD", "HERD_DB_PASSWORD")
	if err != nil {
		return nil, "", err
	}
	sb.addSecret("the admin token", settings["HERD_AUTH_TOKEN"])
	sb.addSecret("the service token", settings["HERD_SERVICE_TOKEN"])
	sb.addSecret("the BMC agent's token", settings["HERD_BMC_TOKEN"])
	sb.addSecret("the registry password", settings["HERD_REGISTRY_PASSWORD"])
	sb.addSecret("the database password", settings["HERD_DB_PASSWORD"])
	if settings["HERD_HOST_IP"] != hostIP {
		return nil, "", fmt.Errorf("generate-envrc.sh %s gave HERD_HOST_IP=%s, want %s", bridge, settings["HERD_HOST_IP"], hostIP)
	}
	for _, u := range []string{"http://" + httpAddr + "/healthz", "http://" + metaAddr + "/healthz", "http://" + bootsHTTP + "/healthz", "http://" + bmcHTTP + "/healthz"} {
		if err := waitHTTP(ctx, u, nil, 90*time.Second); err != nil {
			return nil, "", sb.withLog(err, "deploy")
		}
	}
	sb.say("herd-server, herd-metadata, herd-boots and herd-bmc answer /healthz")
	if err := sb.crashServer(ctx, env); err != nil {
		return nil, "", err
	}
	// The live view reads the services' logs from files, as with the
	// processes: docker logs -f of each container.
	for i, svc := range []string{"herd-server", "herd-metadata", "herd-boots", "herd-bmc"} {
		id, err := sb.composeContainer(ctx, env, svc)
		if err != nil {
			return nil, "", err
		}
		if _, err := sb.startProc(spec{name: svc, order: 60 + i, env: env, args: []string{"docker", "logs", "--follow", id}}); err != nil {
			return nil, "", err
		}
	}
	clientEnv = []string{"HERD_GRPC_AUTHORITY=" + grpcAddr, "HERD_CERT_URL=http://" + httpAddr + "/cert", "HERD_TOKEN=" + settings["HERD_AUTH_TOKEN"]}
	return clientEnv, settings["HERD_VERSION"], nil
}

// readEnvrc sources the envrc in bash and returns the named settings.
func readEnvrc(ctx context.Context, path string, names ...string) (map[string]string, error) {
	script := "set -eu; source \"$1\"; shift; for n; do printf '%s\\0' \"${!n}\"; done"
	out, err := exec.CommandContext(ctx, "bash", append([]string{"-c", script, "bash", path}, names...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("sourcing %s: %w", path, err)
	}
	vals := strings.Split(string(out), "\x00")
	m := map[string]string{}
	for i, n := range names {
		if i < len(vals) {
			m[n] = vals[i]
		}
		if m[n] == "" {
			return nil, fmt.Errorf("%s sets no %s", path, n)
		}
	}
	return m, nil
}

// compose runs docker-compose in the compose directory inside the
// namespace and returns its standard output.
func (sb *sandbox) compose(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath(), "--", "docker-compose"}, args...)...)
	cmd.Dir = filepath.Join(sb.dir, composeDirName)
	cmd.Env = env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker-compose %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (sb *sandbox) composeContainer(ctx context.Context, env []string, service string) (string, error) {
	out, err := sb.compose(ctx, env, "ps", "-q", service)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(out)
	if id == "" || strings.Contains(id, "\n") {
		return "", fmt.Errorf("docker-compose ps -q %s: %q, want one container", service, id)
	}
	return id, nil
}

// containerState is what docker inspect says of a container.
type containerState struct {
	Pid, Restarts int
	Health        string
}

func dockerState(ctx context.Context, env []string, id string) (containerState, error) {
	cmd := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{.State.Pid}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", id)
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return containerState{}, fmt.Errorf("docker inspect %s: %w", id, err)
	}
	return parseDockerState(string(out))
}

func parseDockerState(s string) (containerState, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return containerState{}, fmt.Errorf("docker inspect: %q", s)
	}
	pid, err1 := strconv.Atoi(f[0])
	n, err2 := strconv.Atoi(f[1])
	if err := errors.Join(err1, err2); err != nil {
		return containerState{}, fmt.Errorf("docker inspect: %q: %w", s, err)
	}
	return containerState{Pid: pid, Restarts: n, Health: f[2]}, nil
}

// crashServer kills herd-server's process in its container (SIGKILL, as a
// crash or the OOM killer would) and checks that the restart policy brings
// it back healthy while herd-boots, herd-metadata and herd-bmc keep running: they
// reconnect by themselves (the hardware pushed after this reaches them
// only through their Watch streams, which the provisioning then proves).
// `docker kill` would not do: Docker counts it as a manual stop, which no
// restart policy undoes.
func (sb *sandbox) crashServer(ctx context.Context, env []string) error {
	sb.stage("herd-server crashes: SIGKILL of its process; the restart policy must bring it back")
	ids := map[string]string{}
	before := map[string]containerState{}
	for _, svc := range []string{"herd-server", "herd-boots", "herd-metadata", "herd-bmc"} {
		id, err := sb.composeContainer(ctx, env, svc)
		if err != nil {
			return err
		}
		st, err := dockerState(ctx, env, id)
		if err != nil {
			return err
		}
		ids[svc], before[svc] = id, st
	}
	srv := before["herd-server"]
	if srv.Pid <= 0 {
		return fmt.Errorf("herd-server's container runs no process: %+v", srv)
	}
	t := time.Now()
	if err := syscall.Kill(srv.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d (herd-server): %w", srv.Pid, err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := dockerState(ctx, env, ids["herd-server"])
		if err == nil && st.Restarts > srv.Restarts && st.Health == "healthy" {
			sb.say("herd-server restarted by its policy (restart %d) and healthy again in %s", st.Restarts, fmtDur(time.Since(t)))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("herd-server not back within 90 s of the kill: %+v %v", st, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	for _, svc := range []string{"herd-boots", "herd-metadata", "herd-bmc"} {
		st, err := dockerState(ctx, env, ids[svc])
		if err != nil {
			return err
		}
		if st.Restarts != before[svc].Restarts || st.Pid != before[svc].Pid {
			return fmt.Errorf("%s restarted with herd-server (%+v, was %+v): it must reconnect by itself", svc, st, before[svc])
		}
	}
	sb.say("herd-boots, herd-metadata and herd-bmc kept running (same process, no restart): they reconnect by themselves")
	return nil
}

// composeDown is the end of a compose run: docker-compose down must leave
// no container or network of the stack, and down -v no volume.
func (sb *sandbox) composeDown(ctx context.Context, env []string) error {
	sb.stage("docker-compose down, then down -v")
	if _, err := sb.compose(ctx, env, "down"); err != nil {
		return err
	}
	left, err := dockerLeftovers(ctx, env)
	if err != nil {
		return err
	}
	if len(left.containers) > 0 || len(left.networks) > 0 {
		return fmt.Errorf("docker-compose down left containers %v, networks %v", left.containers, left.networks)
	}
	if len(left.volumes) == 0 {
		return errors.New("docker-compose down removed the database volume (only down -v should)")
	}
	sb.say("down: no container, no network left; volume(s) %s kept", strings.Join(left.volumes, ", "))
	if _, err := sb.compose(ctx, env, "down", "-v"); err != nil {
		return err
	}
	if left, err = dockerLeftovers(ctx, env); err != nil {
		return err
	}
	if len(left.volumes) > 0 {
		return fmt.Errorf("docker-compose down -v left volumes %v", left.volumes)
	}
	sb.say("down -v: the volumes are gone too")
	return nil
}

type leftovers struct{ containers, networks, volumes []string }

// dockerLeftovers lists what the engine still holds: every container,
// every volume, and the networks besides the engine's own.
func dockerLeftovers(ctx context.Context, env []string) (leftovers, error) {
	list := func(args ...string) ([]string, error) {
		cmd := exec.CommandContext(ctx, "docker", args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
		}
		return strings.Fields(string(out)), nil
	}
	var l leftovers
	var err error
	if l.containers, err = list("ps", "-aq"); err != nil {
		return l, err
	}
	nets, err := list("network", "ls", "--format", "{{.Name}}")
	if err != nil {
		return l, err
	}
	l.networks = userNetworks(nets)
	l.volumes, err = list("volume", "ls", "-q")
	return l, err
}

// userNetworks drops the networks every engine has.
func userNetworks(names []string) []string {
	var out []string
	for _, n := range names {
		switch n {
		case "bridge", "host", "none":
		default:
			out = append(out, n)
		}
	}
	return out
}
