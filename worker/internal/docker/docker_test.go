package docker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/certs"
	"github.com/herd-metal/herd/worker/internal/dockertest"
	"github.com/herd-metal/herd/worker/internal/runner"
)

func TestMain(m *testing.M) { os.Exit(dockertest.Main(m.Run)) }

const prog = "herd-test/prog:v1"

var importOnce sync.Once

func setup(t *testing.T) (*Runtime, *dockertest.Daemon) {
	t.Helper()
	d := dockertest.Get(t)
	var err error
	importOnce.Do(func() { err = d.ImportTestProg(context.Background(), prog) })
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Host: d.Host, PullPolicy: PullMissing}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, d
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// run runs one container to its end and returns its exit code and output.
func run(t *testing.T, r *Runtime, c runner.Container) (int64, []string) {
	t.Helper()
	if err := r.Pull(ctx(t), c.Image); err != nil {
		t.Fatal(err)
	}
	id, err := r.Create(ctx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Remove(context.Background(), id); err != nil {
			t.Error(err)
		}
	}()
	if err := r.Start(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	code, err := r.Wait(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	if err := r.Logs(ctx(t), id, func(_, l string) { lines = append(lines, l) }); err != nil {
		t.Fatal(err)
	}
	return code, lines
}

func TestReference(t *testing.T) {
	for _, tc := range []struct{ registry, image, want string }{
		{"", "image2disk:v1", "image2disk:v1"},
		{"10.1.0.1:5000", "image2disk:v1", "10.1.0.1:5000/image2disk:v1"},
		{"10.1.0.1:5000/", "hub/image2disk", "10.1.0.1:5000/hub/image2disk"},
		{"10.1.0.1:5000", "quay.io/tinkerbell-actions/image2disk:v1.0.0", "quay.io/tinkerbell-actions/image2disk:v1.0.0"},
		{"10.1.0.1:5000", "localhost/x", "localhost/x"},
		{"10.1.0.1:5000", "registry.local:5000/writefile:v1", "registry.local:5000/writefile:v1"},
	} {
		if got := Reference(tc.registry, tc.image); got != tc.want {
			t.Errorf("Reference(%q, %q) = %q, want %q", tc.registry, tc.image, got, tc.want)
		}
	}
}

func TestEnvVolumesPid(t *testing.T) {
	r, _ := setup(t)
	vol := t.TempDir()
	code, out := run(t, r, runner.Container{
		Name: "herd-test-env", Image: prog, Command: []string{"env", "DEST_DISK", "EMPTY"},
		Env: []string{"DEST_DISK=/dev/sda", "EMPTY="},
	})
	if code != 0 || !slices.Equal(out, []string{"DEST_DISK=/dev/sda", "EMPTY="}) {
		t.Errorf("env: exit %d, output %q", code, out)
	}
	code, out = run(t, r, runner.Container{
		Name: "herd-test-vol", Image: prog, Command: []string{"append", "/mnt/x/log", "hello"},
		Binds: []string{vol + ":/mnt/x"},
	})
	if b, _ := os.ReadFile(filepath.Join(vol, "log")); code != 0 || string(b) != "hello\n" {
		t.Errorf("volume: exit %d, output %q, file %q", code, out, b)
	}
	_, own := run(t, r, runner.Container{Name: "herd-test-pid", Image: prog, Command: []string{"pid"}})
	_, host := run(t, r, runner.Container{Name: "herd-test-pidhost", Image: prog, Command: []string{"pid"}, PidMode: "host"})
	if !slices.Equal(own, []string{"pid 1"}) || len(host) != 1 || host[0] == "pid 1" {
		t.Errorf("pid: own namespace %q, host namespace %q", own, host)
	}
}

func TestExitCodeAndOutput(t *testing.T) {
	r, _ := setup(t)
	code, out := run(t, r, runner.Container{Name: "herd-test-exit", Image: prog, Command: []string{"exit", "7", "first", "second"}})
	if code != 7 || !slices.Equal(out, []string{"first", "second"}) {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestStopAndRemove(t *testing.T) {
	r, d := setup(t)
	id, err := r.Create(ctx(t), runner.Container{Name: "herd-test-stop", Image: prog, Command: []string{"sleep", "1h"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx(t), 500*time.Millisecond)
	defer cancel()
	if _, err := r.Wait(wctx, id); err == nil {
		t.Fatal("Wait returned before the deadline for a sleeping container")
	}
	start := time.Now()
	if err := r.Stop(ctx(t), id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 4*time.Second {
		t.Errorf("stop took %s: SIGTERM did not reach the program", time.Since(start))
	}
	code, err := r.Wait(ctx(t), id)
	if err != nil || code != 143 {
		t.Errorf("after stop: exit %d, %v", code, err)
	}
	if err := r.Remove(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx(t), id); err != nil {
		t.Errorf("removing again: %v", err)
	}
	if ids, err := d.Containers(ctx(t)); err != nil || len(ids) != 0 {
		t.Errorf("containers left: %v (%v)", ids, err)
	}
}

func TestMissingImage(t *testing.T) {
	r, _ := setup(t)
	// A registry that refuses connections: the pull must fail at once.
	err := r.Pull(ctx(t), "127.0.0.1:1/herd/nope:v1")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("pull of a missing image: %v", err)
	}
	_, err = r.Create(ctx(t), runner.Container{Name: "herd-test-missing", Image: "herd/nope:v1", Command: []string{"x"}})
	if err == nil || !strings.Contains(err.Error(), "herd/nope") {
		t.Errorf("create from a missing image: %v", err)
	}
}

func TestStartFailure(t *testing.T) {
	r, _ := setup(t)
	id, err := r.Create(ctx(t), runner.Container{Name: "herd-test-nostart", Image: prog, Command: []string{"x"},
		Binds: []string{"/nonexistent/herd-test/file:/etc/hostname/sub"}})
	if err == nil {
		defer r.Remove(context.Background(), id)
		err = r.Start(ctx(t), id)
	}
	if err == nil {
		t.Error("a container with an impossible bind started")
	}
}

func TestDeadEngine(t *testing.T) {
	r, err := New(Config{Host: "unix:///nonexistent/docker.sock"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Ping(ctx(t)); err == nil || !strings.Contains(err.Error(), "docker") {
		t.Errorf("ping: %v", err)
	}
	if err := r.Pull(ctx(t), prog); err == nil {
		t.Error("pull from a dead engine succeeded")
	}
}

// TestAuthError: the engine's refusals (its words as dockerd 20.10 gives
// them) become one message naming the registry; other errors pass as they
// are.
func TestAuthError(t *testing.T) {
	for _, tc := range []struct {
		ref      string
		withAuth bool
		err      string
		want     string // "" for unchanged
	}{
		{"10.2.0.1:5000/a:v1", false, `Error response from daemon: Head "https://10.2.0.1:5000/v2/a/manifests/v1": no basic auth credentials`,
			"registry 10.2.0.1:5000: authentication failed (unauthorized) pulling 10.2.0.1:5000/a:v1: no credentials were sent"},
		{"10.2.0.1:5000/a:v1", true, "Error response from daemon: unauthorized: authentication required",
			"registry 10.2.0.1:5000: authentication failed (unauthorized) pulling 10.2.0.1:5000/a:v1: the user or password is wrong"},
		{"herd/a:v1", false, "Error response from daemon: pull access denied for herd/a, repository does not exist or may require 'docker login': denied: requested access to the resource is denied", ""},
		{"10.2.0.1:5000/a:v1", true, "Error response from daemon: manifest for 10.2.0.1:5000/a:v1 not found", ""},
	} {
		err := authError(tc.ref, tc.withAuth, errors.New(tc.err))
		if tc.want == "" {
			if err.Error() != tc.err {
				t.Errorf("%q became %q", tc.err, err)
			}
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) || !strings.HasSuffix(err.Error(), tc.err) {
			t.Errorf("%q became %q, want it to start %q", tc.err, err, tc.want)
		}
	}
	if authError("r:5000/a", true, nil) != nil {
		t.Error("nil error became non-nil")
	}
}

func TestTrustRegistryCA(t *testing.T) {
	dir := t.TempDir()
	files, err := certs.Ensure(filepath.Join(dir, "pki"), []string{"registry.lab"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certsDir := filepath.Join(dir, "certs.d")
	if err := TrustRegistryCA(certsDir, "https://registry.lab:5000/", files.CA); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(certsDir, "registry.lab:5000", "ca.crt"))
	want, _ := os.ReadFile(files.CA)
	if err != nil || string(got) != string(want) {
		t.Errorf("ca.crt: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(certsDir, "registry.lab:5000")); len(entries) != 1 {
		t.Errorf("left in the host's directory: %v", entries)
	}
	if err := TrustRegistryCA(certsDir, "", files.CA); err == nil || !strings.Contains(err.Error(), "no registry") {
		t.Errorf("no registry: %v", err)
	}
	if err := TrustRegistryCA(certsDir, "r:5000", files.Key); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a key as CA: %v", err)
	}
}
