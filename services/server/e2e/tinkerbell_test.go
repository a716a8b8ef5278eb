package e2e

// Tinkerbell v0.6 behaviours a user's files and scripts rely on (issue 15),
// each against a real herd-server on a real PostgreSQL. docs/tinkerbell.md
// lists them with what herd decided.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// unknownID names nothing in any test's database.
const unknownID = "9c1f2f5e-0000-4000-8000-00000000dead"

// templateYAML is a one-action template named name.
func templateYAML(name string) string {
	return "version: \"0.1\"\nname: " + name + "\ntasks:\n  - name: only\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: run\n        image: busybox\n"
}

// listTemplates returns what ListTemplates streams for the name filter.
func listTemplates(t *testing.T, tc template.TemplateServiceClient, name string) []*template.WorkflowTemplate {
	t.Helper()
	req := &template.ListRequest{}
	if name != "" {
		req.FilterBy = &template.ListRequest_Name{Name: name}
	}
	stream, err := tc.ListTemplates(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	var got []*template.WorkflowTemplate
	for {
		tpl, err := stream.Recv()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("ListTemplates(%q): %v", name, err)
		}
		got = append(got, tpl)
	}
}

func names(list []*template.WorkflowTemplate) string {
	var n []string
	for _, t := range list {
		n = append(n, t.GetName())
	}
	return strings.Join(n, " ")
}

// TestTinkerbellTemplateNameFilter (issue 15 item 2): ListTemplates'
// name is v0.6's ILIKE pattern with * for %: case-insensitive, % and _
// wildcards.
func TestTinkerbellTemplateNameFilter(t *testing.T) {
	s := servertest.Start(t)
	for _, n := range []string{"hello-world", "hello_fail", "Hello-Fair", "hello_failure", "debian"} {
		s.MustHerd(templateYAML(n), "template", "create")
	}
	tc := template.NewTemplateServiceClient(s.Dial(adminToken))
	for pattern, want := range map[string]string{
		"HELLO*":      "Hello-Fair hello-world hello_fail hello_failure",
		"hello%":      "Hello-Fair hello-world hello_fail hello_failure",
		"hello_fai_":  "Hello-Fair hello_fail",
		`hello\_fai_`: "hello_fail",
		"*":           "Hello-Fair debian hello-world hello_fail hello_failure",
		"":            "Hello-Fair debian hello-world hello_fail hello_failure",
		"hello?fail":  "",
	} {
		if got := names(listTemplates(t, tc, pattern)); got != want {
			t.Errorf("ListTemplates(%q) = %q, want %q", pattern, got, want)
		}
	}
	out := s.MustHerd("", "template", "list", "--name", "HELLO_FAI_")
	if !strings.Contains(out, "Hello-Fair") || !strings.Contains(out, "hello_fail") || strings.Contains(out, "hello-world") {
		t.Errorf("herd template list --name HELLO_FAI_:\n%s", out)
	}
}

// TestTinkerbellTemplateListWithoutData (item 3): ListTemplates sends id,
// name and times, not the YAML, over gRPC and REST; herd template get has
// the YAML.
func TestTinkerbellTemplateListWithoutData(t *testing.T) {
	s := servertest.Start(t)
	yaml := templateYAML("listed")
	id := strings.TrimSpace(s.MustHerd(yaml, "template", "create", "-o", "json"))
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(id), &created); err != nil || created.ID == "" {
		t.Fatalf("template create printed %q", id)
	}
	tc := template.NewTemplateServiceClient(s.Dial(adminToken))
	list := listTemplates(t, tc, "")
	if len(list) != 1 {
		t.Fatalf("listed %v", list)
	}
	if got := list[0]; got.GetId() != created.ID || got.GetName() != "listed" || got.GetCreatedAt() == nil || got.GetUpdatedAt() == nil || got.GetData() != "" {
		t.Errorf("listed %v, want id, name and times without data", got)
	}
	if code, body := s.Rest("GET", "/v1/templates", "", adminToken); code != 200 || !strings.Contains(body, created.ID) || strings.Contains(body, "busybox") {
		t.Errorf("GET /v1/templates: %d %s", code, body)
	}
	if out := s.MustHerd("", "template", "list", "-q"); out != created.ID+"\n" {
		t.Errorf("herd template list -q: %q", out)
	}
	for _, ref := range []string{created.ID, "listed"} {
		if out := s.MustHerd("", "template", "get", ref); out != yaml {
			t.Errorf("herd template get %s: %q, want the YAML", ref, out)
		}
	}
}

// TestTinkerbellDeprecatedWatch (item 4): nothing on subscribe, the
// record after each later push, NotFound when it is deleted.
func TestTinkerbellDeprecatedWatch(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	hc := hardware.NewHardwareServiceClient(s.Dial(adminToken))

	stream, err := hc.DeprecatedWatch(ctx(t), &hardware.GetRequest{Id: hw1})
	if err != nil {
		t.Fatal(err)
	}
	got, errc := make(chan *hardware.Hardware, 64), make(chan error, 1)
	go func() {
		for {
			hw, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			got <- hw
		}
	}()
	next := func(within time.Duration) *hardware.Hardware {
		t.Helper()
		select {
		case hw := <-got:
			return hw
		case err := <-errc:
			t.Fatalf("stream ended: %v", err)
		case <-time.After(within):
		}
		return nil
	}
	if hw := next(500 * time.Millisecond); hw != nil {
		t.Fatalf("sent version %d on subscribe, before any push", hw.GetVersion())
	}
	current, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	if err != nil {
		t.Fatal(err)
	}
	push := func(hostname string) {
		t.Helper()
		current.Network.Interfaces[0].Dhcp.Hostname = hostname
		if _, err := hc.Push(ctx(t), &hardware.PushRequest{Data: current}); err != nil {
			t.Fatal(err)
		}
	}
	// The stream may open before the server has subscribed: push until
	// the watcher sees a push. What it sees first is never the record as
	// it was at subscribe (version 1).
	var first *hardware.Hardware
	for i := 0; first == nil; i++ {
		if i == 50 {
			t.Fatal("no push reached the watcher")
		}
		push(fmt.Sprintf("early-%d", i))
		first = next(200 * time.Millisecond)
	}
	if first.GetVersion() < 2 || !strings.HasPrefix(first.GetNetwork().GetInterfaces()[0].GetDhcp().GetHostname(), "early-") {
		t.Fatalf("first record watched: version %d %v, want a pushed one", first.GetVersion(), first)
	}
	latest, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	if err != nil {
		t.Fatal(err)
	}
	for seen := first; seen.GetVersion() < latest.GetVersion(); {
		if seen = next(10 * time.Second); seen == nil {
			t.Fatalf("the watcher never got version %d", latest.GetVersion())
		}
	}
	// From here each push is one message, in order.
	for i, name := range []string{"node-1a", "node-1b"} {
		push(name)
		hw := next(10 * time.Second)
		if hw == nil || hw.GetVersion() != latest.GetVersion()+int64(i)+1 || hw.GetNetwork().GetInterfaces()[0].GetDhcp().GetHostname() != name {
			t.Fatalf("after push %d got %v, want version %d named %s", i, hw, latest.GetVersion()+int64(i)+1, name)
		}
	}
	s.MustHerd("", "hardware", "delete", hw1)
	select {
	case hw := <-got:
		t.Fatalf("after the delete got %v, want the stream to end", hw)
	case err := <-errc:
		wantCode(t, err, codes.NotFound, hw1)
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end after the delete")
	}

	// An id that names nothing ends at once (v0.6 waited for a push).
	st, err := hc.DeprecatedWatch(ctx(t), &hardware.GetRequest{Id: unknownID})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.NotFound, unknownID)
}

// TestTinkerbellEmptyWorkflowData (item 5): a workflow without data has
// empty data, as in v0.6, so a v0.6 worker's {} is version 1.
func TestTinkerbellEmptyWorkflowData(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	id := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	req := &workflow.GetWorkflowDataRequest{WorkflowId: id}

	for name, get := range map[string]func(context.Context, *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error){
		"GetWorkflowData": func(c context.Context, r *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
			return w.GetWorkflowData(c, r)
		},
		"GetWorkflowMetadata": func(c context.Context, r *workflow.GetWorkflowDataRequest) (*workflow.GetWorkflowDataResponse, error) {
			return w.GetWorkflowMetadata(c, r)
		},
	} {
		res, err := get(ctx(t), req)
		if err != nil || len(res.GetData()) != 0 || res.GetVersion() != 0 {
			t.Errorf("%s before any data: %q version %d (%v), want empty at version 0", name, res.GetData(), res.GetVersion(), err)
		}
	}
	if out := s.MustHerd("", "workflow", "data", id); out != "\n" {
		t.Errorf("herd workflow data: %q, want an empty line (as tink)", out)
	}

	// tink-worker v0.6: empty data, so it writes {} to its data file and
	// sends it after the first action; the second action's data follows.
	for _, data := range []string{`{}`, `{"disk":"/dev/vda"}`} {
		if _, err := w.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(data), Metadata: []byte(`{"workerID":"` + hw1 + `"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := w.GetWorkflowDataVersion(ctx(t), req); err != nil || res.GetVersion() != 2 {
		t.Fatalf("GetWorkflowDataVersion: %v (%v), want 2", res, err)
	}
	for v, want := range map[int32]string{1: `{}`, 2: `{"disk": "/dev/vda"}`} {
		res, err := w.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id, Version: v})
		if err != nil || string(res.GetData()) != want || res.GetVersion() != v {
			t.Errorf("version %d: %q %d (%v), want %s", v, res.GetData(), res.GetVersion(), err, want)
		}
	}
}

// TestTinkerbellDeletesAndUnknownIDs (item 6): herd keeps NotFound where
// v0.6 said nothing: a second delete, workflow data and template update of
// an unknown id. The messages are the ones docs/tinkerbell.md quotes.
func TestTinkerbellDeletesAndUnknownIDs(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	tpl, err := template.NewTemplateServiceClient(s.Dial(adminToken)).GetTemplate(ctx(t), &template.GetRequest{GetBy: &template.GetRequest_Name{Name: "slow"}})
	if err != nil {
		t.Fatal(err)
	}
	wf := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)

	// Each delete works once; the second is NotFound, with exit code 1.
	for _, c := range []struct {
		kind, id, deleted, again string
	}{
		{"workflow", wf, "Workflow " + wf + " deleted\n", "herd: workflow " + wf + " (or it is already deleted): not found\n"},
		{"template", tpl.GetId(), "Template " + tpl.GetId() + " deleted\n", "herd: template " + tpl.GetId() + ": not found\n"},
		{"hardware", hw1, "Hardware " + hw1 + " deleted\n", "herd: hardware " + hw1 + ": not found\n"},
	} {
		if out := s.MustHerd("", c.kind, "delete", c.id); out != c.deleted {
			t.Errorf("%s delete: %q, want %q", c.kind, out, c.deleted)
		}
		out, errOut, code := s.Herd("", c.kind, "delete", c.id)
		if code != 1 || out != "" || errOut != c.again {
			t.Errorf("second %s delete: exit %d, stdout %q, stderr %q; want exit 1, %q", c.kind, code, out, errOut, c.again)
		}
	}
	conn := s.Dial(adminToken)
	_, err = hardware.NewHardwareServiceClient(conn).Delete(ctx(t), &hardware.DeleteRequest{Id: hw1})
	wantCode(t, err, codes.NotFound, hw1)
	_, err = template.NewTemplateServiceClient(conn).DeleteTemplate(ctx(t), &template.GetRequest{GetBy: &template.GetRequest_Id{Id: tpl.GetId()}})
	wantCode(t, err, codes.NotFound, tpl.GetId())
	_, err = workflow.NewWorkflowServiceClient(conn).DeleteWorkflow(ctx(t), &workflow.GetRequest{Id: wf})
	wantCode(t, err, codes.NotFound, wf)

	// Unknown ids: NotFound, not v0.6's silent success.
	for _, c := range []struct {
		args   []string
		stdin  string
		stderr string
	}{
		{[]string{"workflow", "data", unknownID}, "", "herd: workflow " + unknownID + ": not found\n"},
		{[]string{"template", "update", unknownID}, readFile(t, "slow.yaml"), "herd: template " + unknownID + ": not found\n"},
	} {
		out, errOut, code := s.Herd(c.stdin, c.args...)
		if code != 1 || out != "" || errOut != c.stderr {
			t.Errorf("herd %v: exit %d, stdout %q, stderr %q; want exit 1, %q", c.args, code, out, errOut, c.stderr)
		}
	}
	// A deleted workflow's data stays readable, as in v0.6.
	if out := s.MustHerd("", "workflow", "data", wf); out != "\n" {
		t.Errorf("herd workflow data of a deleted workflow: %q", out)
	}
	wc := workflow.NewWorkflowServiceClient(conn)
	_, err = wc.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: unknownID})
	wantCode(t, err, codes.NotFound, unknownID)
	_, err = template.NewTemplateServiceClient(conn).UpdateTemplate(ctx(t), &template.WorkflowTemplate{Id: unknownID, Name: "slow", Data: readFile(t, "slow.yaml")})
	wantCode(t, err, codes.NotFound, unknownID)
}

// TestTinkerbellMACCase (item 7): a MAC finds its record whatever its case
// or separators, and herd hardware mac prints it.
// TestTinkerbellTimeServerNames (item 1): time servers given by host name,
// as v0.6's example gives them, are stored as pushed (herd-boots resolves
// them for DHCP option 42); a value that is neither an address nor a host
// name is refused with the field and the value.
func TestTinkerbellTimeServerNames(t *testing.T) {
	s := servertest.Start(t)
	const servers = `"name_servers": ["10.1.0.1"],`
	withNames := strings.Replace(readFile(t, "hardware-1.json"), servers, servers+` "time_servers": ["0.pool.ntp.org", "NTP.Example.org", "10.1.0.123"],`, 1)
	s.MustHerd(withNames, "hardware", "push")
	hc := hardware.NewHardwareServiceClient(s.Dial(adminToken))
	hw, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	if err != nil {
		t.Fatal(err)
	}
	if got := hw.GetNetwork().GetInterfaces()[0].GetDhcp().GetTimeServers(); strings.Join(got, ",") != "0.pool.ntp.org,NTP.Example.org,10.1.0.123" {
		t.Errorf("stored time servers = %q", got)
	}
	if out := s.MustHerd("", "hardware", "id", hw1, "-o", "json"); !strings.Contains(out, `"time_servers": [`) || !strings.Contains(out, `"0.pool.ntp.org"`) {
		t.Errorf("herd hardware id -o json:\n%s", out)
	}

	// Garbage: the CLI refuses it before sending, the server too.
	bad := strings.Replace(withNames, `"NTP.Example.org"`, `"ntp server!"`, 1)
	const want = `network.interfaces[0].dhcp.time_servers[1]: "ntp server!" is neither an IPv4 or IPv6 address nor a host name`
	if _, errOut, code := s.Herd(bad, "hardware", "push"); code == 0 || !strings.Contains(errOut, want) {
		t.Errorf("herd hardware push of a bad time server: exit %d, stderr %s", code, errOut)
	}
	hw.GetNetwork().GetInterfaces()[0].GetDhcp().TimeServers[1] = "ntp server!"
	_, err = hc.Push(ctx(t), &hardware.PushRequest{Data: hw})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), want) {
		t.Errorf("Push of a bad time server: %v", err)
	}
}

func TestTinkerbellMACCase(t *testing.T) {
	s := servertest.Start(t)
	const upper = "3C:EC:EF:00:00:0A"
	s.MustHerd(strings.Replace(readFile(t, "hardware-1.json"), mac1, upper, 1), "hardware", "push")
	want := "ID                                    MAC ADDRESS        IP ADDRESS  HOSTNAME\n" +
		hw1 + "  3c:ec:ef:00:00:0a  10.1.0.11   node-1\n"
	for _, mac := range []string{upper, strings.ToLower(upper), "3c-ec-ef-00-00-0A"} {
		if out := s.MustHerd("", "hardware", "mac", mac); out != want {
			t.Errorf("herd hardware mac %s:\n%s\nwant\n%s", mac, out, want)
		}
	}
	if out := s.MustHerd("", "hardware", "mac", upper, "-o", "json"); !strings.Contains(out, `"mac": "3c:ec:ef:00:00:0a"`) {
		t.Errorf("herd hardware mac -o json:\n%s", out)
	}
	// A v0.6 client sends the MAC as typed.
	hw, err := hardware.NewHardwareServiceClient(s.Dial(adminToken)).ByMAC(ctx(t), &hardware.GetRequest{Mac: upper})
	if err != nil || hw.GetId() != hw1 {
		t.Fatalf("ByMAC(%s): %v %v", upper, hw, err)
	}
	if code, body := s.Rest("POST", "/v1/hardware/mac", `{"mac":"`+upper+`"}`, adminToken); code != 200 || !strings.Contains(body, hw1) {
		t.Errorf("POST /v1/hardware/mac: %d %s", code, body)
	}
}

// TestTinkerbellErrorCodes (item 8): herd's codes where v0.6 answered
// Unknown (or nothing), row by row as docs/tinkerbell.md lists them.
func TestTinkerbellErrorCodes(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd("", "template", "create", "--file", "testdata/slow.yaml")
	conn := s.Dial(adminToken)
	hc, tc, wc := hardware.NewHardwareServiceClient(conn), template.NewTemplateServiceClient(conn), workflow.NewWorkflowServiceClient(conn)
	slow := readFile(t, "slow.yaml")
	other := readFile(t, "hardware-2.json")
	clash, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
	if err != nil {
		t.Fatal(err)
	}
	clash.Id = unknownID

	for _, c := range []struct {
		name    string
		call    func() error
		code    codes.Code
		mention string
	}{
		{"ByID unknown", func() error { _, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: unknownID}); return err }, codes.NotFound, unknownID},
		{"ByMAC unknown", func() error {
			_, err := hc.ByMAC(ctx(t), &hardware.GetRequest{Mac: "08:00:27:ff:ff:ff"})
			return err
		}, codes.NotFound, "08:00:27:ff:ff:ff"},
		{"ByIP unknown", func() error { _, err := hc.ByIP(ctx(t), &hardware.GetRequest{Ip: "10.9.9.9"}); return err }, codes.NotFound, "10.9.9.9"},
		{"ByID not a UUID", func() error { _, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: "x"}); return err }, codes.InvalidArgument, "id"},
		{"Push without id", func() error {
			hw := proto.Clone(clash).(*hardware.Hardware)
			hw.Id = ""
			_, err := hc.Push(ctx(t), &hardware.PushRequest{Data: hw})
			return err
		}, codes.InvalidArgument, "id"},
		{"Push of a MAC another record has", func() error { _, err := hc.Push(ctx(t), &hardware.PushRequest{Data: clash}); return err }, codes.AlreadyExists, mac1},
		{"GetTemplate unknown", func() error {
			_, err := tc.GetTemplate(ctx(t), &template.GetRequest{GetBy: &template.GetRequest_Name{Name: "nope"}})
			return err
		}, codes.NotFound, "nope"},
		{"CreateTemplate bad YAML", func() error {
			_, err := tc.CreateTemplate(ctx(t), &template.WorkflowTemplate{Name: "bad", Data: "tasks: ["})
			return err
		}, codes.InvalidArgument, ""},
		{"CreateTemplate name taken", func() error {
			_, err := tc.CreateTemplate(ctx(t), &template.WorkflowTemplate{Name: "slow", Data: slow})
			return err
		}, codes.AlreadyExists, "slow"},
		{"CreateWorkflow unknown template", func() error {
			_, err := wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "nope", Hardware: `{"device_1":"` + mac1 + `"}`})
			return err
		}, codes.NotFound, "nope"},
		{"CreateWorkflow unknown machine", func() error {
			_, err := wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "slow", Hardware: `{"device_1":"08:00:27:ff:ff:ff"}`})
			return err
		}, codes.NotFound, "08:00:27:ff:ff:ff"},
		{"CreateWorkflow bad hardware map", func() error {
			_, err := wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "slow", Hardware: "device_1"})
			return err
		}, codes.InvalidArgument, "hardware"},
		{"GetWorkflow unknown", func() error { _, err := wc.GetWorkflow(ctx(t), &workflow.GetRequest{Id: unknownID}); return err }, codes.NotFound, unknownID},
		{"GetWorkflowContext unknown", func() error {
			_, err := wc.GetWorkflowContext(ctx(t), &workflow.GetRequest{Id: unknownID})
			return err
		}, codes.NotFound, unknownID},
	} {
		wantCodeOf(t, c.name, c.call(), c.code, c.mention)
	}
	// A machine's worker credential: another machine's workflow is NotFound.
	s.MustHerd(other, "hardware", "push")
	id := s.CreateWorkflow("slow", `{"device_1":"`+mac1+`"}`)
	_, err = workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw2))).GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	wantCodeOf(t, "GetWorkflowData of another machine's workflow", err, codes.NotFound, id)
	// Deleting a machine an unfinished workflow uses.
	_, err = hc.Delete(ctx(t), &hardware.DeleteRequest{Id: hw1})
	wantCodeOf(t, "Delete of hardware in use", err, codes.FailedPrecondition, id)
}

func wantCodeOf(t *testing.T, what string, err error, code codes.Code, mention string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), mention) {
		t.Errorf("%s: got %v %q, want %v mentioning %q", what, st.Code(), st.Message(), code, mention)
	}
}
