// Package store keeps herd's state in PostgreSQL: hardware, templates and
// workflows. It is the only package that talks to the database. Every
// change that others watch is announced with pg_notify in the transaction
// that makes it, and Hub fans those notifications out to subscribers.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/lib/pq" // also registers the "postgres" driver
)

// Options tune the store; zero fields take the defaults.
type Options struct {
	// MaxDataVersions is how many versions of a workflow's data are kept
	// (default 16).
	MaxDataVersions int
	// MaxDataBytes bounds one workflow data or metadata document
	// (default 1 MiB).
	MaxDataBytes int
	// MaxConns bounds the connections to PostgreSQL (default 32). All of
	// them stay open once made: opening one costs more than a report.
	MaxConns int
	// Logger receives the store's logs (default: discarded).
	Logger *slog.Logger
}

// Defaults for Options.
const (
	DefaultMaxDataVersions = 16
	DefaultMaxDataBytes    = 1 << 20
	DefaultMaxConns        = 32
)

func (o Options) withDefaults() Options {
	if o.MaxDataVersions <= 0 {
		o.MaxDataVersions = DefaultMaxDataVersions
	}
	if o.MaxDataBytes <= 0 {
		o.MaxDataBytes = DefaultMaxDataBytes
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Store is herd's state in one PostgreSQL database.
type Store struct {
	db       *sql.DB
	log      *slog.Logger
	opts     Options
	announce *announcer
	steps    stepCache
	statuses statusCache
	hot      *prepared
}

// Open connects to the database at url (a lib/pq URL or key=value string)
// and checks that it answers. It does not migrate: call Migrate.
func Open(ctx context.Context, url string, opt Options) (*Store, error) {
	opt = opt.withDefaults()
	db, err := sql.Open("postgres", withOneRoundTrip(url))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db.SetMaxOpenConns(opt.MaxConns)
	db.SetMaxIdleConns(opt.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return &Store{db: db, log: opt.Logger, opts: opt, announce: newAnnouncer(db, opt.Logger), hot: &prepared{db: db}}, nil
}

// withOneRoundTrip asks lib/pq to send a statement and its parameters in
// one round trip instead of two (prepare, then execute). The store passes
// JSON as strings, never []byte, which that mode would send as binary.
func withOneRoundTrip(dsn string) string {
	if strings.Contains(dsn, "binary_parameters") {
		return dsn
	}
	if u, err := neturl.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("binary_parameters", "yes")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " binary_parameters=yes"
}

// Close closes the database connections.
func (s *Store) Close() error {
	s.announce.close()
	s.hot.close()
	return s.db.Close()
}

// Ping checks that the database answers (for /healthz).
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// inTx runs fn in a transaction and commits it, rolling back if fn fails.
// A serialization failure or deadlock, which PostgreSQL resolves by
// aborting one side, runs fn again (a few times): fn must not have effects
// outside the transaction.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	const attempts = 4
	var err error
	for i := range attempts {
		err = s.tryTx(ctx, fn)
		if !retryable(err) {
			return err
		}
		s.log.DebugContext(ctx, "transaction retried", "attempt", i+1, "err", err)
	}
	return err
}

func (s *Store) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// SQLSTATE codes the store reacts to.
const (
	codeUniqueViolation      = "23505"
	codeForeignKeyViolation  = "23503"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// sqlState returns the PostgreSQL error code of err, or "".
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

func retryable(err error) bool {
	switch sqlState(err) {
	case codeSerializationFailure, codeDeadlockDetected:
		return true
	}
	return false
}

// stringArray passes a []string as a text[] parameter (never NULL).
func stringArray(s []string) any {
	if s == nil {
		s = []string{}
	}
	return pq.StringArray(s)
}
