// Package runc is the worker's container runtime without a container
// engine: it pulls images itself (go-containerregistry), unpacks each one
// once per digest, and runs every action with `runc run` on an overlay of
// that filesystem, as a child of herd-worker. It lets the OSIE carry runc
// alone instead of dockerd, containerd and the shim; package docker stays
// the runtime on hosts that have a Docker engine.
package runc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/runner"
)

// Config says where images come from and where containers live.
type Config struct {
	// Runc is the runc binary (default: "runc" on PATH).
	Runc string
	// StateDir holds the unpacked images and the containers' bundles
	// (default DefaultStateDir). Overlay mounts are made under it.
	StateDir string
	// RuncRoot is runc's own state directory (runc --root; default
	// DefaultRuncRoot): on a tmpfs, so a reboot forgets it.
	RuncRoot string
	// NoPivot runs containers with `runc run --no-pivot`: pivot_root(2)
	// cannot move away from the initial ramfs/tmpfs root of an initramfs
	// (the OSIE's), so runc must MS_MOVE the rootfs and chroot instead
	// (what dockerd's DOCKER_RAMDISK did). Off elsewhere: pivot_root
	// leaves nothing of the host's mounts reachable.
	NoPivot bool
	// Registry, when set, prefixes image names that name no registry of
	// their own (docker.Reference).
	Registry string
	// Username and Password authenticate to Registry (and only to it).
	Username, Password string
	// Insecure makes Registry what dockerd's --insecure-registry made it
	// in the OSIE: HTTPS without checking its certificate, or plain HTTP
	// (the sandbox's registry has a certificate of its own that no CA on
	// the machine signed). Only Registry's host: any other registry, and
	// a token server elsewhere, are checked as always. A Registry written
	// http://... is insecure too.
	Insecure bool
	// RegistryCA, when set, is a PEM file of the CA that signed Registry's
	// certificate, trusted besides the system's CAs.
	RegistryCA string
	// PullPolicy is docker.PullAlways (default) or docker.PullMissing.
	PullPolicy string
}

// Defaults of Config.
const (
	DefaultStateDir = "/var/lib/herd-worker/runc"
	DefaultRuncRoot = "/run/herd-worker/runc"
)

// hostFiles are the host's files every container gets a copy of, as
// Docker gives a host-network container the host's name resolution.
var hostFiles = []string{"/etc/resolv.conf", "/etc/hosts"}

// Runtime implements runner.Runtime with runc.
type Runtime struct {
	cfg       Config
	log       *slog.Logger
	transport http.RoundTripper
	bounding  uint64 // this process's capability bounding set
	pullMu    sync.Mutex

	mu         sync.Mutex
	containers map[string]*container
}

var _ runner.Runtime = (*Runtime)(nil)

// container is one container this Runtime created.
type container struct {
	id, dir string
	out     *output
	started atomic.Bool
	done    chan struct{} // closed when runc run has exited
	code    int64
	err     error
}

// runcID is what runc accepts as a container id.
var runcID = regexp.MustCompile(`^[\w+.-]+$`)

// New returns a Runtime; it checks its settings, not runc (see Ping).
func New(cfg Config, log *slog.Logger) (*Runtime, error) {
	switch cfg.PullPolicy {
	case "":
		cfg.PullPolicy = docker.PullAlways
	case docker.PullAlways, docker.PullMissing:
	default:
		return nil, fmt.Errorf("pull policy %q: want %s or %s", cfg.PullPolicy, docker.PullAlways, docker.PullMissing)
	}
	if strings.HasPrefix(cfg.Registry, "http://") {
		cfg.Insecure = true
	}
	cfg.Registry = strings.TrimRight(strings.TrimPrefix(strings.TrimPrefix(cfg.Registry, "https://"), "http://"), "/")
	if cfg.Runc == "" {
		cfg.Runc = "runc"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.RuncRoot == "" {
		cfg.RuncRoot = DefaultRuncRoot
	}
	for _, d := range []*string{&cfg.StateDir, &cfg.RuncRoot} {
		abs, err := filepath.Abs(*d)
		if err != nil {
			return nil, err
		}
		// The overlay mount's options are comma- and colon-separated.
		if strings.ContainsAny(abs, ",:") {
			return nil, fmt.Errorf("runc state directory %q: no commas or colons, please (overlay options)", abs)
		}
		*d = abs
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.RegistryCA != "" {
		if cfg.Registry == "" {
			return nil, fmt.Errorf("registry CA %s given but no registry to trust it for: set the registry too", cfg.RegistryCA)
		}
		pem, err := os.ReadFile(cfg.RegistryCA)
		if err != nil {
			return nil, fmt.Errorf("registry CA: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("registry CA %s: no PEM certificate in it", cfg.RegistryCA)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		log.Info("trusting the registry's CA", "registry", cfg.Registry, "ca_file", cfg.RegistryCA)
	}
	bounding, err := boundingSet()
	if err != nil {
		return nil, err
	}
	var rt http.RoundTripper = t
	if cfg.Insecure && cfg.Registry != "" {
		unchecked := t.Clone()
		unchecked.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator's choice, for its registry only
		rt = hostTransport{host: hostOf(cfg.Registry), insecure: unchecked, checked: t}
	}
	return &Runtime{cfg: cfg, log: log, transport: rt, bounding: bounding, containers: map[string]*container{}}, nil
}

// hostTransport sends the requests to one host (the insecure registry)
// through a transport that does not check certificates, others through
// the checked one.
type hostTransport struct {
	host              string
	insecure, checked http.RoundTripper
}

func (h hostTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == h.host {
		return h.insecure.RoundTrip(req)
	}
	return h.checked.RoundTrip(req)
}

// boundingSet is CapBnd of /proc/self/status.
func boundingSet() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("capabilities: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("capabilities: CapBnd %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("capabilities: no CapBnd in /proc/self/status")
}

// Close implements the worker's shutdown; containers are left to Remove.
func (r *Runtime) Close() error { return nil }

// Ping checks that runc runs (for /healthz).
func (r *Runtime) Ping(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, r.cfg.Runc, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc (%s): %w: %s", r.cfg.Runc, err, bytes.TrimSpace(out))
	}
	return nil
}

// runc runs one runc command (not `run`) and returns its error with
// runc's own words.
func (r *Runtime) runc(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, r.cfg.Runc, append([]string{"--root", r.cfg.RuncRoot}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (r *Runtime) bundle(id string) string { return filepath.Join(r.cfg.StateDir, "containers", id) }

// Create implements runner.Runtime: a bundle (config.json, an overlay of
// the image's filesystem with a fresh upper directory) named c.Name. A
// container of that name left by a worker that died is removed first.
func (r *Runtime) Create(ctx context.Context, c runner.Container) (string, error) {
	id := c.Name
	if !runcID.MatchString(id) {
		return "", fmt.Errorf("container name %q: runc takes letters, digits and _+.- only", id)
	}
	if err := r.Remove(ctx, id); err != nil {
		return "", err
	}
	ref := docker.Reference(r.cfg.Registry, c.Image)
	imgDir, err := r.localImage(ref)
	if err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	if err := r.create(id, ref, imgDir, c); err != nil {
		if rerr := r.Remove(context.WithoutCancel(ctx), id); rerr != nil {
			r.log.Warn("cleaning up a container that could not be created", "container", id, "error", rerr)
		}
		return "", fmt.Errorf("container %s (image %s): %w", id, ref, err)
	}
	r.mu.Lock()
	r.containers[id] = &container{id: id, dir: r.bundle(id), out: newOutput(2), done: make(chan struct{})}
	r.mu.Unlock()
	return id, nil
}

func (r *Runtime) create(id, ref, imgDir string, c runner.Container) error {
	img, err := imageConfig(imgDir)
	if err != nil {
		return err
	}
	lower := filepath.Join(imgDir, "rootfs")
	user, err := resolveUser(lower, img.Config.User)
	if err != nil {
		return err
	}
	dir := r.bundle(id)
	for _, d := range []string{"upper", "work", "rootfs", "host"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	var files []hostFile
	for _, f := range hostFiles {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("host file: %w", err)
		}
		copyPath := filepath.Join(dir, "host", filepath.Base(f))
		if err := os.WriteFile(copyPath, b, 0o644); err != nil {
			return err
		}
		files = append(files, hostFile{Source: copyPath, Destination: f})
	}
	rootfs := filepath.Join(dir, "rootfs")
	spec, err := buildSpec(specInput{Container: c, Image: img.Config, RootFS: rootfs, User: user, HostFiles: files, Bounding: r.bounding})
	if err != nil {
		return err
	}
	// Docker's -v makes a missing host directory; so does this runtime.
	for _, m := range spec.Mounts {
		if m.Type != "bind" {
			continue
		}
		if _, err := os.Stat(m.Source); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(m.Source, 0o755); err != nil {
				return fmt.Errorf("bind source: %w", err)
			}
		}
	}
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return err
	}
	opts := "lowerdir=" + lower + ",upperdir=" + filepath.Join(dir, "upper") + ",workdir=" + filepath.Join(dir, "work")
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay mount on %s: %w", rootfs, err)
	}
	return nil
}

func (r *Runtime) get(id string) (*container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ct, ok := r.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: no such container", id)
	}
	return ct, nil
}

// Start implements runner.Runtime: `runc run` as a child whose stdout and
// stderr are pipes (no terminal), until the container runs or runc fails.
func (r *Runtime) Start(ctx context.Context, id string) error {
	ct, err := r.get(id)
	if err != nil {
		return err
	}
	if !ct.started.CompareAndSwap(false, true) {
		return fmt.Errorf("container %s: already started", id)
	}
	logFile := filepath.Join(ct.dir, "runc.log")
	args := []string{"--root", r.cfg.RuncRoot, "--log", logFile, "--log-format", "json", "run", "--bundle", ct.dir}
	if r.cfg.NoPivot {
		args = append(args, "--no-pivot")
	}
	cmd := exec.Command(r.cfg.Runc, append(args, id)...)
	outR, outW, err := os.Pipe()
	if err != nil {
		ct.started.Store(false)
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		ct.started.Store(false)
		return err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	// Its own process group: a ^C to the worker reaches it through Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		ct.started.Store(false)
		return fmt.Errorf("container %s: starting runc: %w", id, err)
	}
	go func() { defer outR.Close(); ct.out.read(runner.Stdout, outR) }()
	go func() { defer errR.Close(); ct.out.read(runner.Stderr, errR) }()
	go func() {
		werr := cmd.Wait()
		ct.code, ct.err = exitCode(werr)
		if msg := runcError(logFile); msg != "" {
			ct.err = fmt.Errorf("container %s: runc: %s", id, msg)
		}
		close(ct.done)
	}()
	// Running once runc has opened its exec fifo (it is gone then), or
	// ended: either way Start is over.
	fifo := filepath.Join(r.cfg.RuncRoot, id, "exec.fifo")
	state := filepath.Join(r.cfg.RuncRoot, id, "state.json")
	for {
		if _, err := os.Stat(state); err == nil {
			if _, err := os.Stat(fifo); errors.Is(err, fs.ErrNotExist) {
				return nil
			}
		}
		select {
		case <-ct.done:
			if ct.err != nil {
				return ct.err
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// exitCode is runc run's exit status, which is the container's (128+n
// for a signal n, as a shell and Docker report it).
func exitCode(err error) (int64, error) {
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int64(ws.Signal()), nil
	}
	return int64(ee.ExitCode()), nil
}

// runcError is the last error runc logged (JSON lines), "" when none.
func runcError(logFile string) string {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	msg := ""
	for _, l := range bytes.Split(b, []byte("\n")) {
		var e struct{ Level, Msg string }
		if json.Unmarshal(l, &e) == nil && (e.Level == "error" || e.Level == "fatal") {
			msg = e.Msg
		}
	}
	return msg
}

// Logs implements runner.Runtime: stdout and stderr, line by line, from
// the container's start until it ends.
func (r *Runtime) Logs(ctx context.Context, id string, line func(stream, text string)) error {
	ct, err := r.get(id)
	if err != nil {
		return err
	}
	return ct.out.follow(ctx, line)
}

// Wait implements runner.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (int64, error) {
	ct, err := r.get(id)
	if err != nil {
		return 0, err
	}
	if !ct.started.Load() {
		return 0, fmt.Errorf("container %s: not started", id)
	}
	select {
	case <-ct.done:
		return ct.code, ct.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Stop implements runner.Runtime: SIGTERM, and after grace SIGKILL to
// every process of the container; it returns once the container ended.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	ct, err := r.get(id)
	if err != nil || !ct.started.Load() {
		return nil // nothing runs
	}
	select {
	case <-ct.done:
		return nil
	default:
	}
	if err := r.runc(ctx, "kill", id, "TERM"); err != nil {
		r.log.Debug("SIGTERM to the container", "container", id, "error", err) // it may have just ended
	}
	select {
	case <-ct.done:
		return nil
	case <-time.After(grace):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := r.runc(ctx, "kill", "--all", id, "KILL"); err != nil {
		select {
		case <-ct.done:
			return nil
		default:
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	select {
	case <-ct.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("container %s: still running after SIGKILL: %w", id, ctx.Err())
	}
}

// Remove implements runner.Runtime: whatever is left of the container
// (runc's state, a process a dead worker left, the overlay, the bundle)
// goes; a container that is not there is fine.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	if !runcID.MatchString(id) {
		return fmt.Errorf("container name %q: runc takes letters, digits and _+.- only", id)
	}
	r.mu.Lock()
	ct := r.containers[id]
	r.mu.Unlock()
	var errs []error
	if _, err := os.Stat(filepath.Join(r.cfg.RuncRoot, id)); err == nil {
		if err := r.runc(ctx, "delete", "--force", id); err != nil {
			if _, serr := os.Stat(filepath.Join(r.cfg.RuncRoot, id)); serr == nil {
				errs = append(errs, err) // still there: a real failure
			}
		}
	}
	if ct != nil && ct.started.Load() {
		select {
		case <-ct.done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("runc run has not exited: %w", ctx.Err()))
		}
	}
	dir := r.bundle(id)
	rootfs := filepath.Join(dir, "rootfs")
	for range 8 { // stacked mounts, if any
		if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
			if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", rootfs, err))
			}
			break
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing container %s: %w", id, err)
	}
	r.mu.Lock()
	if r.containers[id] == ct {
		delete(r.containers, id)
	}
	r.mu.Unlock()
	return nil
}
