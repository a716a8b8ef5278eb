package store

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/herd-metal/herd/pkg/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newStore opens a migrated store on a fresh database.
func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	s := openStore(t, url)
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, url
}

func openStore(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	if o.MaxDataVersions != 16 || o.MaxDataBytes != 1<<20 || o.Logger == nil {
		t.Errorf("defaults = %+v", o)
	}
	o = Options{MaxDataVersions: 3, MaxDataBytes: 10}.withDefaults()
	if o.MaxDataVersions != 3 || o.MaxDataBytes != 10 {
		t.Errorf("set values replaced: %+v", o)
	}
}
