package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/pgtest"
	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
)

// fleetSize is the number of machines (one workflow each) of the fault
// tests: the 200 at full size, 20 in make test.
func fleetSize() int { return reliability.Size(20, 200) }

// fleetPeriod paces each worker (one report per period), so that the run
// lasts long enough for the faults to land in its middle.
func fleetPeriod() time.Duration { return time.Duration(reliability.Size(100, 250)) * time.Millisecond }

// TestReliabilityPostgresRestart (issue 16): PostgreSQL is restarted
// twice under a real herd-server while a fleet of simulated workers runs
// its workflows over real gRPC: `pg_ctl stop -m fast` (clients told to
// go, clean shutdown) once a third of the reports are in, `-m immediate`
// (no checkpoint, crash recovery from the WAL) at two thirds, each time
// started again on the same port. The server must reconnect by itself,
// the workers see only Unavailable (which they retry), and every workflow
// ends SUCCESS with exactly one RUNNING and one SUCCESS event per action.
func TestReliabilityPostgresRestart(t *testing.T) {
	pg := pgtest.NewCluster(t)
	s := servertest.StartOn(t, pg.NewDatabase(), "--log-level", "info")
	f := newFleet(t, s, fleetSize(), fleetPeriod())
	restart := func(mode string) fault {
		return fault{name: "pg_ctl stop -m " + mode, do: func() (time.Time, time.Time) {
			away := time.Now()
			pg.Restart(mode)
			return away, time.Now()
		}}
	}
	figures, o, lost, took := runWithFaults(t, f, []fault{restart("fast"), restart("immediate")})
	if code, body := s.Rest("GET", "/healthz", "", ""); code != 200 {
		lost++
		t.Errorf("/healthz after the restarts: %d %s", code, body)
	}
	recordFaults(t, "PostgreSQL restarted under herd-server", "PostgreSQL stopped with pg_ctl (-m fast at 1/3 of the reports, -m immediate at 2/3) and started again on the same port; herd-server left running", f, figures, o, lost, took)
}

// TestReliabilityServerKilled (issue 16): herd-server is SIGKILLed twice
// while the fleet runs, at a third and two thirds of the reports, and
// started again each time on the same ports, state directory and
// database. A report the server applied but could not answer is resent by
// its worker and must change nothing; the counts are those of
// TestReliabilityPostgresRestart.
func TestReliabilityServerKilled(t *testing.T) {
	s := servertest.Start(t, "--log-level", "info")
	f := newFleet(t, s, fleetSize(), fleetPeriod())
	kill := fault{name: "SIGKILL", do: func() (time.Time, time.Time) {
		away := time.Now()
		s.Kill()
		s.Restart()
		return away, time.Now()
	}}
	figures, o, lost, took := runWithFaults(t, f, []fault{kill, kill})
	recordFaults(t, "herd-server SIGKILLed and restarted", "herd-server SIGKILLed (at 1/3 and 2/3 of the reports) and started again on the same ports, state directory and database", f, figures, o, lost, took)
}

// recordFaults writes the row of a fleet fault test.
func recordFaults(t *testing.T, name, done string, f *fleet, figures []faultFigures, o fleetOutcome, lost int, took time.Duration) {
	t.Helper()
	var each []string
	var worst time.Duration
	for _, fg := range figures {
		each = append(each, fmt.Sprintf("%s: away %v, first report answered %v after it was taken away",
			fg.name, fg.down.Round(10*time.Millisecond), fg.recovery.Round(10*time.Millisecond)))
		worst = max(worst, fg.recovery)
	}
	reliability.Record(t, reliability.Row{
		Case: name,
		Done: fmt.Sprintf("%s; %d simulated workers (goroutines speaking the worker RPCs over TLS with their machines' credentials, one report per %v each, Unavailable retried with backoff)",
			done, len(f.workers), f.period),
		Volume: fmt.Sprintf("%d workflows × %d actions, %d reports (%d of them sent twice, as after a lost reply); %d action events recorded, %d workflows SUCCESS, in %v",
			len(f.workers), fleetActions, f.reports(), f.resent.Load(), o.events, o.succeeded, took.Round(100*time.Millisecond)),
		Lost:     lost,
		Recovery: worst,
		Notes:    fmt.Sprintf("%s; answers the workers got: %s (-race build)", strings.Join(each, "; "), f.seenCodes()),
	})
}
