// Package reliability is the record of herd's fault and bad-input tests
// (TestReliability*): each test says what it did to a real part, how much
// traffic went through, what was lost and how long recovery took, and
// `make reliability` turns the records into docs/reliability.md.
//
// The tests run in two sizes: a short form in `make test` and the full
// size of the issue with HERD_RELIABILITY=full (make reliability).
package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

// Row is one fault or bad-input case as the report shows it.
type Row struct {
	// Case names the fault: "PostgreSQL restarted (pg_ctl -m fast)".
	Case string `json:"case"`
	// Done says what the test did, in a sentence.
	Done string `json:"done"`
	// Volume is how much went through: "200 workflows × 10 actions, 4,000 reports".
	Volume string `json:"volume"`
	// Lost counts what was lost or applied twice (reports, packets,
	// requests); the case passes only with 0.
	Lost int `json:"lost"`
	// Recovery is how long the service took to work again (0: no outage).
	Recovery time.Duration `json:"recovery_ns"`
	// Notes holds anything else worth a reader's eye (latency figures,
	// the errors the clients saw).
	Notes string `json:"notes,omitempty"`
	// Full is whether the full-size form ran.
	Full bool `json:"full"`
}

// EnvSize and EnvOut are the environment variables the tests read.
const (
	EnvSize = "HERD_RELIABILITY"
	EnvOut  = "HERD_RELIABILITY_OUT"
)

// Full reports whether the full-size form runs (HERD_RELIABILITY=full).
func Full() bool { return os.Getenv(EnvSize) == "full" }

// Size returns short in the short form, full in the full one.
func Size(short, full int) int {
	if Full() {
		return full
	}
	return short
}

// Record logs r in the test's output and, when HERD_RELIABILITY_OUT names
// a file, appends it there as one JSON line (O_APPEND: the packages' test
// binaries may write at once).
func Record(t testing.TB, r Row) {
	t.Helper()
	r.Full = Full()
	t.Logf("reliability: %s: %s; %s; lost %d; recovery %v %s", r.Case, r.Done, r.Volume, r.Lost, r.Recovery, r.Notes)
	path := os.Getenv(EnvOut)
	if path == "" {
		return
	}
	line, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("reliability record: %v", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatalf("reliability record: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		t.Fatalf("reliability record: %v", err)
	}
}

// Read parses the JSON lines Record wrote.
func Read(data []byte) ([]Row, error) {
	var rows []Row
	for i, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r Row
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// Render is the markdown table of rows (sorted by case), headed by the
// commit they ran on.
func Render(rows []Row, commit string, when time.Time) string {
	rows = append([]Row(nil), rows...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Case < rows[j].Case })
	var b strings.Builder
	fmt.Fprintf(&b, "Run on commit `%s`, %s, by `make reliability`.\n\n", commit, when.UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("| case | what was done | volume | lost | recovery | notes |\n| --- | --- | --- | ---: | ---: | --- |\n")
	for _, r := range rows {
		size := ""
		if !r.Full {
			size = " (short form)"
		}
		fmt.Fprintf(&b, "| %s%s | %s | %s | %d | %s | %s |\n", cell(r.Case), size, cell(r.Done), cell(r.Volume), r.Lost, recovery(r.Recovery), cell(r.Notes))
	}
	return b.String()
}

func recovery(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return d.Round(10 * time.Millisecond).String()
}

// cell keeps a value inside its table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
