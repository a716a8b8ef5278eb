package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// installHint is what to do about a missing server, in every message that
// reports one.
const installHint = "install it with: apt-get install -y postgresql"

// missingError means PostgreSQL is not installed (or cannot be used as
// installed): tests skip outside CI.
type missingError struct{ what string }

func (e *missingError) Error() string { return e.what + "; " + installHint }

// binaries are the server programs of one PostgreSQL installation.
type binaries struct{ initdb, postgres string }

// findBinaries picks the newest /usr/lib/postgresql/<version>/bin (Debian's
// layout), else initdb and postgres from PATH.
func findBinaries() (binaries, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		b := binaries{initdb: filepath.Join(d, "initdb"), postgres: filepath.Join(d, "postgres")}
		if isExecutable(b.initdb) && isExecutable(b.postgres) {
			return b, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		b := binaries{initdb: p, postgres: filepath.Join(filepath.Dir(p), "postgres")}
		if isExecutable(b.postgres) {
			return b, nil
		}
	}
	return binaries{}, &missingError{what: "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or PATH"}
}

// versionOf reads the version out of /usr/lib/postgresql/<version>/bin;
// "9.6" sorts below "15".
func versionOf(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// cluster is a running throwaway server.
type cluster struct {
	dir  string // temporary directory: data/, the socket, postgres.log
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed once the server process has exited
}

func (c *cluster) url(database string) *url.URL {
	return &url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
}

// credential returns who the server runs as: initdb and postgres refuse
// root, so as root they run as the postgres user.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, &missingError{what: "running as root and there is no postgres user to run the server as"}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres user has uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startCluster runs initdb into a new temporary directory and starts the
// server. On failure nothing is left running and the directory is removed.
func startCluster(bin binaries) (*cluster, error) {
	return startClusterWith(bin, nil)
}

// dataMount puts a cluster's data directory on a file system of its own
// (DiskCluster): mount is called on the empty data directory before
// initdb, the WAL then goes to wal/ beside it, and the returned unmount
// must run once the server has exited.
type dataMount func(data string, cred *syscall.Credential) (unmount func() error, err error)

// startClusterWith is startCluster with the data directory on mount's
// file system when mount is not nil; on failure it is unmounted.
func startClusterWith(bin binaries, mount dataMount) (*cluster, error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "herd-pgtest-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("chown %s to the postgres user: %w", dir, err)
		}
	}

	data := filepath.Join(dir, "data")
	initdbArgs := []string{"--pgdata", data, "--username", "postgres",
		"--auth", "trust", "--encoding", "UTF8", "--locale", "C"}
	unmount := func() error { return nil }
	if mount != nil {
		if err := os.Mkdir(data, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if unmount, err = mount(data, cred); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		initdbArgs = append(initdbArgs, "--waldir", filepath.Join(dir, "wal"))
	}
	// cleanup leaves nothing behind a failed start.
	cleanup := func() error { return errors.Join(unmount(), os.RemoveAll(dir)) }
	initdb := exec.Command(bin.initdb, initdbArgs...)
	initdb.Dir = dir
	initdb.Env = serverEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, errors.Join(fmt.Errorf("%s: %w\n%s", bin.initdb, err, out), cleanup())
	}

	// The free port is found by binding and releasing it, so another process
	// may take it before the server binds; try a few.
	var errs []error
	for range 3 {
		c, retry, err := startServer(bin, dir, cred)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if !retry {
			break
		}
	}
	errs = append(errs, cleanup())
	return nil, errors.Join(errs...)
}

// serverEnv is the environment minus PG* variables that could point the
// server programs elsewhere.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// startServer starts postgres on a free port and waits until it accepts
// connections. retry reports a lost race for the port.
func startServer(bin binaries, dir string, cred *syscall.Credential) (c *cluster, retry bool, err error) {
	port, err := freePort()
	if err != nil {
		return nil, false, err
	}
	return startServerOn(bin, dir, cred, port)
}

// startServerOn starts postgres on port (appending to its log: a restarted
// server keeps the story of the one before).
func startServerOn(bin binaries, dir string, cred *syscall.Credential, port int) (c *cluster, retry bool, err error) {
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, false, err
	}
	defer logFile.Close()

	args := []string{
		"-D", filepath.Join(dir, "data"),
		"-k", dir, // Unix socket directory: ours, not /var/run/postgresql
		"-h", "127.0.0.1",
		"-p", strconv.Itoa(port),
		"-c", "max_connections=200",
	}
	// pg_stat_statements lets benchmarks count the statements per
	// operation; it ships with Debian's postgresql package.
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(bin.postgres)), "lib", "pg_stat_statements.so")); err == nil {
		args = append(args, "-c", "shared_preload_libraries=pg_stat_statements")
	}
	cmd := exec.Command(bin.postgres, args...)
	cmd.Dir = dir
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		// Out of the terminal's process group, and stopped (immediate
		// shutdown) if the test binary dies without running Main's cleanup,
		// e.g. on a test timeout. (Linux sends it when the thread that
		// started the server ends; Go ends threads only under a goroutine
		// that exits while locked to its thread.)
		Setpgid:   true,
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		return nil, false, fmt.Errorf("start %s: %w", bin.postgres, err)
	}
	c = &cluster{dir: dir, port: port, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()

	if err := c.waitReady(30 * time.Second); err != nil {
		stopErr := c.stopProcess()
		log, _ := os.ReadFile(logPath)
		retry = strings.Contains(string(log), "could not bind") || strings.Contains(string(log), "already in use")
		return nil, retry, errors.Join(fmt.Errorf("postgres on port %d: %w\n%s", port, err, log), stopErr)
	}
	return c, false, nil
}

// waitReady polls until the server answers a query, it exits or the time
// is up.
func (c *cluster) waitReady(limit time.Duration) error {
	u := c.url("postgres")
	q := u.Query()
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	db, err := sql.Open("postgres", u.String())
	if err != nil {
		return err
	}
	defer db.Close()

	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("server exited before accepting connections (%v)", c.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", limit, err)
		}
	}
}

// stop shuts the server down and removes its directory.
func (c *cluster) stop() error {
	err := c.stopProcess()
	if rmErr := os.RemoveAll(c.dir); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	return err
}

// stopProcess signals the server by its pid and waits for it to exit:
// immediate shutdown (SIGQUIT), as the data is thrown away and a shutdown
// checkpoint would only cost seconds of fsync, then SIGKILL.
func (c *cluster) stopProcess() error {
	steps := []struct {
		sig  os.Signal
		wait time.Duration
	}{
		{syscall.SIGQUIT, 30 * time.Second},
		{syscall.SIGKILL, 10 * time.Second},
	}
	for _, s := range steps {
		select {
		case <-c.done:
			return nil
		default:
		}
		if err := c.cmd.Process.Signal(s.sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal postgres (pid %d): %w", c.cmd.Process.Pid, err)
		}
		select {
		case <-c.done:
			return nil
		case <-time.After(s.wait):
		}
	}
	return fmt.Errorf("postgres (pid %d) did not exit", c.cmd.Process.Pid)
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
