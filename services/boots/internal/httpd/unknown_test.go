package httpd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/services/boots/internal/script"
)

func TestThrottle(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		key  string
		at   time.Duration // since t0
		ok   bool
		held int
	}
	tests := []struct {
		name             string
		max, perInterval int
		steps            []step
	}{
		{"one line per key per interval, then the count held back", 10, 100, []step{
			{"a", 0, true, 0}, {"a", time.Second, false, 0}, {"a", 9 * time.Second, false, 0},
			{"b", 9 * time.Second, true, 0},
			{"a", 10 * time.Second, true, 2}, {"a", 11 * time.Second, false, 0}, {"a", 30 * time.Second, true, 1},
			{"b", 30 * time.Second, true, 0},
		}},
		{"new keys beyond max share one entry", 2, 100, []step{
			{"a", 0, true, 0}, {"b", 0, true, 0},
			{"c", time.Second, true, 0}, {"d", time.Second, false, 0}, {"e", 2 * time.Second, false, 0},
			{"a", 3 * time.Second, false, 0},
		}},
		{"quiet keys are forgotten when full", 2, 100, []step{
			{"a", 0, true, 0}, {"b", 0, true, 0},
			{"c", 10 * time.Second, true, 0}, {"d", 10 * time.Second, true, 0},
		}},
		{"at most perInterval lines in all", 100, 2, []step{
			{"a", 0, true, 0}, {"b", time.Second, true, 0}, {"c", 2 * time.Second, false, 0}, {"d", 3 * time.Second, false, 0},
			{"c", 10 * time.Second, true, 1}, {"d", 10 * time.Second, true, 1}, {"e", 10 * time.Second, false, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := newThrottle(10*time.Second, tt.max, tt.perInterval)
			for i, s := range tt.steps {
				ok, held := th.allow(s.key, t0.Add(s.at))
				if ok != s.ok || held != s.held {
					t.Fatalf("step %d %+v: got ok=%v held=%d", i, s, ok, held)
				}
			}
			if len(th.keys) > tt.max+1 {
				t.Fatalf("%d keys remembered, max %d", len(th.keys), tt.max)
			}
		})
	}
}

func TestThrottleFlood(t *testing.T) {
	th := newThrottle(10*time.Second, 64, 30)
	t0 := time.Unix(1000, 0)
	lines := 0
	for i := range 100000 {
		// 100k distinct MACs over 100 s.
		if ok, _ := th.allow(fmt.Sprintf("mac-%d", i), t0.Add(time.Duration(i)*time.Millisecond)); ok {
			lines++
		}
	}
	if lines > 30*11 || len(th.keys) > 65 {
		t.Fatalf("a flood of new MACs let %d lines through (want at most %d) and left %d keys", lines, 30*11, len(th.keys))
	}
}

// syncBuf is a log sink for a test server.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }

// lines returns the JSON log lines whose msg is msg.
func (s *syncBuf) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestUnknownCallerLogsAndCounts: a request boots cannot identify is
// counted by route and reason, and logged as a warning with the MAC, the
// address, the interface auto.ipxe reported and a hint, one line per
// caller per interval with the count held back.
func TestUnknownCallerLogsAndCounts(t *testing.T) {
	logs := &syncBuf{}
	reg := observe.NewRegistry()
	s, err := New(Config{Script: script.Config{BaseURL: "http://10.0.5.1:8080"}, Params: script.ParamsAuto},
		machines, slog.New(slog.NewJSONHandler(logs, nil)), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(5000, 0)
	s.now = func() time.Time { return now }
	const ovh = "/machines/52-54-00-dd-00-00/boot.ipxe?iface=net0&net0=52-54-00-dd-00-00&net1=52-54-00-00-00-01&net2=&net3="
	// auto.ipxe's ten tries, 3 s apart, from the provider's address.
	for i := range 10 {
		now = time.Unix(5000, 0).Add(time.Duration(i) * 3 * time.Second)
		if code, body := get(s, "GET", ovh, "203.0.113.9:4000"); code != 200 || !strings.Contains(body, "set herdunknown 1") {
			t.Fatalf("try %d: %d\n%s", i, code, body)
		}
	}
	got := logs.lines(t, "http: script for an unknown caller")
	// Tries at 0, 3, ..., 27 s: lines at 0, 12 (3 held: 3, 6, 9), 24 (15, 18, 21).
	if len(got) != 3 {
		t.Fatalf("%d lines for 10 tries in 27 s, want 3: %v", len(got), got)
	}
	want := map[string]any{"level": "WARN", "mac": "52:54:00:dd:00:00", "remote": "203.0.113.9:4000", "iface": "net0",
		"reason": "unknown_mac", "known_iface": "net1", "known_mac": "52:54:00:00:00:01", "hardware_id": "hw-1"}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s = %v, want %v (line %v)", k, got[0][k], v, got[0])
		}
	}
	if h, _ := got[0]["hint"].(string); !strings.Contains(h, "ifclose net0") || !strings.Contains(h, "set iface net1") {
		t.Errorf("hint %q", h)
	}
	if _, ok := got[0]["suppressed"]; ok || got[1]["suppressed"] != 3.0 || got[2]["suppressed"] != 3.0 {
		t.Errorf("suppressed counts: %v, %v, %v", got[0]["suppressed"], got[1]["suppressed"], got[2]["suppressed"])
	}

	// The other reasons, and an event from an unknown caller.
	now = now.Add(time.Minute)
	for _, r := range []struct{ target, remote string }{
		{"/machines/not-a-mac/boot.ipxe?iface=net0", "203.0.113.10:1"},           // no_mac
		{"/machines/52-54-00-00-00-02/boot.ipxe?iface=net0", "10.0.5.10:1"},      // hw-1's address, hw-2's MAC
		{"/events?event=kernel_fetched&mac=52-54-00-dd-00-01", "203.0.113.11:1"}, // event, unknown_mac
		{"/machines/52-54-00-dd-00-02/boot.ipxe?iface=bad%0Aline", "203.0.113.12:1"},
	} {
		get(s, "GET", r.target, r.remote)
	}
	got = logs.lines(t, "http: script for an unknown caller")
	if len(got) != 6 || got[3]["reason"] != "no_mac" || got[3]["named"] != "not-a-mac" || got[4]["reason"] != "other_machine" {
		t.Fatalf("lines: %v", got[3:])
	}
	if got[5]["iface"] != "" || got[5]["mac"] != "52:54:00:dd:00:02" {
		t.Errorf("a malformed iface must not be logged: %v", got[5])
	}
	if ev := logs.lines(t, "http: boot event from an unknown caller"); len(ev) != 1 || ev[0]["mac"] != "52:54:00:dd:00:01" || ev[0]["level"] != "WARN" {
		t.Errorf("event lines: %v", ev)
	}

	// require-ip: hw-1's MAC from an address that is no hardware's.
	s2 := newServer(t, true)
	get(s2, "GET", "/machines/52-54-00-00-00-01/boot.ipxe?iface=net1", "203.0.113.13:1")
	_, page := get(s2, "GET", "/metrics", "10.0.5.10:1")
	if !strings.Contains(page, `herd_boots_unknown_callers_total{reason="not_its_address",route="script"} 1`) {
		t.Errorf("require-ip: no not_its_address count:\n%s", grepLines(page, "unknown_callers"))
	}

	r := httptest.NewRequest("GET", "/metrics", nil)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	page = w.Body.String()
	for _, want := range []string{
		`herd_boots_unknown_callers_total{reason="unknown_mac",route="script"} 11`,
		`herd_boots_unknown_callers_total{reason="no_mac",route="script"} 1`,
		`herd_boots_unknown_callers_total{reason="other_machine",route="script"} 1`,
		`herd_boots_unknown_callers_total{reason="unknown_mac",route="event"} 1`,
		`herd_boots_script_renders_total{params="",script="unknown"} 13`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(page, "unknown"))
		}
	}
	// No label holds a MAC or an address.
	for _, l := range strings.Split(grepLines(page, "herd_boots_unknown_callers_total{"), "\n") {
		if strings.Contains(l, "52:54") || strings.Contains(l, "203.0") {
			t.Errorf("unbounded label: %s", l)
		}
	}
}

func grepLines(page, s string) string {
	var out []string
	for _, l := range strings.Split(page, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
