package cli

import (
	"bytes"
	"context"
	"net"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// fake is an in-memory herd-server: enough of the three services for the
// CLI's behaviour, plus a record of what the CLI sent.
type fake struct {
	hardware.UnimplementedHardwareServiceServer
	template.UnimplementedTemplateServiceServer
	workflow.UnimplementedWorkflowServiceServer

	mu        sync.Mutex
	hw        []*hardware.Hardware
	templates []*template.WorkflowTemplate
	workflows []*workflow.Workflow
	contexts  map[string]*workflow.WorkflowContext
	events    map[string][]*workflow.WorkflowActionStatus
	data      map[string]*workflow.GetWorkflowDataResponse
	lastReq   proto.Message
	// block makes every unary call wait for its context to end.
	block bool
	// watchBreakAfter makes the first WatchWorkflowEvents stream fail
	// with Unavailable after sending this many events (0: never).
	watchBreakAfter int
	watchCalls      int
}

func newFake() *fake {
	return &fake{
		contexts: map[string]*workflow.WorkflowContext{},
		events:   map[string][]*workflow.WorkflowActionStatus{},
		data:     map[string]*workflow.GetWorkflowDataResponse{},
	}
}

func (f *fake) note(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	f.lastReq = proto.Clone(req)
	block := f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return nil
}

func (f *fake) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReq
}

// Hardware.

func (f *fake) Push(ctx context.Context, r *hardware.PushRequest) (*hardware.Empty, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	hw := proto.Clone(r.GetData()).(*hardware.Hardware)
	for i, old := range f.hw {
		if old.GetId() == hw.GetId() {
			hw.Version = old.GetVersion() + 1
			f.hw[i] = hw
			return &hardware.Empty{}, nil
		}
	}
	hw.Version = 1
	f.hw = append(f.hw, hw)
	return &hardware.Empty{}, nil
}

func (f *fake) find(match func(*hardware.Hardware) bool, what string) (*hardware.Hardware, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, hw := range f.hw {
		if match(hw) {
			return hw, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no hardware with %s", what)
}

func (f *fake) ByID(ctx context.Context, r *hardware.GetRequest) (*hardware.Hardware, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	return f.find(func(hw *hardware.Hardware) bool { return hw.GetId() == r.GetId() }, "id "+r.GetId())
}

func (f *fake) ByMAC(ctx context.Context, r *hardware.GetRequest) (*hardware.Hardware, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	return f.find(func(hw *hardware.Hardware) bool {
		for _, i := range hw.GetNetwork().GetInterfaces() {
			if i.GetDhcp().GetMac() == r.GetMac() {
				return true
			}
		}
		return false
	}, "MAC "+r.GetMac())
}

func (f *fake) ByIP(ctx context.Context, r *hardware.GetRequest) (*hardware.Hardware, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	return f.find(func(hw *hardware.Hardware) bool {
		for _, i := range hw.GetNetwork().GetInterfaces() {
			if i.GetDhcp().GetIp().GetAddress() == r.GetIp() {
				return true
			}
		}
		return false
	}, "IP "+r.GetIp())
}

func (f *fake) All(r *hardware.Empty, s grpc.ServerStreamingServer[hardware.Hardware]) error {
	f.mu.Lock()
	list := append([]*hardware.Hardware(nil), f.hw...)
	f.mu.Unlock()
	for _, hw := range list {
		if err := s.Send(hw); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) Delete(ctx context.Context, r *hardware.DeleteRequest) (*hardware.Empty, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, hw := range f.hw {
		if hw.GetId() == r.GetId() {
			f.hw = append(f.hw[:i], f.hw[i+1:]...)
			return &hardware.Empty{}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no hardware with id %s", r.GetId())
}

// Templates.

func (f *fake) CreateTemplate(ctx context.Context, r *template.WorkflowTemplate) (*template.CreateResponse, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.templates {
		if t.GetName() == r.GetName() {
			return nil, status.Errorf(codes.AlreadyExists, "a template named %s exists", r.GetName())
		}
	}
	t := proto.Clone(r).(*template.WorkflowTemplate)
	t.Id = "aaaaaaaa-0000-4000-8000-00000000000" + string(rune('1'+len(f.templates)))
	f.templates = append(f.templates, t)
	return &template.CreateResponse{Id: t.GetId()}, nil
}

func (f *fake) findTemplate(r *template.GetRequest) (int, error) {
	for i, t := range f.templates {
		if (r.GetId() != "" && t.GetId() == r.GetId()) || (r.GetName() != "" && t.GetName() == r.GetName()) {
			return i, nil
		}
	}
	return 0, status.Errorf(codes.NotFound, "template %s%s not found", r.GetId(), r.GetName())
}

func (f *fake) GetTemplate(ctx context.Context, r *template.GetRequest) (*template.WorkflowTemplate, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.findTemplate(r)
	if err != nil {
		return nil, err
	}
	return f.templates[i], nil
}

func (f *fake) ListTemplates(r *template.ListRequest, s grpc.ServerStreamingServer[template.WorkflowTemplate]) error {
	f.mu.Lock()
	f.lastReq = proto.Clone(r)
	list := append([]*template.WorkflowTemplate(nil), f.templates...)
	f.mu.Unlock()
	for _, t := range list {
		if p := r.GetName(); p != "" {
			if ok, _ := path.Match(p, t.GetName()); !ok {
				continue
			}
		}
		// As the server (and v0.6's): no data in list items.
		item := &template.WorkflowTemplate{Id: t.GetId(), Name: t.GetName(), CreatedAt: t.GetCreatedAt(), UpdatedAt: t.GetUpdatedAt()}
		if err := s.Send(item); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) UpdateTemplate(ctx context.Context, r *template.WorkflowTemplate) (*template.Empty, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.findTemplate(&template.GetRequest{GetBy: &template.GetRequest_Id{Id: r.GetId()}})
	if err != nil {
		return nil, err
	}
	f.templates[i].Name, f.templates[i].Data = r.GetName(), r.GetData()
	return &template.Empty{}, nil
}

func (f *fake) DeleteTemplate(ctx context.Context, r *template.GetRequest) (*template.Empty, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.findTemplate(r)
	if err != nil {
		return nil, err
	}
	f.templates = append(f.templates[:i], f.templates[i+1:]...)
	return &template.Empty{}, nil
}

// Workflows.

func (f *fake) CreateWorkflow(ctx context.Context, r *workflow.CreateRequest) (*workflow.CreateResponse, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := "bbbbbbbb-0000-4000-8000-00000000000" + string(rune('1'+len(f.workflows)))
	f.workflows = append(f.workflows, &workflow.Workflow{Id: id, Template: r.GetTemplate(), Hardware: r.GetHardware()})
	return &workflow.CreateResponse{Id: id}, nil
}

func (f *fake) workflow(id string) (*workflow.Workflow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, wf := range f.workflows {
		if wf.GetId() == id {
			return proto.Clone(wf).(*workflow.Workflow), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "workflow %s not found", id)
}

func (f *fake) GetWorkflow(ctx context.Context, r *workflow.GetRequest) (*workflow.Workflow, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	return f.workflow(r.GetId())
}

func (f *fake) ListWorkflows(_ *workflow.Empty, s grpc.ServerStreamingServer[workflow.Workflow]) error {
	f.mu.Lock()
	list := append([]*workflow.Workflow(nil), f.workflows...)
	f.mu.Unlock()
	for _, wf := range list {
		if err := s.Send(wf); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) DeleteWorkflow(ctx context.Context, r *workflow.GetRequest) (*workflow.Empty, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	if _, err := f.workflow(r.GetId()); err != nil {
		return nil, err
	}
	return &workflow.Empty{}, nil
}

func (f *fake) GetWorkflowContext(ctx context.Context, r *workflow.GetRequest) (*workflow.WorkflowContext, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.contexts[r.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "workflow %s not found", r.GetId())
	}
	return c, nil
}

func (f *fake) ShowWorkflowEvents(r *workflow.GetRequest, s grpc.ServerStreamingServer[workflow.WorkflowActionStatus]) error {
	f.mu.Lock()
	list := f.events[r.GetId()]
	f.mu.Unlock()
	for _, ev := range list {
		if err := s.Send(ev); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) WatchWorkflowEvents(r *workflow.GetRequest, s grpc.ServerStreamingServer[workflow.WorkflowActionStatus]) error {
	f.mu.Lock()
	f.watchCalls++
	first := f.watchCalls == 1
	list := f.events[r.GetId()]
	breakAfter := f.watchBreakAfter
	f.mu.Unlock()
	for i, ev := range list {
		if first && breakAfter > 0 && i == breakAfter {
			return status.Error(codes.Unavailable, "server going away")
		}
		if err := s.Send(ev); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) dataCall(ctx context.Context, r *workflow.GetWorkflowDataRequest, kind string) (*workflow.GetWorkflowDataResponse, error) {
	if err := f.note(ctx, r); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.data[r.GetWorkflowId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "workflow %s not found", r.GetWorkflowId())
	}
	switch kind {
	case "metadata":
		return &workflow.GetWorkflowDataResponse{Data: []byte(`{"by":"worker"}`), Version: d.GetVersion()}, nil
	case "version":
		return &workflow.GetWorkflowDataResponse{Version: d.GetVersion()}, nil
	}
	return d, nil
}

func (f *fake) GetWorkflowData(ctx context.Context, r *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
	return f.dataCall(ctx, r, "data")
}

func (f *fake) GetWorkflowMetadata(ctx context.Context, r *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
	return f.dataCall(ctx, r, "metadata")
}

func (f *fake) GetWorkflowDataVersion(ctx context.Context, r *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
	return f.dataCall(ctx, r, "version")
}

// harness runs the CLI in-process against a fake server.
type harness struct {
	t    *testing.T
	srv  *fake
	env  map[string]string
	lis  *bufconn.Listener
	mu   sync.Mutex
	cfgs []connect.Config // what each dial was asked for
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, srv: newFake(), env: map[string]string{}, lis: bufconn.Listen(1 << 20)}
	s := grpc.NewServer()
	hardware.RegisterHardwareServiceServer(s, h.srv)
	template.RegisterTemplateServiceServer(s, h.srv)
	workflow.RegisterWorkflowServiceServer(s, h.srv)
	go func() { _ = s.Serve(h.lis) }()
	t.Cleanup(s.Stop)
	return h
}

func (h *harness) dial(_ context.Context, c connect.Config) (*grpc.ClientConn, error) {
	h.mu.Lock()
	h.cfgs = append(h.cfgs, c)
	h.mu.Unlock()
	return grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return h.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func (h *harness) dials() []connect.Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]connect.Config(nil), h.cfgs...)
}

// result is one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

// run executes herd with args and stdin.
func (h *harness) run(stdin string, args ...string) result {
	h.t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := h.env[k]; return v, ok }
	cmd := New(strings.NewReader(stdin), &out, &errb, WithLookupEnv(lookup), WithDial(h.dial))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := Run(ctx, cmd, args)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func ts(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}
