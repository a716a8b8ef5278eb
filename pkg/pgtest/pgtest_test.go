package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/lib/pq"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestNewDatabaseIsFreshAndShared(t *testing.T) {
	ctx := context.Background()
	first, second := NewDatabase(t), NewDatabase(t)
	u1, err1 := url.Parse(first)
	u2, err2 := url.Parse(second)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad URLs %q %q", first, second)
	}
	if u1.Host != u2.Host {
		t.Errorf("databases on different servers: %s and %s", u1.Host, u2.Host)
	}
	if u1.Path == u2.Path {
		t.Fatalf("same database twice: %s", u1.Path)
	}

	a, b := open(t, first), open(t, second)
	if _, err := a.ExecContext(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRowContext(ctx,
		"SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("second database has %d tables, want an empty one", n)
	}

	if os.Getenv(EnvURL) == "" {
		var fsync string
		if err := a.QueryRowContext(ctx, "SHOW fsync").Scan(&fsync); err != nil {
			t.Fatal(err)
		}
		if fsync != "on" {
			t.Errorf("fsync = %s, want on", fsync)
		}
	}
}

func TestParallelDatabases(t *testing.T) {
	for i := range 4 {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			db := open(t, NewDatabase(t))
			if _, err := db.Exec("CREATE TABLE t (x int)"); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec("INSERT INTO t VALUES ($1)", i); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestVersionOrder(t *testing.T) {
	dirs := []string{
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/x/bin",
		"/usr/lib/postgresql/13/bin",
	}
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	want := []string{
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/13/bin",
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/x/bin",
	}
	for i := range want {
		if dirs[i] != want[i] {
			t.Fatalf("order %v, want %v", dirs, want)
		}
	}
}

func TestSkipOnlyWhenMissingOutsideCI(t *testing.T) {
	for _, tc := range []struct {
		missing bool
		ci      string
		want    bool
	}{
		{missing: true, ci: "", want: true},
		{missing: true, ci: "false", want: true},
		{missing: true, ci: "true", want: false}, // CI must have it: fail
		{missing: false, ci: "", want: false},    // installed but broken: fail
		{missing: false, ci: "true", want: false},
	} {
		if got := skip(tc.missing, tc.ci); got != tc.want {
			t.Errorf("skip(missing=%v, CI=%q) = %v, want %v", tc.missing, tc.ci, got, tc.want)
		}
	}
}

func TestMissingErrorSaysWhatToInstall(t *testing.T) {
	err := &missingError{what: "PostgreSQL server binaries not found"}
	if !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Errorf("message %q does not say what to install", err)
	}
}

// TestClusterRestart: a private cluster restarts in both modes on the same
// port, and what was committed before survives.
func TestClusterRestart(t *testing.T) {
	c := NewCluster(t)
	db := open(t, c.NewDatabase())
	if _, err := db.Exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []string{"fast", "immediate"} {
		down := c.Restart(mode)
		if down.IsZero() {
			t.Fatal("no time of the outage")
		}
		// database/sql drops the dead connections and dials again.
		var n int
		var err error
		for range 3 {
			if err = db.QueryRow("SELECT count(*) FROM t").Scan(&n); err == nil {
				break
			}
		}
		if err != nil || n != i+1 {
			t.Fatalf("after restart -m %s: %d rows (%v), want %d", mode, n, err, i+1)
		}
		if _, err := db.Exec("INSERT INTO t VALUES (2)"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskClusterFull: with its data directory's tmpfs filled, the server
// refuses a write that needs new space with SQLSTATE 53100 (disk_full),
// goes on answering reads, takes writes again once the space is freed,
// and the tmpfs is gone after the test.
func TestDiskClusterFull(t *testing.T) {
	var mountPoint string
	t.Run("fill and free", func(t *testing.T) {
		c, disk := NewDiskCluster(t, 96<<20)
		mountPoint = disk.dir
		db := open(t, c.NewDatabase())
		if _, err := db.Exec("CREATE TABLE t (x text); INSERT INTO t VALUES ('before')"); err != nil {
			t.Fatal(err)
		}
		if n := disk.Fill(); n <= 0 || disk.Available() != 0 {
			t.Fatalf("filled %d bytes, %d left", n, disk.Available())
		}
		// Rows of random-looking text, too large for a page and not
		// compressible, so each one needs new pages.
		insert := "INSERT INTO t SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 2000)"
		_, err := db.Exec(insert)
		if sqlState(err) != "53100" {
			t.Fatalf("insert on a full disk: %v, want SQLSTATE 53100 (disk_full)", err)
		}
		var n int
		if err := db.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
			t.Fatalf("read on a full disk: %d rows, %v", n, err)
		}
		disk.Free()
		if _, err := db.Exec(insert); err != nil {
			t.Fatalf("insert once the space is back: %v", err)
		}
	})
	if out, err := exec.Command("findmnt", mountPoint).CombinedOutput(); err == nil {
		t.Errorf("%s is still mounted after the test:\n%s", mountPoint, out)
	}
}

func sqlState(err error) string {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return string(pqErr.Code)
	}
	return ""
}
