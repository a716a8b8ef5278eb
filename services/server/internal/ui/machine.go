package ui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
)

// secretKey matches the metadata keys whose values the machine page
// masks: the instance metadata often carries passwords, keys and tokens
// for the installed OS, and a screen is read over shoulders.
var secretKey = regexp.MustCompile(`(?i)pass|secret|token|key|credential|private|cert`)

const masked = "••••••"

// maskSecrets returns a JSON document indented, with the value of every
// key secretKey matches, at any depth, replaced by masked. A document
// that is not JSON is not shown at all: it could be anything.
func maskSecrets(doc string) string {
	if doc == "" {
		return ""
	}
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return "(not JSON; not shown)"
	}
	var walk func(any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if secretKey.MatchString(k) && x != nil && x != "" {
					t[k] = masked
				} else {
					t[k] = walk(x)
				}
			}
		case []any:
			for i, x := range t {
				t[i] = walk(x)
			}
		}
		return v
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(walk(v))
	return out.String()
}

type machineView struct {
	CSRF       string
	ID         string
	Hostname   string
	Version    int64
	Interfaces []*hardware.Hardware_Network_Interface
	BMC        *hardware.Hardware_BMC
	// Power is the state last seen: on, off, "" unknown, noBMC.
	Power     string
	Metadata  string
	Workflows []workflowView
	// Current is the workflow whose timeline the page follows ("" none).
	Current string
}

type workflowView struct {
	ID, Template, State string
	Created, Updated    string
	Current             bool
	// Finished: in a final state, so the page offers to delete it.
	Finished bool
}

func stamp(t interface{ AsTime() time.Time }) string {
	return t.AsTime().UTC().Format("2006-01-02 15:04:05")
}

func (h *Handler) machinePage(w http.ResponseWriter, r *http.Request, s session) {
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		h.render(w, http.StatusBadRequest, "error.html", errorView{Message: "no such machine: the id is not a UUID"})
		return
	}
	ctx := h.asOperator(r.Context(), s.token)
	hw, err := h.api.hw.ByID(ctx, &hardware.GetRequest{Id: id})
	if err != nil {
		h.apiError(w, r, "machine "+id, err)
		return
	}
	wfs, err := h.workflowsOf(r, s, hw)
	if err != nil {
		h.apiError(w, r, "workflows of machine "+id, err)
		return
	}
	power, err := h.powerStates(r, s)
	if err != nil {
		h.apiError(w, r, "power of machine "+id, err)
		return
	}
	v := machineView{CSRF: s.csrf, ID: id, Version: hw.GetVersion(), Interfaces: hw.GetNetwork().GetInterfaces(),
		BMC: hw.GetBmc(), Power: powerState(power, id), Metadata: maskSecrets(hw.GetMetadata())}
	for _, i := range v.Interfaces {
		if v.Hostname == "" {
			v.Hostname = i.GetDhcp().GetHostname()
		}
	}
	for i, wf := range wfs {
		v.Workflows = append(v.Workflows, workflowView{ID: wf.GetId(), Template: wf.GetTemplate(), State: stateName(wf.GetState()),
			Created: stamp(wf.GetCreatedAt()), Updated: stamp(wf.GetUpdatedAt()), Current: i == 0,
			Finished: final(wf.GetState())})
	}
	if len(wfs) > 0 {
		v.Current = wfs[0].GetId()
	}
	h.render(w, http.StatusOK, "machine.html", v)
}

// workflowsOf are the live workflows naming one of hw's addresses, the
// one the fleet shows first.
func (h *Handler) workflowsOf(r *http.Request, s session, hw *hardware.Hardware) ([]*workflow.Workflow, error) {
	stream, err := h.api.wf.ListWorkflows(h.asOperator(r.Context(), s.token), &workflow.Empty{})
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, a := range hwAddrs(hw) {
		mine[a] = true
	}
	var out []*workflow.Workflow
	for {
		wf, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(wfAddrs(wf), func(a string) bool { return mine[a] }) {
			out = append(out, wf)
		}
	}
	slices.SortFunc(out, func(a, b *workflow.Workflow) int {
		if newer(a, b) {
			return -1
		}
		return 1
	})
	return out, nil
}

type errorView struct{ Message string }

// apiError answers a failed API call: the API's refusal mapped to the
// page's status, its message shown.
func (h *Handler) apiError(w http.ResponseWriter, r *http.Request, what string, err error) {
	code := httpStatus(err)
	if code >= 500 {
		h.log.Warn("ui: API call failed", "what", what, "peer", r.RemoteAddr, "error", err)
	}
	h.render(w, code, "error.html", errorView{Message: fmt.Sprintf("%s: %s", what, status.Convert(err).Message())})
}

// httpStatus is the status a page or script gets for the API's refusal.
func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument, codes.FailedPrecondition:
		return http.StatusBadRequest
	case codes.Unauthenticated, codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

// timelineEvent is one workflow event as the machine page lists it.
type timelineEvent struct {
	Time    string `json:"time"`
	Task    string `json:"task"`
	Action  string `json:"action"`
	State   string `json:"state"`
	Seconds int64  `json:"seconds"`
	Message string `json:"message,omitempty"`
	Worker  string `json:"worker,omitempty"`
}

// streamOf is the session and the path's id of a live stream's request,
// or false once it has answered the refusal (no session, not a UUID).
func (h *Handler) streamOf(w http.ResponseWriter, r *http.Request, what string) (string, session, bool) {
	_, s, ok := h.current(r)
	if !ok {
		http.Error(w, "not logged in", http.StatusUnauthorized)
		return "", session{}, false
	}
	id := r.PathValue("id")
	if _, err := uuid.Parse(id); err != nil {
		http.Error(w, "the "+what+" id is not a UUID", http.StatusBadRequest)
		return "", session{}, false
	}
	return id, s, true
}

// How the timeline follows a workflow after its end: the machine's first
// boot into its installed OS (its DHCP, its metadata read) is noted on the
// ended workflow for a while, and the API has no stream of that, so the
// page's stream reads the events again now and then, for one workflow
// while one page is open, and stops when the machine has likely moved on.
const (
	followAfterEnd = 15 * time.Minute
	followEvery    = 5 * time.Second
)

// timeline streams a workflow's events (server-sent events "ev"), those
// so far and then each new one, and "end" once the workflow has ended:
// WatchWorkflowEvents, with the session's token. Then it follows the
// notes that come after the end until followAfterEnd past it, and says
// "closed" (the browser must not reconnect).
func (h *Handler) timeline(w http.ResponseWriter, r *http.Request) {
	id, s, ok := h.streamOf(w, r, "workflow")
	if !ok {
		return
	}
	ctx, cancel := h.streamContext(r, s)
	defer cancel()
	stream, err := h.api.wf.WatchWorkflowEvents(ctx, &workflow.GetRequest{Id: id})
	if err != nil {
		http.Error(w, status.Convert(err).Message(), http.StatusBadGateway)
		return
	}
	out := startSSE(w)
	fail := func(err error) {
		if ctx.Err() == nil {
			_ = out.event("fail", map[string]string{"message": status.Convert(err).Message()})
			_ = out.flush()
		}
	}
	sent, err := relayEvents(stream, out, 0)
	if err != nil {
		fail(err)
		return
	}
	// The workflow has ended: say how, for the page's table.
	wf, err := h.api.wf.GetWorkflow(ctx, &workflow.GetRequest{Id: id})
	if err != nil {
		fail(err)
		return
	}
	if out.event("end", map[string]string{"state": stateName(wf.GetState())}) != nil || out.flush() != nil {
		return
	}
	until := time.Now().Add(followAfterEnd)
	if at := wf.GetUpdatedAt(); at != nil {
		until = at.AsTime().Add(followAfterEnd) // an ended workflow's last change is its end
	}
	tick := time.NewTicker(followEvery)
	defer tick.Stop()
	for time.Now().Before(until) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		stream, err := h.api.wf.WatchWorkflowEvents(ctx, &workflow.GetRequest{Id: id})
		if err == nil {
			sent, err = relayEvents(stream, out, sent)
		}
		if err != nil {
			fail(err)
			return
		}
		// Also the heartbeat of a quiet stream.
		if _, err := io.WriteString(out.w, ": follow\n\n"); err != nil || out.flush() != nil {
			return
		}
	}
	_ = out.event("closed", map[string]string{})
	_ = out.flush()
}

// relayEvents sends the events of stream past the first skip as "ev",
// until the stream ends with the workflow (nil error), and returns how
// many it read.
func relayEvents(stream grpc.ServerStreamingClient[workflow.WorkflowActionStatus], out sse, skip int) (int, error) {
	n := 0
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, out.flush()
		}
		if err != nil {
			return n, err
		}
		n++
		if n <= skip {
			continue
		}
		t := timelineEvent{Task: ev.GetTaskName(), Action: ev.GetActionName(), State: stateName(ev.GetActionStatus()),
			Seconds: ev.GetSeconds(), Message: ev.GetMessage(), Worker: ev.GetWorkerId()}
		if ev.GetCreatedAt() != nil {
			t.Time = ev.GetCreatedAt().AsTime().UTC().Format(time.RFC3339)
		}
		if err := out.event("ev", t); err != nil {
			return n, err
		}
		if err := out.flush(); err != nil {
			return n, err
		}
	}
}
