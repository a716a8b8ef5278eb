package api

// herd-bmc's side of BMC jobs: take one (with its BMC's secret), report
// its states. Only the BMC agent's credential opens these calls.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
	"unicode/utf8"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// AgentStore is what herd-bmc's calls need from the store.
type AgentStore interface {
	TakeBMCJob(ctx context.Context, agent string, now time.Time) (store.BMCJob, *hardware.Hardware, string, bool, error)
	ReportBMCJob(ctx context.Context, r store.JobReport, now time.Time) (store.BMCJob, error)
	BMCCredential(ctx context.Context, name string) (store.SealedCredential, error)
}

// Opener decrypts a sealed secret (internal/keyring).
type Opener interface {
	Open(keyID, context string, sealed []byte) ([]byte, error)
}

// BMCAgent implements herd's BMCAgentService.
type BMCAgent struct {
	machine.UnimplementedBMCAgentServiceServer
	store  AgentStore
	opener Opener
	notify Notifier
	log    *slog.Logger
	now    func() time.Time
}

// NewBMCAgent returns herd-bmc's service.
func NewBMCAgent(s AgentStore, opener Opener, n Notifier, log *slog.Logger) *BMCAgent {
	return &BMCAgent{store: s, opener: opener, notify: n, log: log, now: time.Now}
}

// The bounds of what herd-bmc sends.
const (
	defaultJobWait    = 20 * time.Second
	maxJobWait        = 60 * time.Second
	maxReportAttempts = 32
	maxReportText     = 2048
	maxReportAnswer   = 64
)

func checkAgent(name string) error {
	if msg := spec.AgentNameProblem(name); msg != "" {
		return invalid("agent", msg)
	}
	return nil
}

// NextJob takes the oldest waiting job, waiting up to wait_seconds.
func (a *BMCAgent) NextJob(ctx context.Context, req *machine.NextJobRequest) (*machine.AgentJob, error) {
	if err := checkAgent(req.GetAgent()); err != nil {
		return nil, err
	}
	wait := time.Duration(req.GetWaitSeconds()) * time.Second
	switch {
	case req.GetWaitSeconds() < 0 || wait > maxJobWait:
		return nil, invalid("wait_seconds", fmt.Sprintf("%d is not 0 to %d", req.GetWaitSeconds(), int(maxJobWait/time.Second)))
	case wait == 0:
		wait = defaultJobWait
	}
	// Subscribe before looking, so a job queued in between wakes us.
	changes, cancel := a.notify.Subscribe(store.ChannelBMCJob)
	defer cancel()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		j, err := a.take(ctx, req.GetAgent())
		if err != nil || j != nil {
			return j, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return &machine.AgentJob{Job: &machine.Job{}}, nil
		case _, ok := <-changes:
			if !ok {
				return &machine.AgentJob{Job: &machine.Job{}}, nil
			}
		}
	}
}

// take hands out one job with its BMC and secret (nil: none waits). A job
// whose credential cannot be opened ends FAILED here, saying why, and the
// next one is tried.
func (a *BMCAgent) take(ctx context.Context, agent string) (*machine.AgentJob, error) {
	for {
		j, hw, cred, found, err := a.store.TakeBMCJob(ctx, agent, a.now())
		if err != nil || !found {
			return nil, err
		}
		b := hw.GetBmc()
		secret, problem := a.secret(ctx, cred)
		if problem == "" && b.GetAddress() == "" {
			problem = "the hardware record has no bmc.address"
		}
		if problem != "" {
			a.log.ErrorContext(ctx, "bmc job failed before it started", "job", j.ID, "hardware_id", j.HardwareID, "problem", problem)
			if _, err := a.store.ReportBMCJob(ctx, store.JobReport{ID: j.ID, Agent: agent, State: store.JobFailed, Message: problem}, a.now()); err != nil {
				return nil, err
			}
			continue
		}
		a.log.InfoContext(ctx, "bmc job taken", "job", j.ID, "hardware_id", j.HardwareID, "kind", j.Kind, "agent", agent)
		return &machine.AgentJob{Job: jobProto(j), Bmc: &machine.AgentBMC{
			Address: b.GetAddress(), Protocol: b.GetProtocol(), Port: spec.BMCPort(b),
			Username: secret.Username, Password: secret.Password,
		}}, nil
	}
}

// secret opens the named credential; problem says why it could not (never
// with the secret in it).
func (a *BMCAgent) secret(ctx context.Context, name string) (BMCSecret, string) {
	var s BMCSecret
	c, err := a.store.BMCCredential(ctx, name)
	if err != nil {
		return s, fmt.Sprintf("bmc credential %q: %v", name, err)
	}
	plain, err := a.opener.Open(c.KeyID, BMCSealContext(name), c.Sealed)
	if err != nil {
		return s, fmt.Sprintf("bmc credential %q cannot be opened: %v (restore its key, or set it again)", name, err)
	}
	if err := json.Unmarshal(plain, &s); err != nil {
		return s, fmt.Sprintf("bmc credential %q: stored value is not a credential", name)
	}
	return s, ""
}

var reportStates = map[machine.JobState]string{
	machine.JobState_JOB_STATE_RUNNING: store.JobRunning,
	machine.JobState_JOB_STATE_SUCCESS: store.JobSuccess,
	machine.JobState_JOB_STATE_FAILED:  store.JobFailed,
	machine.JobState_JOB_STATE_TIMEOUT: store.JobTimeout,
}

// ReportJob records a state of a job the agent took.
func (a *BMCAgent) ReportJob(ctx context.Context, req *machine.JobReport) (*machine.Empty, error) {
	r, err := checkReport(req)
	if err != nil {
		return nil, err
	}
	j, err := a.store.ReportBMCJob(ctx, r, a.now())
	if err != nil {
		return nil, err
	}
	if store.JobFinal(j.State) {
		a.log.InfoContext(ctx, "bmc job ended", "job", j.ID, "hardware_id", j.HardwareID, "kind", j.Kind,
			"state", j.State, "attempts", len(j.Attempts), "answer", j.Answer, "message", j.Message)
	}
	return &machine.Empty{}, nil
}

// checkReport validates what herd-bmc reports, bounding every text (a
// BMC's words reach the record through it).
func checkReport(req *machine.JobReport) (store.JobReport, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return store.JobReport{}, err
	}
	if err := checkAgent(req.GetAgent()); err != nil {
		return store.JobReport{}, err
	}
	state, ok := reportStates[req.GetState()]
	if !ok {
		return store.JobReport{}, invalid("state", req.GetState().String()+" is not RUNNING, SUCCESS, FAILED or TIMEOUT")
	}
	if err := checkText("message", req.GetMessage(), maxReportText); err != nil {
		return store.JobReport{}, err
	}
	if err := checkText("answer", req.GetAnswer(), maxReportAnswer); err != nil {
		return store.JobReport{}, err
	}
	if len(req.GetAttempts()) > maxReportAttempts {
		return store.JobReport{}, invalid("attempts", fmt.Sprintf("%d, more than the %d allowed", len(req.GetAttempts()), maxReportAttempts))
	}
	r := store.JobReport{ID: req.GetId(), Agent: req.GetAgent(), State: state, Answer: req.GetAnswer(), Message: req.GetMessage()}
	for i, pa := range req.GetAttempts() {
		field := fmt.Sprintf("attempts[%d]", i)
		if err := checkText(field+".error", pa.GetError(), maxReportText); err != nil {
			return store.JobReport{}, err
		}
		if pa.GetN() < 1 || pa.GetStart() == nil {
			return store.JobReport{}, invalid(field, "needs n >= 1 and a start time")
		}
		at := store.JobAttempt{N: int(pa.GetN()), Start: pa.GetStart().AsTime(), Error: pa.GetError()}
		if pa.GetEnd() != nil {
			at.End = pa.GetEnd().AsTime()
		}
		r.Attempts = append(r.Attempts, at)
	}
	return r, nil
}

func checkText(field, v string, max int) error {
	switch {
	case len(v) > max:
		return invalid(field, fmt.Sprintf("%d bytes, more than the %d allowed", len(v), max))
	case !utf8.ValidString(v):
		return invalid(field, "not valid UTF-8")
	}
	return nil
}
