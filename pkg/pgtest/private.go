package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster is a test's own PostgreSQL server, which it may restart (fault
// tests); NewDatabase's shared cluster must never be.
type Cluster struct {
	t   testing.TB
	bin binaries
	mu  sync.Mutex
	c   *cluster
}

// NewCluster starts a private cluster for t, stopped (by its pid) when the
// test ends. Skipped or failed like NewDatabase when PostgreSQL is missing;
// HERD_TEST_DB_URL does not apply (an external server cannot be restarted).
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	return newCluster(t, nil)
}

// newCluster is NewCluster with the data directory on mount's file system
// when mount is not nil (unmounted once the server has exited).
func newCluster(t testing.TB, mount dataMount) *Cluster {
	t.Helper()
	var unmount func() error
	if mount != nil {
		inner := mount
		mount = func(data string, cred *syscall.Credential) (func() error, error) {
			u, err := inner(data, cred)
			unmount = u
			return u, err
		}
	}
	bin, err := findBinaries()
	if err == nil {
		if _, perr := os.Stat(filepath.Join(filepath.Dir(bin.initdb), "pg_ctl")); perr != nil {
			err = &missingError{what: "pg_ctl not found beside " + bin.initdb}
		}
	}
	var c *cluster
	if err == nil {
		c, err = startClusterWith(bin, mount)
	}
	if err != nil {
		var m *missingError
		if skip(errors.As(err, &m), os.Getenv("CI")) {
			t.Skipf("pgtest: %v", err)
		}
		t.Fatalf("pgtest: %v", err)
	}
	pc := &Cluster{t: t, bin: bin, c: c}
	t.Cleanup(func() {
		pc.mu.Lock()
		defer pc.mu.Unlock()
		err := pc.c.stopProcess()
		if unmount != nil {
			err = errors.Join(err, unmount())
		}
		if err = errors.Join(err, os.RemoveAll(pc.c.dir)); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return pc
}

// NewDatabase creates an empty database in the cluster and returns its
// lib/pq URL.
func (pc *Cluster) NewDatabase() string {
	pc.t.Helper()
	pc.mu.Lock()
	u := pc.c.url("postgres")
	pc.mu.Unlock()
	db, err := sql.Open("postgres", u.String())
	if err != nil {
		pc.t.Fatal(err)
	}
	defer db.Close()
	name := "herd_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		pc.t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Restart is `pg_ctl restart -m mode` ("fast": clients are disconnected
// and the server shuts down cleanly; "immediate": it quits without a
// checkpoint and recovers from its WAL on start). pg_ctl stops the server
// (by the pid in postmaster.pid, waiting until it is gone); the server is
// then started again by this package on the same port, so it stays a child
// of the test binary. It returns when the server was down (fault tests
// measure recovery from then) and fails the test if it does not come back.
func (pc *Cluster) Restart(mode string) (down time.Time) {
	pc.t.Helper()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if mode != "fast" && mode != "immediate" && mode != "smart" {
		pc.t.Fatalf("pgtest: restart mode %q: want fast, immediate or smart", mode)
	}
	cred, err := credential()
	if err != nil {
		pc.t.Fatal(err)
	}
	c := pc.c
	ctl := exec.Command(filepath.Join(filepath.Dir(pc.bin.initdb), "pg_ctl"), "stop", "-D", filepath.Join(c.dir, "data"), "-m", mode, "-w", "-t", "60")
	ctl.Env = serverEnv()
	ctl.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := ctl.CombinedOutput(); err != nil {
		pc.t.Fatalf("pgtest: pg_ctl stop -m %s: %v\n%s", mode, err, out)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		pc.t.Fatalf("pgtest: postgres (pid %d) still runs after pg_ctl stop", c.cmd.Process.Pid)
	}
	down = time.Now()
	next, err := restartServer(pc.bin, c, cred)
	if err != nil {
		pc.t.Fatalf("pgtest: start again after pg_ctl stop -m %s: %v", mode, err)
	}
	pc.c = next
	return down
}

// restartServer starts the server of c's directory again on c's port.
func restartServer(bin binaries, c *cluster, cred *syscall.Credential) (*cluster, error) {
	var err error
	// The port was just released; a few tries cover a slow kernel.
	for range 5 {
		var next *cluster
		if next, _, err = startServerOn(bin, c.dir, cred, c.port); err == nil {
			return next, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("port %d: %w", c.port, err)
}
