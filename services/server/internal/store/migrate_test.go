package store

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/herd-metal/herd/pkg/pgtest"
)

func countMigrations(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow("SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].version != 1 {
		t.Fatalf("embedded migrations %v", ms)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if n := countMigrations(t, s); n != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(ms))
	}
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	const servers = 4
	stores := make([]*Store, servers)
	for i := range stores {
		stores[i] = openStore(t, url)
	}
	errs := make([]error, servers)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { errs[i] = s.Migrate(context.Background()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("server %d: %v", i, err)
		}
	}
	ms, _ := migrations()
	if n := countMigrations(t, stores[0]); n != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(ms))
	}
	// The schema is usable.
	if _, err := stores[0].CreateTemplate(context.Background(), "t", "x"); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	if _, err := s.db.Exec("INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')"); err != nil {
		t.Fatal(err)
	}
	err := s.Migrate(context.Background())
	if err == nil || !strings.Contains(err.Error(), "9999") {
		t.Fatalf("Migrate = %v, want a refusal naming version 9999", err)
	}
	// The lock was released: another Migrate does not hang.
	if err := s.Migrate(context.Background()); err == nil {
		t.Fatal("second Migrate succeeded")
	}
}
