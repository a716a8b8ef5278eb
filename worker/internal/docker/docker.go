// Package docker is the worker's container runtime over the Docker Engine
// API (github.com/docker/docker/client, API version negotiated with the
// daemon, so the OSIE's dockerd may be older or newer than this client).
package docker

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/herd-metal/herd/worker/internal/runner"
)

// Pull policies.
const (
	PullAlways  = "always"  // Tinkerbell's behaviour: a tag may have moved
	PullMissing = "missing" // only when the engine does not have the image
)

// Config says where the engine is and where images come from.
type Config struct {
	// Host is the engine's address (unix:///var/run/docker.sock when
	// empty, or DOCKER_HOST's form).
	Host string
	// Registry, when set, prefixes image names that name no registry of
	// their own ("ubuntu-install" -> "10.1.0.1:5000/ubuntu-install").
	Registry string
	// Username and Password authenticate to Registry (and only to it).
	Username, Password string
	// PullPolicy is PullAlways (default) or PullMissing.
	PullPolicy string
	// NetworkMode of the action containers (default "host": the actions
	// run on the machine being provisioned and reach what it reaches).
	NetworkMode string
	// RegistryCA, when set, is a PEM file of the CA that signed Registry's
	// certificate. New writes it where the Docker engine looks for a
	// registry's CA on every pull: CertsDir/<host:port>/ca.crt.
	RegistryCA string
	// CertsDir is the engine's registry certificate directory (default
	// DefaultCertsDir; dockerd reads it, it has no flag to move it).
	CertsDir string
}

// DefaultCertsDir is where dockerd looks for registry CAs.
const DefaultCertsDir = "/etc/docker/certs.d"

// Runtime implements runner.Runtime over a Docker engine.
type Runtime struct {
	cfg Config
	c   *client.Client
	log *slog.Logger
}

var _ runner.Runtime = (*Runtime)(nil)

// New returns a Runtime; it does not contact the engine yet.
func New(cfg Config, log *slog.Logger) (*Runtime, error) {
	switch cfg.PullPolicy {
	case "":
		cfg.PullPolicy = PullAlways
	case PullAlways, PullMissing:
	default:
		return nil, fmt.Errorf("pull policy %q: want %s or %s", cfg.PullPolicy, PullAlways, PullMissing)
	}
	cfg.Registry = strings.TrimRight(strings.TrimPrefix(strings.TrimPrefix(cfg.Registry, "https://"), "http://"), "/")
	if cfg.NetworkMode == "" {
		cfg.NetworkMode = "host"
	}
	if cfg.RegistryCA != "" {
		if cfg.CertsDir == "" {
			cfg.CertsDir = DefaultCertsDir
		}
		if err := TrustRegistryCA(cfg.CertsDir, cfg.Registry, cfg.RegistryCA); err != nil {
			return nil, err
		}
		log.Info("trusting the registry's CA", "registry", cfg.Registry, "ca_file", cfg.RegistryCA, "certs_dir", cfg.CertsDir)
	}
	opts := []client.Opt{client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	} else {
		opts = append(opts, client.FromEnv)
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", cfg.Host, err)
	}
	return &Runtime{cfg: cfg, c: c, log: log}, nil
}

// Close releases the client's connections.
func (r *Runtime) Close() error { return r.c.Close() }

// Ping checks that the engine answers (for /healthz).
func (r *Runtime) Ping(ctx context.Context) error {
	if _, err := r.c.Ping(ctx); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	return nil
}

// Reference is the image name to pull: image itself when it names a
// registry (its first component has a dot or a port, or is localhost) or
// no registry is configured, else registry/image.
func Reference(registry, image string) string {
	if registry == "" || namesRegistry(image) {
		return image
	}
	return strings.TrimRight(registry, "/") + "/" + image
}

func namesRegistry(image string) bool {
	first, _, ok := strings.Cut(image, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

func registryOf(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return ""
}

// Pull implements runner.Runtime: it pulls the image (with the registry's
// credentials when the image comes from the configured registry) and logs
// the progress.
func (r *Runtime) Pull(ctx context.Context, img string) error {
	ref := Reference(r.cfg.Registry, img)
	if r.cfg.PullPolicy == PullMissing {
		if _, err := r.c.ImageInspect(ctx, ref); err == nil {
			return nil
		} else if !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("docker engine: %w", err)
		}
	}
	opts := image.PullOptions{}
	withAuth := r.cfg.Username != "" && registryOf(ref) == hostOf(r.cfg.Registry)
	if withAuth {
		auth, err := registry.EncodeAuthConfig(registry.AuthConfig{
			Username: r.cfg.Username, Password: r.cfg.Password, ServerAddress: hostOf(r.cfg.Registry),
		})
		if err != nil {
			return err
		}
		opts.RegistryAuth = auth
	}
	log := r.log.With("image", ref)
	log.InfoContext(ctx, "pulling image")
	body, err := r.c.ImagePull(ctx, ref, opts)
	if err == nil {
		defer body.Close()
		err = progress(ctx, log, body)
	}
	return authError(ref, withAuth, err)
}

// authError says plainly that the registry refused the credentials, and
// which registry: the engine's own words differ by case ("no basic auth
// credentials" naming the URL, "unauthorized: authentication required"
// naming nothing). Other errors pass unchanged.
func authError(ref string, withAuth bool, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if !cerrdefs.IsUnauthorized(err) && !strings.Contains(msg, "unauthorized") &&
		!strings.Contains(msg, "no basic auth credentials") && !strings.Contains(msg, "authentication required") {
		return err
	}
	reg := registryOf(ref)
	if reg == "" {
		reg = "docker.io"
	}
	// Both spellings: the flags, and the OSIE's kernel command line.
	hint := "no credentials were sent for it: set --registry-user and --registry-password, and --registry to it (in the OSIE: herd.registry_user, herd.registry_pass, herd.registry)"
	if withAuth {
		hint = "the user or password is wrong (--registry-user, --registry-password; in the OSIE: herd.registry_user, herd.registry_pass)"
	}
	return fmt.Errorf("registry %s: authentication failed (unauthorized) pulling %s: %s: %w", reg, ref, hint, err)
}

func hostOf(registry string) string {
	h, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(registry, "https://"), "http://"), "/")
	return h
}

// pullMessage is one line of the engine's pull progress stream.
type pullMessage struct {
	Status         string `json:"status"`
	ID             string `json:"id"`
	Error          string `json:"error"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
}

// progress logs a pull's progress (each layer's steps, downloads at most
// every few seconds) and returns the error the stream ends with, if any.
func progress(ctx context.Context, log *slog.Logger, body io.Reader) error {
	dec := json.NewDecoder(body)
	last := map[string]time.Time{}
	for {
		var m pullMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading pull progress: %w", err)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if m.ProgressDetail.Total > 0 {
			if time.Since(last[m.ID]) < 3*time.Second {
				continue
			}
			last[m.ID] = time.Now()
			log.DebugContext(ctx, "pull progress", "layer", m.ID, "status", m.Status,
				"bytes", m.ProgressDetail.Current, "total", m.ProgressDetail.Total)
			continue
		}
		log.InfoContext(ctx, "pull", "layer", m.ID, "status", m.Status)
	}
}

// Create implements runner.Runtime.
func (r *Runtime) Create(ctx context.Context, c runner.Container) (string, error) {
	cfg := &container.Config{
		Image:        Reference(r.cfg.Registry, c.Image),
		Cmd:          c.Command,
		Env:          c.Env,
		Labels:       c.Labels,
		AttachStdout: true,
		AttachStderr: true,
	}
	host := &container.HostConfig{
		Binds:       c.Binds,
		PidMode:     container.PidMode(c.PidMode),
		Privileged:  c.Privileged,
		NetworkMode: container.NetworkMode(r.cfg.NetworkMode),
	}
	// A container of the same name left by a worker that died is removed
	// first: names are per action, and the action runs again.
	if err := r.Remove(ctx, c.Name); err != nil {
		return "", err
	}
	resp, err := r.c.ContainerCreate(ctx, cfg, host, nil, nil, c.Name)
	if err != nil {
		return "", err
	}
	return resp.ID, nil
}

// Start implements runner.Runtime.
func (r *Runtime) Start(ctx context.Context, id string) error {
	return r.c.ContainerStart(ctx, id, container.StartOptions{})
}

// Logs implements runner.Runtime: stdout and stderr, line by line, until
// the container ends.
func (r *Runtime) Logs(ctx context.Context, id string, line func(stream, text string)) error {
	rc, err := r.c.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		return err
	}
	defer rc.Close()
	var mu sync.Mutex
	emit := func(stream string) func(string) {
		return func(s string) { mu.Lock(); defer mu.Unlock(); line(stream, s) }
	}
	out, errOut := &lineWriter{emit: emit(runner.Stdout)}, &lineWriter{emit: emit(runner.Stderr)}
	_, err = stdcopy.StdCopy(out, errOut, rc)
	out.flush()
	errOut.flush()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Wait implements runner.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (int64, error) {
	okc, errc := r.c.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case res := <-okc:
		if res.Error != nil && res.Error.Message != "" {
			return res.StatusCode, errors.New(res.Error.Message)
		}
		return res.StatusCode, nil
	case err := <-errc:
		return 0, err
	}
}

// Stop implements runner.Runtime.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	secs := int(grace.Round(time.Second) / time.Second)
	err := r.c.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// Remove implements runner.Runtime; a container that is not there is fine.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	err := r.c.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// lineWriter cuts a byte stream into lines.
type lineWriter struct {
	buf  bytes.Buffer
	emit func(string)
}

const maxLineBytes = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			if w.buf.Len() > maxLineBytes { // no newline in sight: cut
				w.emit(w.buf.String())
				w.buf.Reset()
			}
			return len(p), nil
		}
		w.emit(strings.TrimRight(string(w.buf.Next(i+1)), "\r\n"))
	}
}

func (w *lineWriter) flush() {
	if w.buf.Len() > 0 {
		w.emit(w.buf.String())
		w.buf.Reset()
	}
}

// TrustRegistryCA copies the PEM CA certificate(s) of caFile to
// certsDir/<registry host[:port]>/ca.crt, where the Docker engine reads
// them on each pull from that registry (no restart needed).
func TrustRegistryCA(certsDir, registry, caFile string) error {
	host := hostOf(registry)
	if host == "" {
		return fmt.Errorf("registry CA %s given but no registry to trust it for: set the registry too", caFile)
	}
	if strings.ContainsAny(host, `/\`) || host == "." || host == ".." {
		return fmt.Errorf("registry %q: not a host[:port]", registry)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("registry CA: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("registry CA %s: no PEM certificate in it", caFile)
	}
	dir := filepath.Join(certsDir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("registry CA: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ca-*.tmp") // dockerd reads *.crt only
	if err != nil {
		return fmt.Errorf("registry CA: %w", err)
	}
	_, werr := tmp.Write(pem)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("registry CA: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "ca.crt")); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("registry CA: %w", err)
	}
	return nil
}
