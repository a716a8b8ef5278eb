package api

// The operator's side of BMC jobs: ask, follow, list. herd-bmc's side is
// bmc_agent.go.

import (
	"context"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// JobStore is what the job calls need from the store.
type JobStore interface {
	CreateBMCJob(ctx context.Context, j store.BMCJob) (store.BMCJob, error)
	BMCJob(ctx context.Context, id string) (store.BMCJob, error)
	ListBMCJobs(ctx context.Context, hwID string, limit int) ([]store.BMCJob, error)
	PowerStates(ctx context.Context) ([]store.MachinePower, error)
}

// DefaultJobTimeout is a job's deadline from its creation when the server
// is given none (herd-server --bmc-job-timeout): long enough for a slow
// BMC's three attempts, short enough that a lost job ends soon.
const DefaultJobTimeout = 3 * time.Minute

// maxListedJobs bounds ListJobs.
const maxListedJobs = 1000

// powerActions are what Power accepts; status asks, the others change.
var powerActions = map[string]bool{"on": true, "off": true, "cycle": true, "reset": true, "status": true}

var bootDevices = map[string]bool{"pxe": true, "disk": true, "bios": true}

// newJob records a job for the operator, due by the job timeout.
func (m *Machine) newJob(ctx context.Context, j store.BMCJob) (*machine.Job, error) {
	if err := requireID("hardware_id", j.HardwareID); err != nil {
		return nil, err
	}
	if j.Origin == "" {
		j.Origin = "operator"
	}
	j.Deadline = m.now().Add(m.jobTimeout)
	out, err := m.jobs.CreateBMCJob(ctx, j)
	if err != nil {
		return nil, err
	}
	m.log.InfoContext(ctx, "bmc job queued", "job", out.ID, "hardware_id", out.HardwareID,
		"kind", out.Kind, "action", out.Action, "workflow_id", out.WorkflowID)
	return jobProto(out), nil
}

// Power queues a power change or a status check.
func (m *Machine) Power(ctx context.Context, req *machine.PowerRequest) (*machine.Job, error) {
	a := req.GetAction()
	if !powerActions[a] {
		return nil, invalid("action", "\""+clip(a)+"\" is not on, off, cycle, reset or status")
	}
	j := store.BMCJob{HardwareID: req.GetHardwareId(), Kind: store.JobPower, Action: a}
	if a == "status" {
		j.Kind, j.Action = store.JobPowerStatus, ""
	}
	return m.newJob(ctx, j)
}

// SetBootDevice queues a change of the next boot device.
func (m *Machine) SetBootDevice(ctx context.Context, req *machine.BootDeviceRequest) (*machine.Job, error) {
	d := req.GetDevice()
	if !bootDevices[d] {
		return nil, invalid("device", "\""+clip(d)+"\" is not pxe, disk or bios")
	}
	return m.newJob(ctx, store.BMCJob{HardwareID: req.GetHardwareId(), Kind: store.JobBootDevice,
		Action: d, Persistent: req.GetPersistent(), EFI: req.GetEfi()})
}

// Netboot queues next-boot-from-network and a power cycle, for a workflow
// when one is named (its events then show the job's steps).
func (m *Machine) Netboot(ctx context.Context, req *machine.NetbootRequest) (*machine.Job, error) {
	j := store.BMCJob{HardwareID: req.GetHardwareId(), Kind: store.JobNetboot, EFI: req.GetEfi()}
	if wf := req.GetWorkflowId(); wf != "" {
		if err := requireID("workflow_id", wf); err != nil {
			return nil, err
		}
		j.WorkflowID, j.Origin = wf, "workflow"
	}
	return m.newJob(ctx, j)
}

// GetJob returns one job.
func (m *Machine) GetJob(ctx context.Context, req *machine.GetJobRequest) (*machine.Job, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	j, err := m.jobs.BMCJob(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	return jobProto(j), nil
}

// ListJobs lists jobs, newest first.
func (m *Machine) ListJobs(ctx context.Context, req *machine.ListJobsRequest) (*machine.JobList, error) {
	if hw := req.GetHardwareId(); hw != "" {
		if err := requireID("hardware_id", hw); err != nil {
			return nil, err
		}
	}
	limit := int(req.GetLimit())
	switch {
	case limit < 0:
		return nil, invalid("limit", "negative")
	case limit == 0 || limit > maxListedJobs:
		limit = maxListedJobs
	}
	all, err := m.jobs.ListBMCJobs(ctx, req.GetHardwareId(), limit)
	if err != nil {
		return nil, err
	}
	out := &machine.JobList{}
	for _, j := range all {
		out.Jobs = append(out.Jobs, jobProto(j))
	}
	return out, nil
}

// WatchJob sends the job, then each change, and ends after a final state.
func (m *Machine) WatchJob(req *machine.GetJobRequest, stream machine.MachineService_WatchJobServer) error {
	id := req.GetId()
	if err := requireID("id", id); err != nil {
		return err
	}
	ctx := stream.Context()
	changes, cancel := m.notify.Subscribe(store.ChannelBMCJob)
	defer cancel()
	var last time.Time
	for {
		j, err := m.jobs.BMCJob(ctx, id)
		if err != nil {
			return err
		}
		if !j.UpdatedAt.Equal(last) {
			last = j.UpdatedAt
			if err := stream.Send(jobProto(j)); err != nil {
				return err
			}
		}
		if store.JobFinal(j.State) {
			return nil
		}
		if err := waitFor(ctx, changes, j.ID); err != nil {
			return err
		}
	}
}

// ListPower lists the last known power state of every machine with a BMC.
func (m *Machine) ListPower(ctx context.Context, _ *machine.ListPowerRequest) (*machine.PowerList, error) {
	all, err := m.jobs.PowerStates(ctx)
	if err != nil {
		return nil, err
	}
	out := &machine.PowerList{}
	for _, p := range all {
		mp := &machine.MachinePower{HardwareId: p.HardwareID, State: p.State, Error: p.Error}
		if !p.CheckedAt.IsZero() {
			mp.CheckedAt = timestamppb.New(p.CheckedAt)
		}
		out.Machines = append(out.Machines, mp)
	}
	return out, nil
}

var jobKinds = map[string]machine.JobKind{
	store.JobPowerStatus: machine.JobKind_JOB_KIND_POWER_STATUS,
	store.JobPower:       machine.JobKind_JOB_KIND_POWER,
	store.JobBootDevice:  machine.JobKind_JOB_KIND_BOOT_DEVICE,
	store.JobNetboot:     machine.JobKind_JOB_KIND_NETBOOT,
}

// JobStateName is the state as the store and the CLI spell it: PENDING.
func JobStateName(s machine.JobState) string {
	return strings.TrimPrefix(s.String(), "JOB_STATE_")
}

func jobStateProto(s string) machine.JobState {
	return machine.JobState(machine.JobState_value["JOB_STATE_"+s])
}

func jobProto(j store.BMCJob) *machine.Job {
	out := &machine.Job{
		Id: j.ID, HardwareId: j.HardwareID, Kind: jobKinds[j.Kind], Action: j.Action,
		Persistent: j.Persistent, Efi: j.EFI, State: jobStateProto(j.State),
		Answer: j.Answer, Message: j.Message, WorkflowId: j.WorkflowID, Origin: j.Origin,
		CreatedAt: timestamppb.New(j.CreatedAt), UpdatedAt: timestamppb.New(j.UpdatedAt),
		Deadline: timestamppb.New(j.Deadline),
	}
	for _, a := range j.Attempts {
		pa := &machine.JobAttempt{N: int32(a.N), Start: timestamppb.New(a.Start), Error: a.Error}
		if !a.End.IsZero() {
			pa.End = timestamppb.New(a.End)
		}
		out.Attempts = append(out.Attempts, pa)
	}
	return out
}
