package tinkimport

// From Tinkerbell v0.6's rows to herd's records: pure functions, each
// returning the reason a record cannot go in.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/engine"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// hardwareRow is a live row of v0.6's hardware table.
type hardwareRow struct {
	id         string
	insertedAt time.Time // zero when NULL; v0.6 sets it at every push
	data       *string   // the record's JSON (tink's json.Marshal of the proto)
}

// convertHardware reads a v0.6 hardware row as herd reads `hardware push`
// files: strictly (unknown keys, bad addresses and the like refuse it).
func convertHardware(r hardwareRow) (*hardware.Hardware, error) {
	if r.data == nil {
		return nil, errors.New("the row has no data (NULL)")
	}
	hw, err := spec.ParseHardware([]byte(*r.data))
	if err != nil {
		return nil, err
	}
	if !sameUUID(hw.GetId(), r.id) {
		return nil, fmt.Errorf("its data names id %q, not the row's id %s", hw.GetId(), r.id)
	}
	return hw, nil
}

func sameUUID(a, b string) bool {
	ua, err1 := uuid.Parse(a)
	ub, err2 := uuid.Parse(b)
	return err1 == nil && err2 == nil && ua == ub
}

// templateRow is a row of v0.6's template table.
type templateRow struct {
	id, name                  string
	data                      []byte    // YAML (bytea); nil when NULL
	created, updated, deleted time.Time // zero when NULL
}

// convertTemplate checks a v0.6 template as herd checks one created
// through its API: the name, then the YAML (strict keys, versions, names,
// images, volumes...).
func convertTemplate(r templateRow) (store.ImportedTemplate, error) {
	t := store.ImportedTemplate{ID: r.id, Name: r.name, CreatedAt: r.created, UpdatedAt: r.updated, DeletedAt: r.deleted}
	switch {
	case r.data == nil:
		return t, errors.New("the row has no data (NULL)")
	case !utf8.Valid(r.data):
		return t, errors.New("its YAML is not UTF-8 text")
	}
	if err := spec.ValidateName(r.name); err != nil {
		return t, fmt.Errorf("name %q %w", r.name, err)
	}
	if err := spec.ValidateTemplate(string(r.data)); err != nil {
		return t, err
	}
	t.Data = string(r.data)
	return t, nil
}

// workflowRow is a live row of v0.6's workflow table with what the other
// tables hold about it.
type workflowRow struct {
	id, template     string
	devices          *string   // the hardware map JSON
	created, updated time.Time // zero when NULL
	state            *stateRow // nil: no workflow_state row
	events           []eventRow
	data             []dataRow // by version, then in table order
	workers          []string  // workflow_worker_map
}

// stateRow is the workflow's workflow_state row; NULL columns are invalid.
type stateRow struct {
	actionList                *string
	index, actionState, total *int64
}

// eventRow is a workflow_event row (NULL texts and numbers read as empty).
type eventRow struct {
	worker, task, action, message string
	seconds, status               int64
	at                            time.Time // zero when NULL
}

// dataRow is a workflow_data row; v0.6 sets data to NULL once a version is
// older than its MAX_WORKFLOW_DATA_VERSIONS (3) newest.
type dataRow struct {
	version        int64
	data, metadata *string
}

// convertWorkflow builds the workflow herd stores from the v0.6 rows and
// the template's YAML; pruned counts the data versions v0.6 had dropped
// the data of (they are not imported).
func convertWorkflow(r *workflowRow, templateData string) (w store.ImportedWorkflow, pruned int, err error) {
	w = store.ImportedWorkflow{ID: r.id, TemplateID: r.template, TemplateData: templateData,
		Workers: r.workers, CreatedAt: r.created, UpdatedAt: r.updated}
	if w.Devices, err = devices(r.devices); err != nil {
		return w, 0, err
	}
	if r.state == nil {
		return w, 0, errors.New("it has no workflow_state row, so its actions and state are unknown")
	}
	if w.Actions, err = actionList(r.state.actionList); err != nil {
		return w, 0, err
	}
	if t := r.state.total; t != nil && *t != int64(len(w.Actions)) {
		return w, 0, fmt.Errorf("workflow_state counts %d actions, its action_list holds %d", *t, len(w.Actions))
	}
	origin := r.created
	if origin.IsZero() {
		origin = r.updated
	}
	w.Events = events(r.events, origin)
	if w.Status, err = status(r.state, w.Actions, w.Events, origin); err != nil {
		return w, 0, err
	}
	if last := lastEvent(w.Events); last.After(w.UpdatedAt) {
		// v0.6 left updated_at at creation while the workflow ran.
		w.UpdatedAt = last
	}
	w.Data, w.LatestVersion, pruned, err = dataVersions(r.data)
	return w, pruned, err
}

// devices reads the hardware map: an object of device name -> MAC or IP.
func devices(raw *string) (map[string]string, error) {
	if raw == nil {
		return nil, errors.New("it has no hardware map (devices is NULL)")
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(*raw), &m); err != nil || m == nil {
		return nil, fmt.Errorf("its hardware map %s is not a JSON object", abbreviate(*raw))
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("device %q of its hardware map is %s, not a MAC or IP address", k, abbreviate(fmt.Sprint(v)))
		}
		out[k] = s
	}
	if len(out) == 0 {
		return nil, errors.New("its hardware map is empty")
	}
	return out, nil
}

// actionList reads workflow_state.action_list: v0.6's WorkflowAction
// messages as Go's encoding/json wrote them (the proto field names).
func actionList(raw *string) ([]*workflow.WorkflowAction, error) {
	if raw == nil {
		return nil, errors.New("its workflow_state has no action_list")
	}
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(*raw), &list); err != nil {
		return nil, fmt.Errorf("its action_list is not a JSON array: %w", err)
	}
	if len(list) == 0 {
		return nil, errors.New("its action_list is empty")
	}
	actions := make([]*workflow.WorkflowAction, len(list))
	for i, b := range list {
		a := &workflow.WorkflowAction{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, a); err != nil {
			return nil, fmt.Errorf("action %d of its action_list: %w", i, err)
		}
		actions[i] = a
	}
	return actions, nil
}

// events converts the event rows; an event without a time takes origin.
func events(rows []eventRow, origin time.Time) []*workflow.WorkflowActionStatus {
	out := make([]*workflow.WorkflowActionStatus, 0, len(rows))
	for _, e := range rows {
		at := e.at
		if at.IsZero() {
			at = origin
		}
		out = append(out, &workflow.WorkflowActionStatus{
			WorkerId: e.worker, TaskName: e.task, ActionName: e.action,
			ActionStatus: workflow.State(e.status), Seconds: e.seconds, Message: e.message,
			CreatedAt: timestamppb.New(at.UTC()),
		})
	}
	return out
}

func lastEvent(evs []*workflow.WorkflowActionStatus) time.Time {
	var last time.Time
	for _, e := range evs {
		if t := e.GetCreatedAt().AsTime(); t.After(last) {
			last = t
		}
	}
	return last
}

// status is herd's engine status for v0.6's workflow_state. v0.6 keeps the
// current action's index and state and derives the workflow's state from
// them (grpc-server getWorkflowState): the action's state, except that
// SUCCESS of an action before the last means RUNNING. herd keeps the same
// three numbers, plus when the workflow and the current action started,
// which its server-side timeouts count from: the first RUNNING event, and
// the current action's last RUNNING event (else origin).
func status(st *stateRow, actions []*workflow.WorkflowAction, evs []*workflow.WorkflowActionStatus, origin time.Time) (engine.Status, error) {
	if st.actionState == nil {
		return engine.Status{}, errors.New("its workflow_state has no current_action_state")
	}
	cas := *st.actionState
	if cas < int64(engine.Pending) || cas > int64(engine.Success) {
		return engine.Status{}, fmt.Errorf("its current_action_state %d is not a state (0 PENDING to 4 SUCCESS)", cas)
	}
	state := engine.State(cas)
	if state == engine.Pending {
		return engine.Status{}, nil
	}
	var index int64
	if st.index != nil {
		index = *st.index
	}
	if index < 0 || index >= int64(len(actions)) {
		return engine.Status{}, fmt.Errorf("its current_action_index %d is not one of its %d actions", index, len(actions))
	}
	s := engine.Status{State: state, Index: int(index), ActionState: state}
	if state == engine.Success && int(index) < len(actions)-1 {
		s.State = engine.Running
	}
	cur := actions[index]
	for _, e := range evs {
		if e.GetActionStatus() != engine.Running {
			continue
		}
		at := e.GetCreatedAt().AsTime()
		if s.Started.IsZero() {
			s.Started = at
		}
		if e.GetTaskName() == cur.GetTaskName() && e.GetActionName() == cur.GetName() {
			s.ActionStarted = at
		}
	}
	if s.Started.IsZero() {
		s.Started = origin
		if len(evs) > 0 {
			s.Started = evs[0].GetCreatedAt().AsTime()
		}
	}
	if s.ActionStarted.IsZero() {
		s.ActionStarted = s.Started
	}
	return s, nil
}

// dataVersions picks the versions herd can keep: those that still have
// their data (the later row of a repeated version number), ascending. latest
// is v0.6's latest version number, kept or not (its next write is
// latest + 1, and so is herd's); pruned counts the versions without data.
func dataVersions(rows []dataRow) (held []store.ImportedData, latest int32, pruned int, err error) {
	for i, d := range rows {
		if d.version < 1 || d.version > 1<<31-1 {
			return nil, 0, 0, fmt.Errorf("workflow_data holds version %d; versions count from 1", d.version)
		}
		if i+1 < len(rows) && rows[i+1].version == d.version {
			continue // a repeated version: the later row wins
		}
		latest = max(latest, int32(d.version))
		if d.data == nil {
			pruned++
			continue
		}
		v := store.ImportedData{Version: int32(d.version), Data: *d.data, Metadata: "{}"}
		if d.metadata != nil {
			v.Metadata = *d.metadata
		}
		held = append(held, v)
	}
	return held, latest, pruned, nil
}

// abbreviate shortens s for a message.
func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 60 {
		return string(r[:57]) + "..."
	}
	return s
}
