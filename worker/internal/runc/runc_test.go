package runc

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/registrytest"
	"github.com/herd-metal/herd/worker/internal/runc/runctest"
	"github.com/herd-metal/herd/worker/internal/runner"
)

const (
	regUser, regPassword = "herd", "s3cret"
	imageName            = "herd-test/prog:v1"  // entrypoint testprog
	probeImage           = "herd-test/probe:v1" // the same files, entrypoint probe
)

// need fails the test under CI=true, else skips it, when a part is missing.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %v", what, err)
	}
	t.Skipf("%s: %v (run make deps as root; under CI=true this fails)", what, err)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// registry serves the test images behind a password.
func registry(t *testing.T) *registrytest.Registry {
	t.Helper()
	reg := registrytest.Start(t, registrytest.Options{User: regUser, Password: regPassword})
	images := runctest.Images(t)
	runctest.Push(t, reg.Addr, imageName, images["/testprog"], regUser, regPassword)
	runctest.Push(t, reg.Addr, probeImage, images["/probe"], regUser, regPassword)
	return reg
}

// dirs are a runtime's state directories, kept across runtimes in a test.
type dirs struct{ state, runcRoot string }

func newDirs(t *testing.T) dirs {
	d := dirs{state: t.TempDir(), runcRoot: t.TempDir()}
	return d
}

// newRuntime is a runc runtime with the registry's credentials, pulling
// only what it lacks.
func newRuntime(t *testing.T, reg *registrytest.Registry, d dirs, user, password string) *Runtime {
	t.Helper()
	bin, err := exec.LookPath("runc")
	need(t, "runc (Debian package runc)", err)
	if os.Geteuid() != 0 {
		need(t, "root (runc and overlay mounts)", os.ErrPermission)
	}
	r, err := New(Config{Runc: bin, StateDir: d.state, RuncRoot: d.runcRoot, Registry: reg.Addr, Username: user, Password: password,
		PullPolicy: docker.PullMissing}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// setup is a registry with the test image and a runtime that pulled it.
func setup(t *testing.T) *Runtime {
	t.Helper()
	reg := registry(t)
	r := newRuntime(t, reg, newDirs(t), regUser, regPassword)
	for _, image := range []string{imageName, probeImage} {
		if err := r.Pull(ctx(t), image); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

type line struct{ stream, text string }

// run runs c to its end (Logs after Wait, as a slow reader would) and
// returns its exit code and output.
func run(t *testing.T, r *Runtime, c runner.Container) (int64, []line) {
	t.Helper()
	if c.Image == "" {
		c.Image = imageName
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
	var out []line
	if err := r.Logs(ctx(t), id, func(s, l string) { out = append(out, line{s, l}) }); err != nil {
		t.Fatal(err)
	}
	return code, out
}

func texts(out []line) []string {
	var s []string
	for _, l := range out {
		s = append(s, l.text)
	}
	return s
}

func TestPullCredentials(t *testing.T) {
	reg := registry(t)
	for _, tc := range []struct {
		name, user, password string
		want                 string // "" for success
	}{
		{"right credentials", regUser, regPassword, ""},
		{"no credentials", "", "", "no credentials were sent"},
		{"wrong password", regUser, "wrong", "the user or password is wrong"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t, reg, newDirs(t), tc.user, tc.password)
			err := r.Pull(ctx(t), imageName)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "registry "+reg.Addr+": authentication failed (unauthorized) pulling "+reg.Addr+"/"+imageName) ||
				!strings.Contains(err.Error(), tc.want) {
				t.Errorf("pull: %v; want the authentication error saying %q", err, tc.want)
			}
		})
	}
	r := newRuntime(t, reg, newDirs(t), regUser, regPassword)
	if err := r.Pull(ctx(t), "herd-test/nope:v1"); err == nil || !strings.Contains(err.Error(), reg.Addr+"/herd-test/nope:v1") {
		t.Errorf("pull of a missing image: %v", err)
	}
	_, err := r.Create(ctx(t), runner.Container{Name: "herd-test-notpulled", Image: "herd-test/nope:v1"})
	if err == nil || !strings.Contains(err.Error(), "herd-test/nope:v1 is not pulled") {
		t.Errorf("create from an image not pulled: %v", err)
	}
}

// TestRegistryTLS: a registry whose certificate no CA here signed is
// refused, unless its CA is given or it is insecure (as dockerd's
// --insecure-registry, the OSIE's setting).
func TestRegistryTLS(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{TLS: true})
	runctest.Push(t, reg.Addr, imageName, runctest.Images(t)["/testprog"], "", "", runctest.Insecure())
	bin, err := exec.LookPath("runc")
	need(t, "runc (Debian package runc)", err)
	if os.Geteuid() != 0 {
		need(t, "root (unpacking keeps the layers' owners)", os.ErrPermission)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for success
	}{
		{"unchecked certificate", Config{}, "certificate"},
		{"the registry's CA", Config{RegistryCA: reg.CA}, ""},
		{"insecure", Config{Insecure: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Runc, tc.cfg.StateDir, tc.cfg.RuncRoot, tc.cfg.Registry = bin, t.TempDir(), t.TempDir(), reg.Addr
			r, err := New(tc.cfg, quiet)
			if err != nil {
				t.Fatal(err)
			}
			err = r.Pull(ctx(t), imageName)
			if tc.want == "" && err != nil {
				t.Errorf("pull: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("pull: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestOutputAndExitCode(t *testing.T) {
	r := setup(t)
	code, out := run(t, r, runner.Container{Name: "herd-test-exit", Command: []string{"exit", "7", "first", "second"}})
	if want := []line{{runner.Stderr, "first"}, {runner.Stderr, "second"}}; code != 7 || !slices.Equal(out, want) {
		t.Errorf("exit %d, output %q; want 7, %q", code, out, want)
	}
	code, out = run(t, r, runner.Container{Name: "herd-test-echo", Command: []string{"echo", "on", "stdout"}})
	if want := []line{{runner.Stdout, "on stdout"}}; code != 0 || !slices.Equal(out, want) {
		t.Errorf("exit %d, output %q; want 0, %q", code, out, want)
	}
}

func TestEnvCommandAndImage(t *testing.T) {
	r := setup(t)
	// No command: the image's Cmd after its Entrypoint.
	if code, out := run(t, r, runner.Container{Name: "herd-test-cmd"}); code != 0 || !slices.Equal(texts(out), []string{"from image"}) {
		t.Errorf("image command: exit %d, output %q", code, out)
	}
	code, out := run(t, r, runner.Container{Name: "herd-test-env", Command: []string{"env", "IMAGE_VAR", "SHARED", "ACTION", "PATH"},
		Env: []string{"SHARED=action", "ACTION=1"}})
	if want := []string{"IMAGE_VAR=image", "SHARED=action", "ACTION=1", "PATH=/"}; code != 0 || !slices.Equal(texts(out), want) {
		t.Errorf("env: exit %d, output %q, want %q", code, out, want)
	}
	// The layers flattened: the upper layer's whiteout hides /etc/removed.
	code, out = runProbe(t, r, "herd-test-layers", nil, "stat", "/etc/removed", "/etc/kept")
	if want := []string{"/etc/removed absent", "/etc/kept present"}; code != 0 || !slices.Equal(texts(out), want) {
		t.Errorf("layers: exit %d, output %q, want %q", code, out, want)
	}
	if code, out := runProbe(t, r, "herd-test-cwd", nil, "cwd"); code != 0 || !slices.Equal(texts(out), []string{"/tmp"}) {
		t.Errorf("working directory: exit %d, output %q", code, out)
	}
}

// runProbe runs testdata/probe with args.
func runProbe(t *testing.T, r *Runtime, name string, edit func(*runner.Container), args ...string) (int64, []line) {
	t.Helper()
	c := runner.Container{Name: name, Image: probeImage, Command: args}
	if edit != nil {
		edit(&c)
	}
	return run(t, r, c)
}

func TestBinds(t *testing.T) {
	r := setup(t)
	rw, ro := t.TempDir(), t.TempDir()
	code, out := run(t, r, runner.Container{Name: "herd-test-rw", Command: []string{"append", "/mnt/rw/log", "hello"}, Binds: []string{rw + ":/mnt/rw"}})
	if b, _ := os.ReadFile(filepath.Join(rw, "log")); code != 0 || string(b) != "hello\n" {
		t.Errorf("rw bind: exit %d, output %q, file %q", code, out, b)
	}
	code, out = run(t, r, runner.Container{Name: "herd-test-ro", Command: []string{"append", "/mnt/ro/log", "hello"}, Binds: []string{ro + ":/mnt/ro:ro"}})
	if _, err := os.Stat(filepath.Join(ro, "log")); code == 0 || err == nil || len(out) == 0 || !strings.Contains(out[0].text, "read-only") {
		t.Errorf("ro bind: exit %d, output %q, file written: %v", code, out, err == nil)
	}
}

func TestPrivilegedAndPid(t *testing.T) {
	r := setup(t)
	priv := func(c *runner.Container) { c.Privileged = true }
	if code, out := runProbe(t, r, "herd-test-priv", priv, "stat", "/dev/loop-control"); code != 0 || !slices.Equal(texts(out), []string{"/dev/loop-control present"}) {
		t.Errorf("privileged: exit %d, output %q", code, out)
	}
	if code, out := runProbe(t, r, "herd-test-unpriv", nil, "stat", "/dev/loop-control"); code != 0 || !slices.Equal(texts(out), []string{"/dev/loop-control absent"}) {
		t.Errorf("unprivileged: exit %d, output %q", code, out)
	}
	hostInit, err := os.ReadFile("/proc/1/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(strings.ReplaceAll(string(hostInit), "\x00", " "))
	pidHost := func(c *runner.Container) { c.PidMode = "host" }
	if code, out := runProbe(t, r, "herd-test-pidhost", pidHost, "cat", "/proc/1/cmdline"); code != 0 || !slices.Equal(texts(out), []string{want}) {
		t.Errorf("pid host: exit %d, output %q, want the host's PID 1 %q", code, out, want)
	}
	if code, out := runProbe(t, r, "herd-test-pidown", nil, "cat", "/proc/1/cmdline"); code != 0 || !slices.Equal(texts(out), []string{"/probe cat /proc/1/cmdline"}) {
		t.Errorf("own pid namespace: exit %d, output %q", code, out)
	}
}

// startSleeper creates and starts c and waits for its first line.
func startSleeper(t *testing.T, r *Runtime, c runner.Container) (string, chan []line) {
	t.Helper()
	id, err := r.Create(ctx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Remove(context.Background(), id); err != nil {
			t.Error(err)
		}
	})
	if err := r.Start(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	done := make(chan []line, 1)
	go func() {
		var out []line
		var once sync.Once
		_ = r.Logs(ctx(t), id, func(s, l string) { out = append(out, line{s, l}); once.Do(func() { close(first) }) })
		done <- out
	}()
	select {
	case <-first:
	case <-ctx(t).Done():
		t.Fatal("no output from the container")
	}
	return id, done
}

func TestStop(t *testing.T) {
	r := setup(t)
	// SIGTERM handled: it ends well within the grace (a minute: a kill
	// after it would show as 137).
	id, logs := startSleeper(t, r, runner.Container{Name: "herd-test-term", Image: imageName, Command: []string{"sleep", "1h"}})
	if err := r.Stop(ctx(t), id, time.Minute); err != nil {
		t.Fatal(err)
	}
	code, err := r.Wait(ctx(t), id)
	if out := <-logs; err != nil || code != 143 || !slices.Contains(texts(out), "got terminated") {
		t.Errorf("TERM handled: exit %d (%v), output %q; want 143 after \"got terminated\"", code, err, out)
	}
	// SIGTERM ignored: killed after the grace.
	id, logs = startSleeper(t, r, runner.Container{Name: "herd-test-ignore", Image: probeImage, Command: []string{"ignore-term"}})
	if err := r.Stop(ctx(t), id, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	code, err = r.Wait(ctx(t), id)
	if out := <-logs; err != nil || code != 137 || !slices.Equal(texts(out), []string{"ignoring SIGTERM"}) {
		t.Errorf("TERM ignored: exit %d (%v), output %q; want 137 (SIGKILL)", code, err, out)
	}
	if err := r.Remove(ctx(t), id); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx(t), id); err != nil {
		t.Errorf("removing again: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(r.cfg.StateDir, "containers")); len(left) != 1 { // herd-test-term's, removed at cleanup
		t.Errorf("bundles left: %v", left)
	}
}

func TestRerunStartsClean(t *testing.T) {
	r := setup(t)
	for i, want := range []string{"/marker absent", "/marker absent"} {
		code, out := runProbe(t, r, "herd-test-rerun", nil, "stat", "/marker")
		if code != 0 || !slices.Equal(texts(out), []string{want}) {
			t.Errorf("run %d: exit %d, output %q, want %q", i+1, code, out, want)
		}
		if code, out := run(t, r, runner.Container{Name: "herd-test-rerun", Command: []string{"append", "/marker", "run"}}); code != 0 {
			t.Fatalf("writing the marker: exit %d, %q", code, out)
		}
	}
	// A container's writes go to its upper directory, never to the image.
	code, out := run(t, r, runner.Container{Name: "herd-test-rerun", Command: []string{"append", "/etc/kept", "more"}})
	if code != 0 {
		t.Fatalf("exit %d, %q", code, out)
	}
	dir, _ := r.localImage(docker.Reference(r.cfg.Registry, imageName))
	if b, err := os.ReadFile(filepath.Join(dir, "rootfs", "etc", "kept")); err != nil || string(b) != "y" {
		t.Errorf("the image's own file changed: %q, %v", b, err)
	}
}

func TestLeftoverContainerRemovedAtCreate(t *testing.T) {
	reg := registry(t)
	d := newDirs(t)
	dead := newRuntime(t, reg, d, regUser, regPassword)
	if err := dead.Pull(ctx(t), imageName); err != nil {
		t.Fatal(err)
	}
	c := runner.Container{Name: "herd-test-leftover", Image: imageName, Command: []string{"sleep", "1h"}}
	id, _ := startSleeper(t, dead, c)
	// A worker restarted: a new Runtime over the same directories.
	r := newRuntime(t, reg, d, regUser, regPassword)
	c.Command = []string{"echo", "second life"}
	code, out := run(t, r, c)
	if code != 0 || !slices.Equal(texts(out), []string{"second life"}) {
		t.Errorf("rerun: exit %d, output %q", code, out)
	}
	code, err := dead.Wait(ctx(t), id)
	if err != nil || code != 137 {
		t.Errorf("the leftover container: exit %d (%v), want 137 (killed at Create)", code, err)
	}
}

func TestStartFailure(t *testing.T) {
	r := setup(t)
	id, err := r.Create(ctx(t), runner.Container{Name: "herd-test-nostart", Image: imageName, Command: []string{"x"},
		Binds: []string{filepath.Join(t.TempDir(), "f") + ":/etc/kept/sub"}})
	if err == nil {
		defer r.Remove(context.Background(), id)
		if err = r.Start(ctx(t), id); err == nil {
			_, err = r.Wait(ctx(t), id)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "herd-test-nostart") {
		t.Errorf("a container with an impossible bind: %v", err)
	}
	if _, err := r.Create(ctx(t), runner.Container{Name: "herd-test-badbind", Image: imageName, Binds: []string{"vol:/x"}}); err == nil ||
		!strings.Contains(err.Error(), "named volumes") {
		t.Errorf("a named volume: %v", err)
	}
	if _, err := r.Create(ctx(t), runner.Container{Name: "bad/name", Image: imageName}); err == nil {
		t.Error("a name runc refuses was taken")
	}
}
