// Package pgtest gives tests a throwaway PostgreSQL database.
//
// The first NewDatabase call in a test binary starts one private cluster
// (initdb into a temporary directory, the server on its own Unix socket
// directory and a free port on 127.0.0.1, fsync left on) and every call
// creates a fresh, empty database in it. Main stops the cluster, by the pid
// of the server it started, when the tests are done:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// With HERD_TEST_DB_URL set (a postgres:// URL of a role allowed to create
// databases) no cluster is started: the databases are created in that server
// and dropped at the end of each test.
//
// A test that restarts the server (fault tests) takes a cluster of its own
// with NewCluster and calls its Restart (pg_ctl stop -m fast or immediate,
// then the same server again on the same port).
//
// When PostgreSQL is not installed the tests that need it are skipped, except
// under CI=true, where they fail and say what to install.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // the driver the databases are reached with
)

// EnvURL names the variable that points the tests at an existing server.
const EnvURL = "HERD_TEST_DB_URL"

// shared is the one piece of package state: a test binary shares one
// cluster between all its tests, and NewDatabase has only the test to go
// by. Main tears it down.
var shared struct {
	mu      sync.Mutex
	started bool
	err     error    // why the server is not available; sticky
	missing bool     // err means PostgreSQL is not installed (skip outside CI)
	cluster *cluster // nil when using HERD_TEST_DB_URL
	admin   *url.URL // superuser URL of the maintenance database
	db      *sql.DB  // connection to admin
}

// Main runs the tests and then stops the cluster NewDatabase started, if
// any. It returns the exit code for os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// NewDatabase creates an empty database and returns its lib/pq URL. The
// test is skipped (failed under CI=true) when PostgreSQL is missing, and
// failed when the server cannot be started.
func NewDatabase(t testing.TB) string {
	t.Helper()
	admin, db, external, missing, err := server()
	if err != nil {
		if skip(missing, os.Getenv("CI")) {
			t.Skipf("pgtest: %v", err)
		}
		t.Fatalf("pgtest: %v", err)
	}

	name := "herd_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The name is ours (letters, digits, underscore): no quoting needed.
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	if external {
		// A shared server must not fill up with test databases; the
		// throwaway cluster is removed as a whole instead.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				t.Logf("pgtest: drop database %s: %v", name, err)
			}
		})
	}

	u := *admin
	u.Path = "/" + name
	return u.String()
}

// skip decides what a test does when there is no server: skip when
// PostgreSQL is not installed, except under CI=true; fail on anything else
// (it is installed but does not work).
func skip(missing bool, ci string) bool { return missing && ci != "true" }

// server returns the admin URL and connection, starting the cluster on
// first use. missing qualifies err: PostgreSQL is not installed.
func server() (admin *url.URL, db *sql.DB, external, missing bool, err error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.started {
		shared.started = true
		shared.err = start()
	}
	if shared.err != nil {
		return nil, nil, false, shared.missing, shared.err
	}
	return shared.admin, shared.db, shared.cluster == nil, false, nil
}

// start brings up the server or connects to HERD_TEST_DB_URL. Called with
// shared.mu held.
func start() error {
	var admin *url.URL
	if raw := os.Getenv(EnvURL); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return fmt.Errorf("%s must be a postgres:// URL, got %q", EnvURL, raw)
		}
		admin = u
	} else {
		bin, err := findBinaries()
		if err != nil {
			shared.missing = true
			return err
		}
		c, err := startCluster(bin)
		if err != nil {
			var m *missingError
			shared.missing = errors.As(err, &m)
			return err
		}
		shared.cluster = c
		admin = c.url("postgres")
	}

	db, err := sql.Open("postgres", admin.String())
	if err != nil {
		return errors.Join(fmt.Errorf("open %s: %w", redact(admin), err), stopCluster())
	}
	db.SetMaxOpenConns(4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return errors.Join(fmt.Errorf("connect to %s: %w", redact(admin), err), stopCluster())
	}
	shared.admin, shared.db = admin, db
	return nil
}

// shutdown closes the admin connection and stops the cluster.
func shutdown() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var errs []error
	if shared.db != nil {
		errs = append(errs, shared.db.Close())
		shared.db = nil
	}
	errs = append(errs, stopCluster())
	return errors.Join(errs...)
}

// stopCluster stops the cluster if one runs. Called with shared.mu held.
func stopCluster() error {
	if shared.cluster == nil {
		return nil
	}
	err := shared.cluster.stop()
	shared.cluster = nil
	return err
}

func redact(u *url.URL) string { return u.Redacted() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
