package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/auth"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// WorkflowStore is what the workflow service needs from the store.
type WorkflowStore interface {
	CreateWorkflow(ctx context.Context, templateRef string, devices map[string]string, opt store.CreateOptions) (string, error)
	GetWorkflow(ctx context.Context, id string) (*workflow.Workflow, error)
	ListWorkflows(ctx context.Context, fn func(*workflow.Workflow) error) error
	DeleteWorkflow(ctx context.Context, id string) error
	WorkflowContext(ctx context.Context, id string) (*workflow.WorkflowContext, error)
	WorkflowActions(ctx context.Context, id string) (*workflow.WorkflowActionList, error)
	WorkerTakesPart(ctx context.Context, workflowID, workerID string) (bool, error)
	ContextsForWorker(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error)
	ApplicableContexts(ctx context.Context, workerID string) ([]*workflow.WorkflowContext, error)
	WorkflowEvents(ctx context.Context, id string, after int64, fn func(seq int64, ev *workflow.WorkflowActionStatus) error) error
	ReportAction(ctx context.Context, r *workflow.WorkflowActionStatus) error
	WorkflowData(ctx context.Context, id string, version int32) ([]byte, int32, error)
	WorkflowMetadata(ctx context.Context, id string, version int32) ([]byte, int32, error)
	UpdateWorkflowData(ctx context.Context, id string, metadata, data []byte) (int32, error)
	RecordBootEvent(ctx context.Context, hwID, message string) (string, error)
	AppendActionLogs(ctx context.Context, l *workflow.ActionLogs, worker string) error
	ActionLogs(ctx context.Context, workflowID, task, action string, fn func(*workflow.ActionLogs) error) error
}

// Workflow implements WorkflowService.
type Workflow struct {
	workflow.UnimplementedWorkflowServiceServer
	store  WorkflowStore
	notify Notifier
	log    *slog.Logger
}

// NewWorkflow returns the workflow service.
func NewWorkflow(s WorkflowStore, n Notifier, log *slog.Logger) *Workflow {
	return &Workflow{store: s, notify: n, log: log}
}

// maxDevices bounds the hardware map of one workflow.
const maxDevices = 1000

// CreateWorkflow renders a template for the machines in the hardware map.
// toggle_netboot, when set, says whether the server switches the machines'
// netboot itself; unset, the template's toggle_netboot key says, else it
// does.
func (w *Workflow) CreateWorkflow(ctx context.Context, req *workflow.CreateRequest) (*workflow.CreateResponse, error) {
	if req.GetTemplate() == "" {
		return nil, invalid("template", "missing: give a template id or name")
	}
	if req.GetHardware() == "" {
		return nil, invalid("hardware", `missing: give a JSON map such as {"device_1":"08:00:27:00:00:01"}`)
	}
	var devices map[string]string
	if err := json.Unmarshal([]byte(req.GetHardware()), &devices); err != nil {
		return nil, invalid("hardware", "not a JSON object of strings: "+err.Error())
	}
	if len(devices) == 0 || len(devices) > maxDevices {
		return nil, invalid("hardware", "must name between 1 and 1000 devices")
	}
	id, err := w.store.CreateWorkflow(ctx, req.GetTemplate(), devices, store.CreateOptions{ToggleNetboot: req.ToggleNetboot})
	if err != nil {
		return nil, err
	}
	w.log.InfoContext(ctx, "workflow created", "workflow_id", id, "template", req.GetTemplate(), "devices", devices,
		"toggle_netboot_requested", optionalBool(req.ToggleNetboot))
	return &workflow.CreateResponse{Id: id}, nil
}

// GetWorkflow returns one workflow.
func (w *Workflow) GetWorkflow(ctx context.Context, req *workflow.GetRequest) (*workflow.Workflow, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	return w.store.GetWorkflow(ctx, req.GetId())
}

// DeleteWorkflow marks a workflow deleted.
func (w *Workflow) DeleteWorkflow(ctx context.Context, req *workflow.GetRequest) (*workflow.Empty, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := w.store.DeleteWorkflow(ctx, req.GetId()); err != nil {
		return nil, err
	}
	w.log.InfoContext(ctx, "workflow deleted", "workflow_id", req.GetId())
	return &workflow.Empty{}, nil
}

// ListWorkflows streams every live workflow.
func (w *Workflow) ListWorkflows(_ *workflow.Empty, stream workflow.WorkflowService_ListWorkflowsServer) error {
	return w.store.ListWorkflows(stream.Context(), stream.Send)
}

// GetWorkflowContext tells where a workflow stands.
func (w *Workflow) GetWorkflowContext(ctx context.Context, req *workflow.GetRequest) (*workflow.WorkflowContext, error) {
	if err := requireID("id", req.GetId()); err != nil {
		return nil, err
	}
	return w.store.WorkflowContext(ctx, req.GetId())
}

// ShowWorkflowEvents streams the events recorded so far.
func (w *Workflow) ShowWorkflowEvents(req *workflow.GetRequest, stream workflow.WorkflowService_ShowWorkflowEventsServer) error {
	if err := requireID("id", req.GetId()); err != nil {
		return err
	}
	if _, err := w.store.GetWorkflow(stream.Context(), req.GetId()); err != nil {
		return err
	}
	return w.store.WorkflowEvents(stream.Context(), req.GetId(), 0, func(_ int64, ev *workflow.WorkflowActionStatus) error {
		return stream.Send(ev)
	})
}

// WatchWorkflowEvents streams the events so far, then new ones, and ends
// when the workflow reaches a final state.
func (w *Workflow) WatchWorkflowEvents(req *workflow.GetRequest, stream workflow.WorkflowService_WatchWorkflowEventsServer) error {
	id := req.GetId()
	if err := requireID("id", id); err != nil {
		return err
	}
	ctx := stream.Context()
	changes, cancel := w.notify.Subscribe(store.ChannelWorkflow)
	defer cancel()
	var last int64
	for {
		wf, err := w.store.GetWorkflow(ctx, id)
		if err != nil {
			return err
		}
		err = w.store.WorkflowEvents(ctx, id, last, func(seq int64, ev *workflow.WorkflowActionStatus) error {
			last = seq
			return stream.Send(ev)
		})
		if err != nil {
			return err
		}
		if final(wf.GetState()) {
			return nil
		}
		if err := waitFor(ctx, changes, id); err != nil {
			return err
		}
	}
}

// optionalBool is a tri-state request field for the log.
func optionalBool(b *bool) string {
	if b == nil {
		return "unset"
	}
	if *b {
		return "true"
	}
	return "false"
}

func final(s workflow.State) bool {
	return s == workflow.State_STATE_SUCCESS || s == workflow.State_STATE_FAILED || s == workflow.State_STATE_TIMEOUT
}

// The worker calls. A worker credential only reaches the workflows that
// the machine takes part in; admin callers reach all.

func (w *Workflow) authorizeWorker(ctx context.Context, workerID string) error {
	if workerID == "" {
		return invalid("worker_id", "missing")
	}
	if !auth.FromContext(ctx).CanActFor(workerID) {
		return status.Errorf(codes.PermissionDenied, "this credential does not speak for worker %s", clip(workerID))
	}
	return nil
}

func (w *Workflow) authorizeWorkflow(ctx context.Context, id string) error {
	if err := requireID("workflow_id", id); err != nil {
		return err
	}
	p := auth.FromContext(ctx)
	if p.Admin {
		return nil
	}
	mine, err := w.store.WorkerTakesPart(ctx, id, p.Worker)
	if err != nil {
		return err
	}
	if !mine {
		// Not its own, deleted, or none: one answer for all, the one for
		// a workflow that does not exist, so a machine learns nothing
		// about workflows that are not its own.
		return store.WorkflowNotFound(uuid.MustParse(id).String())
	}
	return nil
}

// GetWorkflowContexts streams the workflows in which this worker has the
// next move (the ones tink-worker should run now).
func (w *Workflow) GetWorkflowContexts(req *workflow.WorkflowContextRequest, stream workflow.WorkflowService_GetWorkflowContextsServer) error {
	if err := w.authorizeWorker(stream.Context(), req.GetWorkerId()); err != nil {
		return err
	}
	ctxs, err := w.store.ApplicableContexts(stream.Context(), req.GetWorkerId())
	if err != nil {
		return err
	}
	for _, c := range ctxs {
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

// GetWorkflowContextList lists every live workflow the worker takes part
// in, whoever has the next move (as v0.6 does).
func (w *Workflow) GetWorkflowContextList(ctx context.Context, req *workflow.WorkflowContextRequest) (*workflow.WorkflowContextList, error) {
	if err := w.authorizeWorker(ctx, req.GetWorkerId()); err != nil {
		return nil, err
	}
	ctxs, err := w.store.ContextsForWorker(ctx, req.GetWorkerId())
	if err != nil {
		return nil, err
	}
	return &workflow.WorkflowContextList{WorkflowContexts: ctxs}, nil
}

// GetWorkflowActions returns a workflow's actions in order.
func (w *Workflow) GetWorkflowActions(ctx context.Context, req *workflow.WorkflowActionsRequest) (*workflow.WorkflowActionList, error) {
	if err := w.authorizeWorkflow(ctx, req.GetWorkflowId()); err != nil {
		return nil, err
	}
	return w.store.WorkflowActions(ctx, req.GetWorkflowId())
}

// ReportActionStatus records a worker's report on an action.
func (w *Workflow) ReportActionStatus(ctx context.Context, req *workflow.WorkflowActionStatus) (*workflow.Empty, error) {
	if err := requireID("workflow_id", req.GetWorkflowId()); err != nil {
		return nil, err
	}
	switch {
	case req.GetTaskName() == "":
		return nil, invalid("task_name", "missing")
	case req.GetActionName() == "":
		return nil, invalid("action_name", "missing")
	case workflow.State_name[int32(req.GetActionStatus())] == "":
		return nil, invalid("action_status", "unknown state")
	case len(req.GetMessage()) > maxMessage:
		return nil, invalid("message", "longer than 64 KiB")
	case req.GetSeconds() < 0:
		return nil, invalid("seconds", "negative")
	}
	// The store refuses a report by a worker that takes no part in the
	// workflow with NotFound, in the same transaction as the report (one
	// statement less per report than asking first).
	if p := auth.FromContext(ctx); !p.Admin {
		// A worker reports as itself, whatever the message says.
		if req.GetWorkerId() != "" && req.GetWorkerId() != p.Worker {
			return nil, status.Errorf(codes.PermissionDenied, "worker_id %s does not match the credential", clip(req.GetWorkerId()))
		}
		req.WorkerId = p.Worker
	} else if req.GetWorkerId() == "" {
		return nil, invalid("worker_id", "missing: say which machine reports")
	}
	if err := w.store.ReportAction(ctx, req); err != nil {
		return nil, err
	}
	w.log.InfoContext(ctx, "action reported", "workflow_id", req.GetWorkflowId(), "hardware_id", req.GetWorkerId(),
		"task", req.GetTaskName(), "action", req.GetActionName(), "state", req.GetActionStatus().String())
	return &workflow.Empty{}, nil
}

const maxMessage = 64 << 10

// GetWorkflowData returns a version of the workflow data (0: the latest).
func (w *Workflow) GetWorkflowData(ctx context.Context, req *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
	if err := w.checkDataRequest(ctx, req); err != nil {
		return nil, err
	}
	data, v, err := w.store.WorkflowData(ctx, req.GetWorkflowId(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &workflow.GetWorkflowDataResponse{Data: data, Version: v}, nil
}

// GetWorkflowMetadata returns who wrote a version of the workflow data.
func (w *Workflow) GetWorkflowMetadata(ctx context.Context, req *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
	if err := w.checkDataRequest(ctx, req); err != nil {
		return nil, err
	}
	data, v, err := w.store.WorkflowMetadata(ctx, req.GetWorkflowId(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &workflow.GetWorkflowDataResponse{Data: data, Version: v}, nil
}

// GetWorkflowDataVersion returns the latest data version.
func (w *Workflow) GetWorkflowDataVersion(ctx context.Context, req *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
	if err := w.checkDataRequest(ctx, req); err != nil {
		return nil, err
	}
	_, v, err := w.store.WorkflowData(ctx, req.GetWorkflowId(), 0)
	if err != nil {
		return nil, err
	}
	return &workflow.GetWorkflowDataResponse{Version: v}, nil
}

// UpdateWorkflowData stores a new version of the workflow data.
func (w *Workflow) UpdateWorkflowData(ctx context.Context, req *workflow.UpdateWorkflowDataRequest) (*workflow.Empty, error) {
	if err := w.authorizeWorkflow(ctx, req.GetWorkflowId()); err != nil {
		return nil, err
	}
	if !json.Valid(req.GetData()) {
		return nil, invalid("data", "not valid JSON")
	}
	meta := req.GetMetadata()
	if len(meta) == 0 {
		meta = []byte("{}")
	}
	if !json.Valid(meta) {
		return nil, invalid("metadata", "not valid JSON")
	}
	v, err := w.store.UpdateWorkflowData(ctx, req.GetWorkflowId(), meta, req.GetData())
	if err != nil {
		return nil, err
	}
	w.log.InfoContext(ctx, "workflow data updated", "workflow_id", req.GetWorkflowId(), "version", v)
	return &workflow.Empty{}, nil
}

func (w *Workflow) checkDataRequest(ctx context.Context, req *workflow.GetWorkflowDataRequest) error {
	if err := w.authorizeWorkflow(ctx, req.GetWorkflowId()); err != nil {
		return err
	}
	if req.GetVersion() < 0 {
		return invalid("version", "negative")
	}
	return nil
}

// maxBootMessage bounds one boot note.
const maxBootMessage = 1 << 10

// RecordBootEvent notes boot progress on the machine's active workflow.
func (w *Workflow) RecordBootEvent(ctx context.Context, req *workflow.BootEvent) (*workflow.BootEventResponse, error) {
	if err := requireID("hardware_id", req.GetHardwareId()); err != nil {
		return nil, err
	}
	switch m := req.GetMessage(); {
	case m == "":
		return nil, invalid("message", "missing")
	case len(m) > maxBootMessage:
		return nil, invalid("message", "longer than 1 KiB")
	}
	id, err := w.store.RecordBootEvent(ctx, req.GetHardwareId(), req.GetMessage())
	if err != nil {
		return nil, err
	}
	return &workflow.BootEventResponse{WorkflowId: id}, nil
}

// Limits of ReportActionLogs.
const (
	maxLogLinesPerCall = 500
	maxLogLine         = 4 << 10
)

// ReportActionLogs stores output lines of an action's container.
func (w *Workflow) ReportActionLogs(ctx context.Context, req *workflow.ActionLogs) (*workflow.Empty, error) {
	if err := requireID("workflow_id", req.GetWorkflowId()); err != nil {
		return nil, err
	}
	switch {
	case req.GetTaskName() == "":
		return nil, invalid("task_name", "missing")
	case req.GetActionName() == "":
		return nil, invalid("action_name", "missing")
	case len(req.GetLines()) > maxLogLinesPerCall:
		return nil, invalid("lines", "more than 500 in one call")
	case len(req.GetBatchId()) > 128:
		return nil, invalid("batch_id", "longer than 128 bytes")
	}
	for i, ln := range req.GetLines() {
		field := fmt.Sprintf("lines[%d]", i)
		switch {
		case ln.GetStream() != "stdout" && ln.GetStream() != "stderr":
			return nil, invalid(field+".stream", "want stdout or stderr")
		case len(ln.GetText()) > maxLogLine:
			return nil, invalid(field+".text", "longer than 4 KiB: split it")
		case !utf8.ValidString(ln.GetText()) || strings.ContainsRune(ln.GetText(), 0):
			return nil, invalid(field+".text", "not UTF-8 text")
		}
	}
	worker := ""
	if p := auth.FromContext(ctx); !p.Admin {
		worker = p.Worker
	}
	if err := w.store.AppendActionLogs(ctx, req, worker); err != nil {
		return nil, err
	}
	return &workflow.Empty{}, nil
}

// ShowActionLogs streams stored output lines.
func (w *Workflow) ShowActionLogs(req *workflow.ActionLogsRequest, stream workflow.WorkflowService_ShowActionLogsServer) error {
	if err := requireID("workflow_id", req.GetWorkflowId()); err != nil {
		return err
	}
	return w.store.ActionLogs(stream.Context(), req.GetWorkflowId(), req.GetTaskName(), req.GetActionName(), stream.Send)
}
