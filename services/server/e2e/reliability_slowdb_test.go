package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/pgtest"
	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
)

// slowDBDelay is what the link to PostgreSQL adds to each round trip.
const slowDBDelay = 50 * time.Millisecond

// serverDBConns is the most connections herd-server may hold to
// PostgreSQL: its pool (--db-max-conns, default 32) and the notification
// listener's own.
const serverDBConns = 32 + 1

// TestReliabilitySlowDatabase (issue 16): herd-server reaches PostgreSQL
// through a relay that holds everything it sends 50 ms (a round trip 50 ms
// longer, as `tc netem delay 50ms` on the way there would; this kernel has
// no netem) while a fleet of simulated workers (100 short, 1,000 full)
// reports, each as soon as its previous report is answered and 100 ms
// have passed. It records the reports' latency (p50, p99) and throughput,
// and samples herd-server's goroutines (/metrics go_goroutines) and its
// PostgreSQL connections (pg_stat_activity) every 250 ms: the connections
// must stay within the pool's bound, the goroutines within a few per
// worker, and nothing may be lost.
func TestReliabilitySlowDatabase(t *testing.T) {
	workers := reliability.Size(100, 1000)
	pg := pgtest.NewCluster(t)
	direct := pg.NewDatabase()
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	toDB := &latency{}
	relay(l, u.Host, toDB, nil)
	relayed := *u
	relayed.Host = l.Addr().String()
	// Every simulated worker calls from 127.0.0.1: lift the per-source
	// connection limit (256), which would refuse most of 1,000.
	s := servertest.StartOn(t, relayed.String(), "--log-level", "info", "--max-conns-per-source", "0")
	f := newFleet(t, s, workers, 100*time.Millisecond)

	db, err := sql.Open("postgres", direct)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	baseline := mustGoroutines(t, s)
	toDB.set(slowDBDelay)
	slowFrom := time.Now()
	// Sampling ends with the last report, before the test reads the
	// outcome over connections of its own.
	samples := sampleServer(t, s, db, 250*time.Millisecond, func() bool { return f.applied.Load() >= f.reports() })
	// The database is slow for a window of the run (the short form's
	// whole run; at full size the fleet would take many minutes at the
	// slow pace), then fast again so that the fleet finishes and is
	// counted.
	var (
		once      sync.Once
		peak      serverPeak
		slowUntil time.Time
	)
	endSlow := func() {
		once.Do(func() { peak, slowUntil = samples.stop(), time.Now(); toDB.set(0) })
	}
	timer := time.AfterFunc(time.Duration(reliability.Size(60, 120))*time.Second, endSlow)
	_, o, lost, took := runWithFaults(t, f, nil)
	timer.Stop()
	endSlow()
	after := mustGoroutines(t, s)

	if peak.conns > serverDBConns {
		lost++
		t.Errorf("herd-server held %d PostgreSQL connections, more than its %d", peak.conns, serverDBConns)
	}
	// Each worker's connection is a few goroutines on the server (about 3
	// idle: its reader, writer, keepalive) and the one call it may have in
	// flight one or two more: a bound in proportion to the workers, not
	// to the calls waiting for the database.
	if bound := baseline + 8*workers; peak.goroutines > bound {
		lost++
		t.Errorf("herd-server ran %d goroutines (%d before the run), more than %d for %d workers", peak.goroutines, baseline, bound, workers)
	}
	f.mu.Lock()
	var lat []time.Duration
	for _, l := range f.latencies {
		if l.answered.After(slowFrom) && !l.answered.After(slowUntil) {
			lat = append(lat, l.took)
		}
	}
	f.mu.Unlock()
	slices.Sort(lat)
	reports := len(lat)
	if reports == 0 {
		t.Fatalf("no report was answered in the %v the database was slow", slowUntil.Sub(slowFrom))
	}
	slowFor := slowUntil.Sub(slowFrom)
	reliability.Record(t, reliability.Row{
		Case: "Slow database (50 ms added to each round trip to PostgreSQL)",
		Done: fmt.Sprintf("herd-server's connections to PostgreSQL through a relay holding what it sends %v (no netem in this kernel) for the first %v of the run (or all of it), then none so the fleet finishes; %d simulated workers, each reporting as soon as its previous report is answered and 100 ms have passed; herd-server's go_goroutines and pg_stat_activity sampled every 250 ms",
			slowDBDelay, time.Duration(reliability.Size(60, 120))*time.Second, workers),
		Volume: fmt.Sprintf("%d workflows × %d actions, %d reports (%d resent); %d action events recorded, %d workflows SUCCESS, in %v",
			workers, fleetActions, f.reports(), f.resent.Load(), o.events, o.succeeded, took.Round(100*time.Millisecond)),
		Lost: lost,
		Notes: fmt.Sprintf("while the database was slow (%v): %d reports answered, latency p50 %v, p99 %v, max %v (first send to answer, retries included); throughput %.0f reports/s (resends included); herd-server's goroutines %d before, at most %d during, %d after; its PostgreSQL connections at most %d (pool %d + listener); answers the workers got: %s (-race build)",
			slowFor.Round(100*time.Millisecond), reports, percentile(lat, 50).Round(time.Millisecond), percentile(lat, 99).Round(time.Millisecond), lat[reports-1].Round(time.Millisecond),
			float64(reports)/slowFor.Seconds(), baseline, peak.goroutines, after, peak.conns, serverDBConns-1, f.seenCodes()),
	})
}

// percentile is the p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

var goroutinesLine = regexp.MustCompile(`(?m)^go_goroutines ([0-9.e+]+)$`)

// goroutines is herd-server's go_goroutines from its /metrics.
func goroutines(s *servertest.Server) (int, error) {
	code, body := s.Rest("GET", "/metrics", "", "")
	m := goroutinesLine.FindStringSubmatch(body)
	if code != 200 || m == nil {
		return 0, fmt.Errorf("/metrics: %d, no go_goroutines", code)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return int(v), err
}

// mustGoroutines is goroutines or the test's end.
func mustGoroutines(t *testing.T, s *servertest.Server) int {
	t.Helper()
	n, err := goroutines(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// serverPeak is the most of each sampled figure.
type serverPeak struct{ goroutines, conns int }

type sampler struct {
	stop func() serverPeak
}

// sampleServer samples herd-server's goroutines and its connections to
// db's database every period until stop or done.
func sampleServer(t *testing.T, s *servertest.Server, db *sql.DB, period time.Duration, done func() bool) sampler {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		peak serverPeak
		wg   sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil && !done() {
			g, err := goroutines(s)
			if err != nil {
				t.Errorf("sampling herd-server: %v", err)
			}
			var conns int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&conns); err != nil && ctx.Err() == nil {
				t.Errorf("pg_stat_activity: %v", err)
			}
			mu.Lock()
			peak.goroutines, peak.conns = max(peak.goroutines, g), max(peak.conns, conns)
			mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(period):
			}
		}
	}()
	return sampler{stop: func() serverPeak {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}}
}
