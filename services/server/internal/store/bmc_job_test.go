package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestBMCJobLife: a job needs a machine with a BMC; it is taken once, by
// one agent, reported RUNNING then once final; a status answer becomes
// the machine's power state; the server's timeout ends what nobody
// finished, saying why; the poll queues one check per machine.
func TestBMCJobLife(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	now := time.Now()
	bare, managed := uuid.NewString(), uuid.NewString()
	mustPush(t, s, newHW(bare, iface{mac1, ip1}))
	if _, err := s.PutBMCCredential(ctx, "rack1", "k1", []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	mustPush(t, s, withBMC(newHW(managed, iface{mac2, ip2}), "rack1"))

	_, err := s.CreateBMCJob(ctx, BMCJob{HardwareID: bare, Kind: JobPowerStatus, Origin: "operator", Deadline: now.Add(time.Minute)})
	wantErr(t, err, ErrPrecondition, "has no BMC")
	_, err = s.CreateBMCJob(ctx, BMCJob{HardwareID: uuid.NewString(), Kind: JobPowerStatus, Origin: "operator", Deadline: now.Add(time.Minute)})
	wantErr(t, err, ErrNotFound, "hardware")
	_, err = s.CreateBMCJob(ctx, BMCJob{HardwareID: managed, Kind: JobNetboot, Origin: "workflow", WorkflowID: uuid.NewString(), Deadline: now.Add(time.Minute)})
	wantErr(t, err, ErrPrecondition, "is not a live workflow")

	status, err := s.CreateBMCJob(ctx, BMCJob{HardwareID: managed, Kind: JobPowerStatus, Origin: "operator", Deadline: now.Add(time.Minute)})
	if err != nil || status.State != JobPending || status.Taken {
		t.Fatalf("created %+v, %v", status, err)
	}
	j, hw, cred, found, err := s.TakeBMCJob(ctx, "bmc-a", now)
	if err != nil || !found || j.ID != status.ID || cred != "rack1" || hw.GetBmc().GetAddress() != "10.9.0.1" || j.Agent != "bmc-a" {
		t.Fatalf("take = %+v %v %q %v %v", j, hw, cred, found, err)
	}
	if _, _, _, found, err := s.TakeBMCJob(ctx, "bmc-b", now); err != nil || found {
		t.Fatalf("a taken job was handed out again: %v %v", found, err)
	}
	_, err = s.ReportBMCJob(ctx, JobReport{ID: j.ID, Agent: "bmc-b", State: JobRunning}, now)
	wantErr(t, err, ErrPrecondition, `not taken by agent "bmc-b"`)
	attempt := []JobAttempt{{N: 1, Start: now}}
	if _, err := s.ReportBMCJob(ctx, JobReport{ID: j.ID, Agent: "bmc-a", State: JobRunning, Attempts: attempt}, now); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReportBMCJob(ctx, JobReport{ID: j.ID, Agent: "bmc-a", State: JobSuccess, Answer: "maybe"}, now)
	wantErr(t, err, ErrInvalid, "on or off")
	attempt[0].End = now.Add(time.Second)
	done, err := s.ReportBMCJob(ctx, JobReport{ID: j.ID, Agent: "bmc-a", State: JobSuccess, Answer: "off", Attempts: attempt}, now)
	if err != nil || done.State != JobSuccess || len(done.Attempts) != 1 || !done.Attempts[0].End.Equal(attempt[0].End) {
		t.Fatalf("final = %+v, %v", done, err)
	}
	_, err = s.ReportBMCJob(ctx, JobReport{ID: j.ID, Agent: "bmc-a", State: JobFailed}, now)
	wantErr(t, err, ErrPrecondition, "already ended SUCCESS")
	power, err := s.PowerStates(ctx)
	if err != nil || len(power) != 1 || power[0].HardwareID != managed || power[0].State != "off" || power[0].CheckedAt.IsZero() {
		t.Fatalf("power = %+v, %v", power, err)
	}

	// Nobody takes the first; the second is taken and never reported.
	lost, err := s.CreateBMCJob(ctx, BMCJob{HardwareID: managed, Kind: JobPower, Action: "on", Origin: "operator", Deadline: now.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	ended, err := s.ExpireBMCJobs(ctx, now)
	if err != nil || len(ended) != 0 {
		t.Fatalf("expired before the deadline: %+v, %v", ended, err)
	}
	if _, _, _, found, _ := s.TakeBMCJob(ctx, "bmc-a", now.Add(2*time.Second)); found {
		t.Fatal("a job past its deadline was handed out")
	}
	ended, err = s.ExpireBMCJobs(ctx, now.Add(2*time.Second))
	if err != nil || len(ended) != 1 || ended[0].ID != lost.ID || ended[0].State != JobTimeout {
		t.Fatalf("expired = %+v, %v", ended, err)
	}
	if !strings.Contains(ended[0].Message, "no herd-bmc took the job") {
		t.Fatalf("reason = %q", ended[0].Message)
	}
	taken, err := s.CreateBMCJob(ctx, BMCJob{HardwareID: managed, Kind: JobBootDevice, Action: "pxe", Origin: "operator", Deadline: now.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, found, _ := s.TakeBMCJob(ctx, "bmc-a", now); !found {
		t.Fatal("no job to take")
	}
	ended, err = s.ExpireBMCJobs(ctx, now.Add(2*time.Second))
	if err != nil || len(ended) != 1 || ended[0].ID != taken.ID {
		t.Fatalf("expired = %+v, %v", ended, err)
	}
	if !strings.Contains(ended[0].Message, "herd-bmc bmc-a took the job at") {
		t.Fatalf("reason = %q", ended[0].Message)
	}
	_, err = s.ReportBMCJob(ctx, JobReport{ID: taken.ID, Agent: "bmc-a", State: JobSuccess}, now.Add(3*time.Second))
	wantErr(t, err, ErrPrecondition, "already ended TIMEOUT")

	// The poll: one check for the one machine with a BMC, not doubled.
	for range 2 {
		if n, err := s.QueuePowerPolls(ctx, now.Add(time.Minute), now.Add(-time.Hour)); err != nil || n > 1 {
			t.Fatalf("queued %d, %v", n, err)
		}
	}
	jobs, err := s.ListBMCJobs(ctx, managed, 100)
	if err != nil {
		t.Fatal(err)
	}
	polls := 0
	for _, j := range jobs {
		if j.Origin == "poll" {
			polls++
		}
	}
	if polls != 1 || len(jobs) != 4 {
		t.Fatalf("%d poll jobs of %d: %+v", polls, len(jobs), jobs)
	}
	if all, err := s.ListBMCJobs(ctx, "", 2); err != nil || len(all) != 2 {
		t.Fatalf("limit 2: %d, %v", len(all), err)
	}
	// Deleting the machine deletes its jobs.
	if err := s.DeleteHardware(ctx, managed); err != nil {
		t.Fatal(err)
	}
	if jobs, err := s.ListBMCJobs(ctx, managed, 100); err != nil || len(jobs) != 0 {
		t.Fatalf("jobs of a deleted machine: %d, %v", len(jobs), err)
	}
}

// TestTakeOneJobPerBMC: a BMC with a job taken and unfinished gets no
// other until that one ends, whichever agent asks; other BMCs' jobs are
// taken meanwhile. Two records naming one BMC, with the port left out
// and given as the protocol's, are one BMC.
func TestTakeOneJobPerBMC(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := s.PutBMCCredential(ctx, "rack1", "k1", []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	a1, a2, b := uuid.NewString(), uuid.NewString(), uuid.NewString()
	mustPush(t, s, withBMC(newHW(a1, iface{mac1, ip1}), "rack1"))
	hw := withBMC(newHW(a2, iface{mac2, ip2}), "rack1")
	hw.Bmc.Port = 623
	mustPush(t, s, hw)
	hw = withBMC(newHW(b, iface{"08:00:27:00:01:03", "10.9.0.3"}), "rack1")
	hw.Bmc.Address = "10.9.0.99"
	mustPush(t, s, hw)
	job := func(id string) string {
		j, err := s.CreateBMCJob(ctx, BMCJob{HardwareID: id, Kind: JobPowerStatus, Origin: "operator", Deadline: now.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	first, second, other := job(a1), job(a2), job(b)
	take := func(agent string) string {
		j, _, _, found, err := s.TakeBMCJob(ctx, agent, now)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return ""
		}
		return j.ID
	}
	if got := take("x"); got != first {
		t.Fatalf("took %q, want the oldest %s", got, first)
	}
	if got := take("y"); got != other {
		t.Fatalf("took %q, want %s of the idle BMC, not %s of the busy one", got, other, second)
	}
	if got := take("y"); got != "" {
		t.Fatalf("took %s while its BMC is busy", got)
	}
	if _, err := s.ReportBMCJob(ctx, JobReport{ID: first, Agent: "x", State: JobSuccess, Answer: "on"}, now); err != nil {
		t.Fatal(err)
	}
	if got := take("y"); got != second {
		t.Fatalf("took %q once the BMC was free, want %s", got, second)
	}
}
