//go:build bench

package bench

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	non2xx   int64
	errors   string // wrk's "Socket errors" line, or "none"
}

var (
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)\s*$`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkTotal   = regexp.MustCompile(`(?m)^\s+([0-9]+) requests in `)
	wrkNon2xx  = regexp.MustCompile(`(?m)^\s+Non-2xx or 3xx responses:\s+([0-9]+)\s*$`)
	wrkSockErr = regexp.MustCompile(`(?m)^\s+Socket errors:\s+(.*?)\s*$`)
)

// parseWrk reads the report of `wrk --latency`.
func parseWrk(out string) (wrkResult, error) {
	r := wrkResult{errors: "none"}
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no Requests/sec line")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}[m[3]]
		d := time.Duration(v * float64(unit))
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p99 == 0 {
		return r, errors.New("no 99% latency line (was --latency given?)")
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSockErr.FindStringSubmatch(out); m != nil {
		r.errors = strings.TrimSpace(m[1])
	}
	return r, nil
}

func TestParseWrk(t *testing.T) {
	out := `Running 10s test @ http://127.0.0.1:41234/metadata
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms    1.51ms  31.43ms   91.21%
    Req/Sec    38.12k     3.20k   45.01k    70.00%
  Latency Distribution
     50%  581.00us
     75%    1.10ms
     90%    2.33ms
     99%    7.61ms
  758123 requests in 10.01s, 520.33MB read
  Socket errors: connect 0, read 0, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:  75738.42
Transfer/sec:     51.98MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{rps: 75738.42, p50: 581 * time.Microsecond, p99: 7610 * time.Microsecond, requests: 758123, non2xx: 12,
		errors: "connect 0, read 0, write 0, timeout 3"}
	if r != want {
		t.Errorf("parseWrk = %+v, want %+v", r, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("parseWrk accepted a failed run")
	}
}
