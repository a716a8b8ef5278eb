package runner

import (
	"errors"
	"testing"
	"time"

	"github.com/herd-metal/herd/services/bmc/internal/driver"
)

func TestBackoff(t *testing.T) {
	p := Policy{BaseBackoff: time.Second, MaxBackoff: 5 * time.Second}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 5 * time.Second, 30: 5 * time.Second} {
		if got := p.Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestDecide(t *testing.T) {
	b := driver.BMC{Protocol: driver.IPMI, Host: "10.0.0.5", Port: 623}
	fail := func(cause error) error { return driver.Fail(b, "power on", cause, "") }
	p := Policy{MaxAttempts: 3, BaseBackoff: time.Second, MaxBackoff: 10 * time.Second}
	now := time.Unix(1000, 0)
	later := now.Add(time.Minute)
	for _, c := range []struct {
		name     string
		n        int
		err      error
		deadline time.Time
		want     Decision
	}{
		{"unreachable is retried", 1, fail(driver.ErrUnreachable), later, Decision{Retry: true, Wait: time.Second}},
		{"the wait doubles", 2, fail(driver.ErrMalformed), later, Decision{Retry: true, Wait: 2 * time.Second}},
		{"attempts run out: FAILED", 3, fail(driver.ErrUnreachable), later, Decision{Final: StateFailed}},
		{"last attempt timed out: TIMEOUT", 3, fail(driver.ErrTimeout), later, Decision{Final: StateTimeout}},
		{"wrong password is never retried", 1, fail(driver.ErrAuth), later, Decision{Final: StateFailed}},
		{"a refusal is never retried", 1, fail(driver.ErrRejected), later, Decision{Final: StateFailed}},
		{"bad input is never retried", 1, fail(driver.ErrBadInput), later, Decision{Final: StateFailed}},
		{"missing feature is never retried", 1, fail(driver.ErrUnsupported), later, Decision{Final: StateFailed}},
		{"past the deadline: TIMEOUT", 1, fail(driver.ErrUnreachable), now, Decision{Final: StateTimeout}},
		{"the wait would pass the deadline: stop", 1, fail(driver.ErrTimeout), now.Add(500 * time.Millisecond), Decision{Final: StateTimeout}},
		{"an unknown error is retried", 1, errors.New("boom"), later, Decision{Retry: true, Wait: time.Second}},
	} {
		if got := Decide(p, c.n, c.err, now, c.deadline); got != c.want {
			t.Errorf("%s: Decide = %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestSched: one job per BMC at a time, the global limit, first come
// first served among the startable ones.
func TestSched(t *testing.T) {
	job := func(id, host string) Job {
		return Job{ID: id, BMC: driver.BMC{Protocol: driver.IPMI, Host: host, Port: 623}}
	}
	ids := func(js []Job) (out []string) {
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	s := newSched(2)
	steps := []struct {
		do   func() []Job
		want []string
	}{
		{func() []Job { return s.add(job("a1", "a")) }, []string{"a1"}},
		{func() []Job { return s.add(job("a2", "a")) }, nil}, // a is busy
		{func() []Job { return s.add(job("b1", "b")) }, []string{"b1"}},
		{func() []Job { return s.add(job("c1", "c")) }, nil}, // global limit 2
		{func() []Job { return s.done(job("", "a").key()) }, []string{"a2"}},
		{func() []Job { return s.done(job("", "b").key()) }, []string{"c1"}},
		{func() []Job { return s.done(job("", "x").key()) }, nil}, // not running: nothing changes
	}
	for i, st := range steps {
		got := ids(st.do())
		if len(got) != len(st.want) || (len(got) > 0 && got[0] != st.want[0]) {
			t.Fatalf("step %d started %v, want %v", i, got, st.want)
		}
	}
	if s.running != 2 || len(s.waiting) != 0 {
		t.Fatalf("running %d, waiting %d", s.running, len(s.waiting))
	}
}
