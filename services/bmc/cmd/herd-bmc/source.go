package main

// The runner's Source over gRPC: herd-server's BMCAgentService, called
// with the BMC agent's token.

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/bmc/internal/driver"
	"github.com/herd-metal/herd/services/bmc/internal/runner"
)

// serverSource takes jobs from herd-server and reports their states.
type serverSource struct {
	client machine.BMCAgentServiceClient
	agent  string
	log    *slog.Logger
	// connected says whether the connection to herd-server is up now.
	connected func() bool
	// lost is why the last NextJob failed (nil: it answered), for /healthz.
	mu   sync.Mutex
	lost error
}

// health is nil while herd-server answers, else degraded with the cause:
// herd-bmc keeps running and asking, so an orchestrator must not restart
// it. A NextJob waits up to 20 s at the server, so a connection up again
// counts as recovered before the next answer comes.
func (s *serverSource) health(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost != nil && (s.connected == nil || !s.connected()) {
		return observe.Degraded(fmt.Errorf("herd-server unreachable: %w", s.lost))
	}
	return nil
}

func (s *serverSource) setLost(err error) {
	s.mu.Lock()
	s.lost = err
	s.mu.Unlock()
}

// jobWait is how long one NextJob waits at the server for a job.
const jobWait = 20 * time.Second

var kinds = map[machine.JobKind]runner.Kind{
	machine.JobKind_JOB_KIND_POWER_STATUS: runner.KindPowerStatus,
	machine.JobKind_JOB_KIND_POWER:        runner.KindPower,
	machine.JobKind_JOB_KIND_BOOT_DEVICE:  runner.KindBootDevice,
	machine.JobKind_JOB_KIND_NETBOOT:      runner.KindNetboot,
}

// Next blocks until herd-server hands out a job or ctx ends; while the
// server is unreachable it keeps asking, with growing pauses.
func (s *serverSource) Next(ctx context.Context) (runner.Job, error) {
	pause := 100 * time.Millisecond
	for {
		aj, err := s.client.NextJob(ctx, &machine.NextJobRequest{Agent: s.agent, WaitSeconds: int32(jobWait / time.Second)})
		if ctx.Err() == nil {
			s.setLost(err)
		}
		switch {
		case ctx.Err() != nil:
			return runner.Job{}, ctx.Err()
		case err == nil && aj.GetJob().GetId() == "":
			pause = 100 * time.Millisecond
			continue
		case err == nil:
			return toRunnerJob(aj), nil
		case status.Code(err) == codes.InvalidArgument, status.Code(err) == codes.PermissionDenied, status.Code(err) == codes.Unauthenticated:
			// Asking again will not help: wrong token or agent name.
			return runner.Job{}, fmt.Errorf("herd-server refused herd-bmc: %w", err)
		}
		s.log.Warn("taking a job from herd-server failed; retrying", "error", err, "pause", pause)
		select {
		case <-ctx.Done():
			return runner.Job{}, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// toRunnerJob is the job as the runner takes it. What the job holds was
// validated by herd-server; the drivers check the BMC again before any
// traffic, and an unknown kind fails the job (runner.attempt).
func toRunnerJob(aj *machine.AgentJob) runner.Job {
	j, b := aj.GetJob(), aj.GetBmc()
	out := runner.Job{
		ID: j.GetId(), Machine: j.GetHardwareId(), Kind: kinds[j.GetKind()],
		BMC: driver.BMC{Protocol: driver.Protocol(b.GetProtocol()), Host: b.GetAddress(), Port: int(b.GetPort()),
			Username: b.GetUsername(), Password: b.GetPassword()},
		Options: driver.BootOptions{Persistent: j.GetPersistent(), EFI: j.GetEfi()},
	}
	switch out.Kind {
	case runner.KindPower:
		out.Action = driver.PowerAction(j.GetAction())
	case runner.KindBootDevice:
		out.Device = driver.BootDevice(j.GetAction())
	}
	if j.GetDeadline() != nil {
		out.Deadline = j.GetDeadline().AsTime()
	}
	return out
}

var states = map[runner.State]machine.JobState{
	runner.StateRunning: machine.JobState_JOB_STATE_RUNNING,
	runner.StateSuccess: machine.JobState_JOB_STATE_SUCCESS,
	runner.StateFailed:  machine.JobState_JOB_STATE_FAILED,
	runner.StateTimeout: machine.JobState_JOB_STATE_TIMEOUT,
}

// Report sends a job's state; a final state is retried while herd-server
// is unavailable and ctx lasts (the runner bounds it).
func (s *serverSource) Report(ctx context.Context, r runner.Result) error {
	req := &machine.JobReport{Id: r.JobID, Agent: s.agent, State: states[r.State], Answer: r.Answer, Message: r.Message}
	for _, a := range r.Attempts {
		pa := &machine.JobAttempt{N: int32(a.N), Start: timestamppb.New(a.Start), Error: a.Error}
		if !a.End.IsZero() {
			pa.End = timestamppb.New(a.End)
		}
		req.Attempts = append(req.Attempts, pa)
	}
	pause := 100 * time.Millisecond
	for {
		_, err := s.client.ReportJob(ctx, req)
		if status.Code(err) != codes.Unavailable || r.State == runner.StateRunning {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}
