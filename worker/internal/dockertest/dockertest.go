// Package dockertest runs a private Docker daemon for tests: its own data
// root, exec root and socket under a temp dir, no iptables, no bridge. It
// never touches another dockerd; it stops its own by pid. Images come from
// static Go programs built by the test and imported as a one-file rootfs
// (nothing is pulled from the internet).
package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// Daemon is one private dockerd.
type Daemon struct {
	// Dir holds the data root, exec root, socket, pid file and log.
	Dir string
	// Host is the daemon's address for DOCKER_HOST or client.WithHost.
	Host   string
	Client *client.Client
	cmd    *exec.Cmd
	log    *os.File
	done   chan error
}

// Options change how a private dockerd runs.
type Options struct {
	// ConfigDir, when set, is bind-mounted at /etc/docker in the daemon's
	// own mount namespace: the daemon reads registry CAs from
	// ConfigDir/certs.d (dockerd has no flag to move that directory).
	ConfigDir string
	// NetNS, when set, is the named network namespace (ip netns, under
	// /run/netns) the daemon runs in; its socket stays reachable from
	// anywhere.
	NetNS string
}

// Start runs a private dockerd and waits until it answers.
func Start() (*Daemon, error) { return StartWith(Options{}) }

// StartWith runs a private dockerd with opts and waits until it answers.
func StartWith(opts Options) (*Daemon, error) {
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		return nil, fmt.Errorf("dockerd not installed (Debian package docker.io): %w", err)
	}
	// A short path: the socket's must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "hd")
	if err != nil {
		return nil, err
	}
	d := &Dir{dir}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		return nil, errors.Join(err, d.remove())
	}
	sock := filepath.Join(dir, "docker.sock")
	cmd := exec.Command(bin, "--iptables=false", "--bridge=none", "--storage-driver=overlay2",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"-H", "unix://"+sock, "--pidfile", filepath.Join(dir, "docker.pid"))
	if opts.ConfigDir != "" || opts.NetNS != "" {
		wrap, err := wrapper(opts, cmd.Args)
		if err != nil {
			logf.Close()
			return nil, errors.Join(err, d.remove())
		}
		cmd = exec.Command(wrap[0], wrap[1:]...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a test's ^C reaches it through Stop only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, errors.Join(fmt.Errorf("starting dockerd: %w", err), d.remove())
	}
	dm := &Daemon{Dir: dir, Host: "unix://" + sock, cmd: cmd, log: logf, done: make(chan error, 1)}
	go func() { dm.done <- cmd.Wait() }()
	c, err := client.NewClientWithOpts(client.WithHost(dm.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, errors.Join(err, dm.Stop())
	}
	dm.Client = c
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Ping(ctx)
		cancel()
		if err == nil {
			return dm, nil
		}
		select {
		case werr := <-dm.done:
			dm.done <- werr
			return nil, errors.Join(fmt.Errorf("dockerd exited: %v\n%s", werr, dm.Log()), dm.Stop())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("dockerd did not answer within 60s: %w\n%s", err, dm.Log()), dm.Stop())
		}
	}
}

// wrapper is the command that runs args (dockerd's) in their own mount
// namespace with opts.ConfigDir at /etc/docker, in opts.NetNS. Each step
// execs the next, so the pid stays dockerd's.
func wrapper(opts Options, args []string) ([]string, error) {
	var cmd []string
	if opts.NetNS != "" {
		// Not `ip netns exec`: it mounts a fresh /sys, without the cgroup
		// mounts dockerd needs.
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			return nil, fmt.Errorf("nsenter (Debian package util-linux): %w", err)
		}
		cmd = append(cmd, nsenter, "--net=/run/netns/"+opts.NetNS, "--")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("unshare (Debian package util-linux): %w", err)
	}
	cmd = append(cmd, unshare, "--mount", "--propagation", "private", "--")
	if opts.ConfigDir == "" {
		return append(cmd, args...), nil
	}
	// dockerd writes /etc/docker/key.json: the mount point exists once
	// any dockerd ran; make it if none did.
	if err := os.MkdirAll("/etc/docker", 0o755); err != nil {
		return nil, err
	}
	return append(append(cmd, "/bin/sh", "-c", `mount --bind "$0" /etc/docker && exec "$@"`, opts.ConfigDir), args...), nil
}

// Log is the end of the daemon's log.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dockerd.log"))
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// Stop stops the daemon (SIGTERM to its pid, SIGKILL after 20 s; its
// containers and its containerd go with it), unmounts what it left and
// deletes its directory.
func (d *Daemon) Stop() error {
	var errs []error
	if d.Client != nil {
		d.Client.Close()
	}
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
			errs = append(errs, fmt.Errorf("dockerd (pid %d) did not stop within 20s of SIGTERM", d.cmd.Process.Pid))
		}
	}
	if d.log != nil {
		d.log.Close()
	}
	errs = append(errs, (&Dir{d.Dir}).remove())
	return errors.Join(errs...)
}

// Dir is a daemon directory to clean up.
type Dir struct{ path string }

// remove unmounts whatever is mounted under the directory (the daemon's
// network namespace file, overlay mounts of a killed daemon), deepest
// first, then deletes it.
func (d *Dir) remove() error {
	f, err := os.Open("/proc/self/mountinfo")
	if err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && strings.HasPrefix(fields[4], d.path+"/") {
				mounts = append(mounts, fields[4])
			}
		}
		f.Close()
		sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
	return os.RemoveAll(d.path)
}

// shared is the daemon Main started for the package's tests.
var (
	shared    *Daemon
	sharedErr error
)

// Main starts one private dockerd for a test binary, runs the tests and
// stops it (also when they fail). Use it in TestMain:
// os.Exit(dockertest.Main(m.Run)), or around another helper's main:
// dockertest.Main(func() int { return servertest.Main(m, true) }).
// A missing dockerd is reported by Get.
func Main(run func() int) int {
	shared, sharedErr = Start()
	code := run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "dockertest:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Get returns the daemon Main started. When there is none, the test fails
// under CI=true and is skipped elsewhere.
func Get(t testing.TB) *Daemon {
	t.Helper()
	if shared != nil {
		return shared
	}
	err := sharedErr
	if err == nil {
		err = errors.New("dockertest.Main did not run: call it from TestMain")
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("private dockerd: %v", err)
	}
	t.Skipf("private dockerd: %v (run make deps; under CI=true this fails)", err)
	return nil
}

// BuildStatic compiles the Go package in pkgDir into a static binary
// (CGO_ENABLED=0) at out.
func BuildStatic(pkgDir, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkgDir, err, b)
	}
	return nil
}

// Import makes image ref from files (path in the image -> host file,
// copied with mode 0755) and Dockerfile-style changes such as
// `ENTRYPOINT ["/prog"]`, like `docker import`.
func (d *Daemon) Import(ctx context.Context, ref string, files map[string]string, changes ...string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	for _, n := range names {
		b, err := os.ReadFile(files[n])
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(n, "/")
		for dir := filepath.Dir(rel); dir != "." && !dirs[dir]; dir = filepath.Dir(dir) {
			dirs[dir] = true
			if err := tw.WriteHeader(&tar.Header{Name: dir + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	// Directories a container runtime expects to mount over.
	for _, dir := range []string{"tmp", "workflow", "proc", "sys", "dev", "etc"} {
		if !dirs[dir] {
			if err := tw.WriteHeader(&tar.Header{Name: dir + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	rc, err := d.Client.ImageImport(ctx, image.ImportSource{Source: &buf, SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	defer rc.Close()
	out, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	if bytes.Contains(out, []byte(`"error"`)) {
		return fmt.Errorf("import %s: %s", ref, out)
	}
	return nil
}

// Containers lists the ids of every container, running or not.
func (d *Daemon) Containers(ctx context.Context) ([]string, error) {
	list, err := d.Client.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(list))
	for i, c := range list {
		ids[i] = c.ID
	}
	return ids, nil
}

// ImportTestProg builds worker/internal/testprog (a static program whose
// first argument picks what it does) and imports it as image ref, with
// the program as its entrypoint.
func (d *Daemon) ImportTestProg(ctx context.Context, ref string) error {
	_, here, _, _ := runtime.Caller(0)
	dir, err := os.MkdirTemp("", "testprog")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "testprog")
	if err := BuildStatic(filepath.Join(filepath.Dir(here), "..", "testprog"), bin); err != nil {
		return err
	}
	return d.Import(ctx, ref, map[string]string{"/testprog": bin}, `ENTRYPOINT ["/testprog"]`)
}

// BuildDir builds image ref from the Dockerfile in contextDir (the daemon's
// classic builder; FROM scratch needs no registry).
func (d *Daemon) BuildDir(ctx context.Context, contextDir, ref string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries, err := os.ReadDir(contextDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(contextDir, e.Name()))
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.Name(), Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := d.Client.ImageBuild(ctx, &buf, build.ImageBuildOptions{Tags: []string{ref}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build %s: %w", ref, err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("build %s: %w", ref, err)
	}
	if bytes.Contains(out, []byte(`"error"`)) {
		return fmt.Errorf("build %s: %s", ref, out)
	}
	return nil
}
