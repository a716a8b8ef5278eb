package e2e

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/dockertest"
	"github.com/herd-metal/herd/worker/internal/registrytest"
)

// TestPrivateRegistry: the action image lives only in a local registry
// (Debian's docker-registry); the worker pulls it through --registry, over
// plain HTTP on loopback, and over TLS with the registry's own CA
// (--registry-ca-file written to the engine's certs.d). The TLS registry
// and its dockerd run in a network namespace on a 10.x address, since
// Docker never checks certificates of loopback registries; without the CA
// the pull fails.
func TestPrivateRegistry(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"http on loopback", false}, {"tls with own CA", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			d := e.d
			var reg *registrytest.Registry
			certsDir := ""
			if tc.tls {
				const ip = "10.213.0.1"
				ns := registrytest.NetNS(t, ip)
				reg = registrytest.Start(t, registrytest.Options{IP: ip, NetNS: ns, TLS: true})
				cfg := t.TempDir()
				certsDir = filepath.Join(cfg, "certs.d")
				var err error
				d, err = dockertest.StartWith(dockertest.Options{ConfigDir: cfg, NetNS: ns})
				if err != nil {
					t.Fatal(err) // dockerd itself is checked by setup
				}
				t.Cleanup(func() {
					if err := d.Stop(); err != nil {
						t.Error(err)
					}
				})
			} else {
				reg = registrytest.Start(t, registrytest.Options{})
			}
			rt, err := docker.New(docker.Config{Host: d.Host, Registry: reg.Addr, RegistryCA: reg.CA, CertsDir: certsDir},
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Close() })

			// Put the image in the registry, and only there.
			const name = "herd/regprog:v1"
			remote := reg.Addr + "/" + name
			if err := d.ImportTestProg(ctx(t), name); err != nil {
				t.Fatal(err)
			}
			if err := d.Client.ImageTag(ctx(t), name, remote); err != nil {
				t.Fatal(err)
			}
			push(t, d, remote, reg, registry.AuthConfig{})
			removeImages(t, d, name, remote)

			id := e.workflow(t, "fromreg", echoTemplate("fromreg", name, "pulled from the registry"))
			w := e.workerWith(t, e.server(t, hw1), rt)
			if _, err := w.RunOnce(ctx(t)); err != nil {
				t.Fatal(err)
			}
			trail, msgs := e.events(t, id)
			if !equal(trail, []string{"hello:RUNNING", "hello:SUCCESS"}) {
				t.Fatalf("events %q, messages %q\nregistry log:\n%s\nworker log:\n%s", trail, msgs, reg.Log(), e.logBuf.String())
			}
			if got := e.logs(t, id); !equal(got, []string{"hello stdout pulled from the registry"}) {
				t.Errorf("stored output %q", got)
			}
			if !tc.tls {
				return
			}
			// The CA is what made it work.
			removeImages(t, d, remote)
			if err := os.Remove(filepath.Join(certsDir, reg.Addr, "ca.crt")); err != nil {
				t.Fatal(err)
			}
			if err := rt.Pull(ctx(t), name); err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("pull without the CA: %v", err)
			}
		})
	}
}

func push(t *testing.T, d *dockertest.Daemon, ref string, reg *registrytest.Registry, cred registry.AuthConfig) {
	t.Helper()
	auth, err := registry.EncodeAuthConfig(cred)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Client.ImagePush(context.Background(), ref, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	out, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || strings.Contains(string(out), `"error"`) {
		t.Fatalf("push %s: %v %s\nregistry log:\n%s\ndockerd log:\n%s", ref, err, out, reg.Log(), d.Log())
	}
}

// TestPrivateRegistryAuth: the registry demands a user and password
// (htpasswd, as a private registry behind --registry-user and
// --registry-password would). It serves TLS with its own CA on a 10.x
// address in a namespace, with its dockerd there too: Docker sends
// credentials only over TLS to such a registry. With the right credentials
// the action runs; without them, or with a wrong password, the action
// fails at once with a message that names the registry and says the
// credentials were refused.
func TestPrivateRegistryAuth(t *testing.T) {
	const (
		ip       = "10.213.1.1"
		user     = "herd-ci"
		password = "s3cret-pull"
		name     = "herd/authprog:v1"
	)
	dockertest.Get(t) // fails under CI=true (else skips) without dockerd
	ns := registrytest.NetNS(t, ip)
	reg := registrytest.Start(t, registrytest.Options{IP: ip, NetNS: ns, TLS: true, User: user, Password: password})
	cfg := t.TempDir()
	certsDir := filepath.Join(cfg, "certs.d")
	d, err := dockertest.StartWith(dockertest.Options{ConfigDir: cfg, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := docker.TrustRegistryCA(certsDir, reg.Addr, reg.CA); err != nil {
		t.Fatal(err)
	}

	// Put the image in the registry, and only there.
	remote := reg.Addr + "/" + name
	if err := d.ImportTestProg(ctx(t), name); err != nil {
		t.Fatal(err)
	}
	if err := d.Client.ImageTag(ctx(t), name, remote); err != nil {
		t.Fatal(err)
	}
	push(t, d, remote, reg, registry.AuthConfig{Username: user, Password: password, ServerAddress: reg.Addr})
	removeImages(t, d, name, remote)

	for _, tc := range []struct {
		name, user, password string
		ok                   bool
		says                 string // in the FAILED message, besides the registry
	}{
		{"no credentials", "", "", false, "no credentials were sent"},
		{"wrong password", user, "not-" + password, false, "user or password is wrong"},
		{"right credentials", user, password, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			rt, err := docker.New(docker.Config{Host: d.Host, Registry: reg.Addr, Username: tc.user, Password: tc.password,
				RegistryCA: reg.CA, CertsDir: certsDir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rt.Close() })
			id := e.workflow(t, "authreg", echoTemplate("authreg", name, "pulled with credentials"))
			w := e.workerWith(t, e.server(t, hw1), rt)
			if _, err := w.RunOnce(ctx(t)); err != nil {
				t.Fatal(err)
			}
			trail, msgs := e.events(t, id)
			if tc.ok {
				if !equal(trail, []string{"hello:RUNNING", "hello:SUCCESS"}) {
					t.Fatalf("events %q, messages %q\nregistry log:\n%s\nworker log:\n%s", trail, msgs, reg.Log(), e.logBuf.String())
				}
				if got := e.logs(t, id); !equal(got, []string{"hello stdout pulled with credentials"}) {
					t.Errorf("stored output %q", got)
				}
				removeImages(t, d, remote)
				return
			}
			if !equal(trail, []string{"hello:RUNNING", "hello:FAILED"}) {
				t.Fatalf("events %q, messages %q\nworker log:\n%s", trail, msgs, e.logBuf.String())
			}
			msg := msgs["hello:FAILED"]
			for _, want := range []string{"registry " + reg.Addr + ": authentication failed", "unauthorized", tc.says} {
				if !strings.Contains(msg, want) {
					t.Errorf("FAILED message %q does not say %q", msg, want)
				}
			}
		})
	}
}

func removeImages(t *testing.T, d *dockertest.Daemon, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		if _, err := d.Client.ImageRemove(ctx(t), ref, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Fatalf("remove %s: %v", ref, err)
		}
	}
}

// echoTemplate is a template named name with one action, hello, that runs
// image to echo words.
func echoTemplate(name, image, words string) string {
	return `version: "0.1"
name: ` + name + `
tasks:
  - name: t
    worker: "{{.device_1}}"
    actions:
      - name: hello
        image: ` + image + `
        timeout: 60
        command: [echo, ` + words + `]
`
}
