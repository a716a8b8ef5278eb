package api

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/machine"
)

// TestCheckReport: what herd-bmc reports is bounded and named before it
// reaches the store.
func TestCheckReport(t *testing.T) {
	id := "11111111-1111-4111-8111-111111111111"
	ok := func() *machine.JobReport {
		return &machine.JobReport{Id: id, Agent: "bmc-1", State: machine.JobState_JOB_STATE_SUCCESS, Answer: "on",
			Attempts: []*machine.JobAttempt{{N: 1, Start: timestamppb.Now(), End: timestamppb.Now()}}}
	}
	for _, c := range []struct {
		name string
		edit func(*machine.JobReport)
		want string // "" : accepted
	}{
		{"a good report", func(*machine.JobReport) {}, ""},
		{"no id", func(r *machine.JobReport) { r.Id = "" }, "id: missing"},
		{"id not a UUID", func(r *machine.JobReport) { r.Id = "job-1" }, "is not a UUID"},
		{"no agent", func(r *machine.JobReport) { r.Agent = "" }, "agent: missing"},
		{"agent with a slash", func(r *machine.JobReport) { r.Agent = "a/b" }, "is not an agent name"},
		{"PENDING is not reported", func(r *machine.JobReport) { r.State = machine.JobState_JOB_STATE_PENDING }, "is not RUNNING, SUCCESS, FAILED or TIMEOUT"},
		{"unknown state number", func(r *machine.JobReport) { r.State = 42 }, "is not RUNNING"},
		{"huge message", func(r *machine.JobReport) { r.Message = strings.Repeat("x", maxReportText+1) }, "message: 2049 bytes"},
		{"message not UTF-8", func(r *machine.JobReport) { r.Message = "\xff" }, "message: not valid UTF-8"},
		{"huge answer", func(r *machine.JobReport) { r.Answer = strings.Repeat("x", maxReportAnswer+1) }, "answer: 65 bytes"},
		{"too many attempts", func(r *machine.JobReport) {
			for range maxReportAttempts {
				r.Attempts = append(r.Attempts, r.Attempts[0])
			}
		}, "attempts: 33"},
		{"attempt without start", func(r *machine.JobReport) { r.Attempts[0].Start = nil }, "attempts[0]: needs n >= 1 and a start time"},
		{"attempt 0", func(r *machine.JobReport) { r.Attempts[0].N = 0 }, "attempts[0]"},
		{"attempt error not UTF-8", func(r *machine.JobReport) { r.Attempts[0].Error = "\xfe" }, "attempts[0].error: not valid UTF-8"},
	} {
		r := ok()
		c.edit(r)
		got, err := checkReport(r)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want == "" && (got.State != "SUCCESS" || len(got.Attempts) != 1 || got.Answer != "on"):
			t.Errorf("%s: became %+v", c.name, got)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
}
