package engine

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/proto/workflow"
)

const (
	w1 = "0f6b3c52-0000-4000-8000-000000000001"
	w2 = "0f6b3c52-0000-4000-8000-000000000002"
)

var t0 = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

// steps: two tasks on two machines; actions 0 and 2 have timeouts.
var steps = []Step{
	{Task: "disk", Name: "wipe", Worker: w1, Timeout: time.Minute},
	{Task: "disk", Name: "partition", Worker: w1},
	{Task: "os", Name: "write", Worker: w2, Timeout: 2 * time.Minute},
	{Task: "os", Name: "reboot", Worker: w2},
}

func at(d time.Duration) time.Time { return t0.Add(d) }

func rep(i int, st State, worker string) Report {
	return Report{Task: steps[i].Task, Action: steps[i].Name, Worker: worker, State: st}
}

// running: action i has been RUNNING since minute i+1, the workflow since minute 1.
func running(i int) Status {
	return Status{State: Running, Index: i, ActionState: Running, Started: at(time.Minute), ActionStarted: at(time.Duration(i+1) * time.Minute)}
}

func succeeded(i int) Status {
	s := running(i)
	s.ActionState = Success
	return s
}

func ended(st State, i int) Status {
	s := running(i)
	s.State, s.ActionState = st, st
	return s
}

func TestApplyRun(t *testing.T) {
	type move struct {
		r         Report
		at        time.Duration
		changed   bool
		wantState State
		// who may move after this report
		next1, next2 bool
	}
	run := []move{
		{rep(0, Running, w1), 1 * time.Minute, true, Running, true, false},
		{rep(0, Running, w1), 1 * time.Minute, false, Running, true, false}, // resend
		{rep(0, Success, w1), 2 * time.Minute, true, Running, true, false},
		{rep(0, Success, w1), 2 * time.Minute, false, Running, true, false}, // resend
		{rep(1, Running, w1), 3 * time.Minute, true, Running, true, false},
		{rep(1, Success, w1), 4 * time.Minute, true, Running, false, true}, // hand over to w2
		{rep(2, Running, w2), 5 * time.Minute, true, Running, false, true},
		{rep(2, Success, w2), 6 * time.Minute, true, Running, false, true},
		{rep(3, Running, w2), 7 * time.Minute, true, Running, false, true},
		{rep(3, Success, w2), 8 * time.Minute, true, Success, false, false},
		{rep(3, Success, w2), 9 * time.Minute, false, Success, false, false}, // resend after the end
	}
	var s Status
	if !Applicable(s, steps, w1) || Applicable(s, steps, w2) {
		t.Fatalf("new workflow: Applicable(w1)=%v Applicable(w2)=%v, want true false",
			Applicable(s, steps, w1), Applicable(s, steps, w2))
	}
	for i, m := range run {
		next, changed, err := Apply(s, steps, m.r, at(m.at))
		if err != nil {
			t.Fatalf("move %d (%+v): %v", i, m.r, err)
		}
		if changed != m.changed {
			t.Errorf("move %d (%+v): changed=%v, want %v", i, m.r, changed, m.changed)
		}
		if !changed && next != s {
			t.Errorf("move %d: unchanged report altered the status: %+v -> %+v", i, s, next)
		}
		s = next
		if s.State != m.wantState {
			t.Errorf("move %d: workflow state %v, want %v", i, s.State, m.wantState)
		}
		if got := Applicable(s, steps, w1); got != m.next1 {
			t.Errorf("move %d: Applicable(w1)=%v, want %v", i, got, m.next1)
		}
		if got := Applicable(s, steps, w2); got != m.next2 {
			t.Errorf("move %d: Applicable(w2)=%v, want %v", i, got, m.next2)
		}
	}
	want := Status{State: Success, Index: 3, ActionState: Success, Started: at(time.Minute), ActionStarted: at(7 * time.Minute)}
	if s != want {
		t.Errorf("final status %+v, want %+v", s, want)
	}
}

func TestApply(t *testing.T) {
	now := at(30 * time.Minute)
	started0 := Status{State: Running, Index: 0, ActionState: Running, Started: now, ActionStarted: now}
	running1 := running(1)
	running1.ActionStarted = now
	tests := []struct {
		name    string
		s       Status
		r       Report
		want    Status // when err is nil
		changed bool
		err     error
		msg     string // substring of the error
	}{
		{name: "first RUNNING starts the clock", s: Status{}, r: rep(0, Running, w1), want: started0, changed: true},
		{name: "final state before RUNNING", s: Status{}, r: rep(0, Success, w1), err: ErrOutOfOrder,
			msg: `expected RUNNING of action 0 (task "disk", action "wipe") from worker "` + w1 + `"`},
		{name: "skip the first action", s: Status{}, r: rep(1, Running, w1), err: ErrOutOfOrder,
			msg: `that is action 1, expected RUNNING of action 0 (task "disk", action "wipe")`},
		{name: "first action by the wrong worker", s: Status{}, r: rep(0, Running, w2), err: ErrWrongWorker,
			msg: `action 0 (task "disk", action "wipe") runs on worker "` + w1 + `"`},
		{name: "wrong task name", s: Status{}, r: Report{Task: "os", Action: "wipe", Worker: w1, State: Running}, err: ErrWrongAction,
			msg: `no action "wipe" in task "os"; expected RUNNING of action 0`},
		{name: "unknown action", s: Status{}, r: Report{Task: "disk", Action: "format", Worker: w1, State: Running}, err: ErrWrongAction},
		{name: "PENDING is not reportable", s: Status{}, r: rep(0, Pending, w1), err: ErrWrongAction},
		{name: "unknown state", s: running(0), r: rep(0, State(9), w1), err: ErrWrongAction},
		{name: "empty worker", s: Status{}, r: rep(0, Running, ""), err: ErrWrongWorker},

		{name: "resent RUNNING", s: running(0), r: rep(0, Running, w1), want: running(0)},
		{name: "SUCCESS", s: running(0), r: rep(0, Success, w1), want: succeeded(0), changed: true},
		{name: "FAILED ends the workflow", s: running(0), r: rep(0, Failed, w1), want: ended(Failed, 0), changed: true},
		{name: "TIMEOUT ends the workflow", s: running(0), r: rep(0, Timeout, w1), want: ended(Timeout, 0), changed: true},
		{name: "next RUNNING before a final state", s: running(0), r: rep(1, Running, w1), err: ErrOutOfOrder,
			msg: `expected SUCCESS, FAILED or TIMEOUT of action 0 (task "disk", action "wipe")`},
		{name: "final state of a later action", s: running(0), r: rep(1, Success, w1), err: ErrOutOfOrder},
		{name: "final state by the wrong worker", s: running(0), r: rep(0, Success, w2), err: ErrWrongWorker},
		{name: "resend by the wrong worker", s: running(2), r: rep(2, Running, w1), err: ErrWrongWorker},

		{name: "resent SUCCESS", s: succeeded(0), r: rep(0, Success, w1), want: succeeded(0)},
		{name: "stale RUNNING after SUCCESS", s: succeeded(0), r: rep(0, Running, w1), err: ErrOutOfOrder,
			msg: `that is action 0, expected RUNNING of action 1 (task "disk", action "partition")`},
		{name: "FAILED after SUCCESS", s: succeeded(0), r: rep(0, Failed, w1), err: ErrOutOfOrder},
		{name: "next action starts", s: succeeded(0), r: rep(1, Running, w1), want: running1, changed: true},
		{name: "skip an action", s: succeeded(0), r: rep(2, Running, w2), err: ErrOutOfOrder,
			msg: `expected RUNNING of action 1 (task "disk", action "partition")`},
		{name: "final state of the next action before its RUNNING", s: succeeded(0), r: rep(1, Failed, w1), err: ErrOutOfOrder},
		{name: "hand over to the wrong worker", s: succeeded(1), r: rep(2, Running, w1), err: ErrWrongWorker,
			msg: `runs on worker "` + w2 + `"`},

		{name: "last SUCCESS ends the workflow", s: running(3), r: rep(3, Success, w2), want: ended(Success, 3), changed: true},
		{name: "last FAILED", s: running(3), r: rep(3, Failed, w2), want: ended(Failed, 3), changed: true},
		{name: "resend after SUCCESS", s: ended(Success, 3), r: rep(3, Success, w2), want: ended(Success, 3)},
		{name: "report after SUCCESS", s: ended(Success, 3), r: rep(0, Running, w1), err: ErrFinished,
			msg: `workflow ended with SUCCESS at action 3 (task "os", action "reboot")`},
		{name: "resend after FAILED", s: ended(Failed, 1), r: rep(1, Failed, w1), want: ended(Failed, 1)},
		{name: "next action after FAILED", s: ended(Failed, 1), r: rep(2, Running, w2), err: ErrFinished},
		{name: "SUCCESS after FAILED", s: ended(Failed, 1), r: rep(1, Success, w1), err: ErrFinished},
		{name: "worker TIMEOUT after the server's", s: ended(Timeout, 2), r: rep(2, Timeout, w2), want: ended(Timeout, 2)},
		{name: "SUCCESS after the server's TIMEOUT", s: ended(Timeout, 2), r: rep(2, Success, w2), err: ErrFinished},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, changed, err := Apply(tt.s, steps, tt.r, now)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("err = %q, want it to contain %q", err, tt.msg)
				}
				if changed || next != tt.s {
					t.Errorf("refused report changed the status: changed=%v %+v -> %+v", changed, tt.s, next)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if changed != tt.changed || next != tt.want {
				t.Errorf("got changed=%v %+v, want changed=%v %+v", changed, next, tt.changed, tt.want)
			}
		})
	}
}

func TestApplyBadStatus(t *testing.T) {
	sentinels := []error{ErrWrongAction, ErrOutOfOrder, ErrFinished, ErrWrongWorker}
	for _, tt := range []struct {
		name  string
		s     Status
		steps []Step
	}{
		{"no actions", Status{}, nil},
		{"index out of range", Status{State: Running, Index: 9, ActionState: Running}, steps},
		{"running after the last success", Status{State: Running, Index: 3, ActionState: Success}, steps},
	} {
		_, _, err := Apply(tt.s, tt.steps, rep(0, Running, w1), t0)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, e := range sentinels {
			if errors.Is(err, e) {
				t.Errorf("%s: %v wraps %v; a corrupt status is not the worker's fault", tt.name, err, e)
			}
		}
		if Applicable(tt.s, tt.steps, w1) {
			t.Errorf("%s: Applicable", tt.name)
		}
		if _, ok := Expire(tt.s, tt.steps, time.Second, at(time.Hour)); ok {
			t.Errorf("%s: Expire", tt.name)
		}
	}
}

func TestDeadline(t *testing.T) {
	tests := []struct {
		name   string
		s      Status
		global time.Duration
		want   time.Time // zero: none
	}{
		{"pending, no clock yet", Status{}, time.Hour, time.Time{}},
		{"action timeout", running(0), 0, at(time.Minute + time.Minute)},
		{"global earlier than action", running(0), 30 * time.Second, at(time.Minute + 30*time.Second)},
		{"action earlier than global", running(0), time.Hour, at(2 * time.Minute)},
		{"no timeouts", running(1), 0, time.Time{}},
		{"negative global is none", running(1), -time.Second, time.Time{}},
		{"global only", running(1), 10 * time.Minute, at(11 * time.Minute)},
		{"later action timeout from its own start", running(2), 0, at(3*time.Minute + 2*time.Minute)},
		{"between actions no action deadline", succeeded(0), 0, time.Time{}},
		{"between actions global", succeeded(0), 10 * time.Minute, at(11 * time.Minute)},
		{"ended", ended(Failed, 0), time.Minute, time.Time{}},
		{"succeeded", ended(Success, 3), time.Minute, time.Time{}},
	}
	for _, tt := range tests {
		got, ok := Deadline(tt.s, steps, tt.global)
		if ok != !tt.want.IsZero() || !got.Equal(tt.want) {
			t.Errorf("%s: Deadline = %v %v, want %v", tt.name, got, ok, tt.want)
		}
	}
}

func TestExpire(t *testing.T) {
	tests := []struct {
		name   string
		s      Status
		global time.Duration
		now    time.Time
		want   Status // zero: nothing expires
		reason string
	}{
		{name: "action timeout not yet", s: running(0), now: at(2*time.Minute - time.Nanosecond)},
		{name: "action timeout", s: running(0), now: at(2 * time.Minute), want: ended(Timeout, 0),
			reason: `action 0 (task "disk", action "wipe") exceeded its timeout of 1m0s`},
		{name: "action without timeout runs forever", s: running(1), now: at(1000 * time.Hour)},
		{name: "global timeout", s: running(1), global: 10 * time.Minute, now: at(11 * time.Minute), want: ended(Timeout, 1),
			reason: "workflow exceeded its global timeout of 10m0s (running since 2024-05-01T10:01:00Z)"},
		{name: "global before action", s: running(2), global: 3 * time.Minute, now: at(4 * time.Minute), want: ended(Timeout, 2),
			reason: "global timeout of 3m0s"},
		{name: "both passed names the action", s: running(2), global: 3 * time.Minute, now: at(time.Hour), want: ended(Timeout, 2),
			reason: `action 2 (task "os", action "write") exceeded`},
		{name: "between actions the awaited action times out", s: succeeded(1), global: 10 * time.Minute, now: at(12 * time.Minute),
			want:   func() Status { s := ended(Timeout, 2); s.ActionStarted = running(1).ActionStarted; return s }(),
			reason: "global timeout"},
		{name: "pending never expires", s: Status{}, global: time.Second, now: at(1000 * time.Hour)},
		{name: "ended never expires", s: ended(Failed, 0), global: time.Second, now: at(1000 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Expire(tt.s, steps, tt.global, tt.now)
			reason := ExpireReason(tt.s, steps, tt.global, tt.now)
			if tt.want == (Status{}) {
				if ok || got != tt.s || reason != "" {
					t.Fatalf("Expire = %+v %v (%q), want nothing", got, ok, reason)
				}
				return
			}
			if !ok || got != tt.want {
				t.Fatalf("Expire = %+v %v, want %+v", got, ok, tt.want)
			}
			if !strings.Contains(reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", reason, tt.reason)
			}
			if Applicable(got, steps, w1) || Applicable(got, steps, w2) {
				t.Errorf("expired workflow still applicable")
			}
			// The worker's own TIMEOUT for that action, arriving late, is
			// a resend; anything else is refused.
			if _, changed, err := Apply(got, steps, rep(got.Index, Timeout, steps[got.Index].Worker), tt.now); err != nil || changed {
				t.Errorf("late TIMEOUT: changed=%v err=%v", changed, err)
			}
			if _, _, err := Apply(got, steps, rep(got.Index, Success, steps[got.Index].Worker), tt.now); !errors.Is(err, ErrFinished) {
				t.Errorf("late SUCCESS: err=%v, want ErrFinished", err)
			}
		})
	}
}

func TestApplicable(t *testing.T) {
	tests := []struct {
		name   string
		s      Status
		w1, w2 bool
	}{
		{"pending", Status{}, true, false},
		{"w1 running its first action", running(0), true, false},
		{"w1 between its actions", succeeded(0), true, false},
		{"w2 is next", succeeded(1), false, true},
		{"w2 running", running(2), false, true},
		{"w2 last action running", running(3), false, true},
		{"failed", ended(Failed, 2), false, false},
		{"timeout", ended(Timeout, 0), false, false},
		{"success", ended(Success, 3), false, false},
	}
	for _, tt := range tests {
		if got := Applicable(tt.s, steps, w1); got != tt.w1 {
			t.Errorf("%s: Applicable(w1) = %v", tt.name, got)
		}
		if got := Applicable(tt.s, steps, w2); got != tt.w2 {
			t.Errorf("%s: Applicable(w2) = %v", tt.name, got)
		}
		if Applicable(tt.s, steps, "someone-else") {
			t.Errorf("%s: Applicable(stranger)", tt.name)
		}
	}
}

func TestContext(t *testing.T) {
	c := Context("wf", Status{}, steps)
	if c.GetWorkflowId() != "wf" || c.GetCurrentAction() != "" || c.GetCurrentTask() != "" || c.GetCurrentWorker() != "" ||
		c.GetCurrentActionIndex() != 0 || c.GetCurrentActionState() != Pending || c.GetTotalNumberOfActions() != 4 {
		t.Errorf("pending context %v", c)
	}
	c = Context("wf", succeeded(2), steps)
	if c.GetCurrentAction() != "write" || c.GetCurrentTask() != "os" || c.GetCurrentWorker() != w2 ||
		c.GetCurrentActionIndex() != 2 || c.GetCurrentActionState() != Success || c.GetTotalNumberOfActions() != 4 {
		t.Errorf("context %v", c)
	}
}

func TestSteps(t *testing.T) {
	got := Steps([]*workflow.WorkflowAction{
		{TaskName: "disk", Name: "wipe", WorkerId: w1, Timeout: 60},
		{TaskName: "os", Name: "write", WorkerId: w2},
	})
	want := []Step{{Task: "disk", Name: "wipe", Worker: w1, Timeout: time.Minute}, {Task: "os", Name: "write", Worker: w2}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Steps = %+v, want %+v", got, want)
	}
}

func TestToggleNetboot(t *testing.T) {
	on, off := new(true), new(false)
	tests := []struct {
		name              string
		request, template *bool
		want              bool
	}{
		{"neither says: on", nil, nil, true},
		{"template off", nil, off, false},
		{"template on", nil, on, true},
		{"request off", off, nil, false},
		{"request on", on, nil, true},
		{"request on beats template off", on, off, true},
		{"request off beats template on", off, on, false},
		{"both off", off, off, false},
	}
	for _, tt := range tests {
		if got := ToggleNetboot(tt.request, tt.template); got != tt.want {
			t.Errorf("%s: ToggleNetboot = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNetbootChange(t *testing.T) {
	tests := []struct {
		from, to State
		set      bool
	}{
		{Running, Success, true}, // the last action succeeded
		{Pending, Running, false},
		{Running, Running, false}, // an action succeeded, more follow
		{Running, Failed, false},  // left on: the machine can be retried
		{Running, Timeout, false},
		{Pending, Timeout, false},
		{Success, Success, false}, // a resend: switched off already
	}
	for _, tt := range tests {
		allow, set := NetbootChange(tt.from, tt.to)
		if set != tt.set || allow {
			t.Errorf("NetbootChange(%s, %s) = allow_pxe %v, set %v; want set %v and allow_pxe false",
				StateName(tt.from), StateName(tt.to), allow, set, tt.set)
		}
	}
}
