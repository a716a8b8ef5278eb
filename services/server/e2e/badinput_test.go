package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	herdproto "github.com/herd-metal/herd/proto"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/services/server/internal/transport"
)

// rawCodec passes a call's bytes through as they are: the test sends
// frames no generated client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// herdMethods are the gRPC methods of every service herd-server
// registers (transport.ServiceDescs), with their descriptors: a method or
// service added to the server is in this test without anyone listing it.
func herdMethods(t *testing.T) []protoreflect.MethodDescriptor {
	var out []protoreflect.MethodDescriptor
	for _, sd := range transport.ServiceDescs() {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(sd.ServiceName))
		if err != nil {
			t.Fatalf("service %s: %v", sd.ServiceName, err)
		}
		svc := d.(protoreflect.ServiceDescriptor)
		names := map[string]bool{}
		for _, m := range sd.Methods {
			names[m.MethodName] = true
		}
		for _, m := range sd.Streams {
			names[m.StreamName] = true
		}
		if len(names) != svc.Methods().Len() {
			t.Fatalf("service %s: %d methods registered, %d in its descriptor", sd.ServiceName, len(names), svc.Methods().Len())
		}
		for j := range svc.Methods().Len() {
			out = append(out, svc.Methods().Get(j))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FullName() < out[j].FullName() })
	if len(out) < 10 {
		t.Fatalf("only %d gRPC methods registered", len(out))
	}
	return out
}

// badUTF8 are messages of type md, one for each string field (repeated
// ones and map values too, in messages nested up to depth 3), that field
// holding invalid UTF-8.
func badUTF8(md protoreflect.MessageDescriptor, depth int) [][]byte {
	var out [][]byte
	fields := md.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		tag := protowire.AppendTag(nil, f.Number(), protowire.BytesType)
		switch {
		case f.IsMap():
			v := f.MapValue()
			entry := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("k"))
			if v.Kind() == protoreflect.StringKind {
				out = append(out, protowire.AppendBytes(tag, protowire.AppendBytes(protowire.AppendTag(entry, 2, protowire.BytesType), []byte("v\xff\xfe"))))
			}
			if f.MapKey().Kind() == protoreflect.StringKind {
				bad := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("k\xff"))
				out = append(out, protowire.AppendBytes(tag, bad))
			}
		case f.Kind() == protoreflect.StringKind:
			out = append(out, protowire.AppendBytes(tag, []byte("ok\xff\xfe\xc3(")))
		case f.Kind() == protoreflect.MessageKind && depth < 3:
			for _, inner := range badUTF8(f.Message(), depth+1) {
				out = append(out, protowire.AppendBytes(tag, inner))
			}
		}
	}
	return out
}

// callRaw calls method with frame as the request and returns the error
// the server ended the call with.
func callRaw(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor, frame []byte, md metadata.MD) error {
	name := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
	ctx = metadata.NewOutgoingContext(ctx, md)
	if !m.IsStreamingClient() && !m.IsStreamingServer() {
		var reply []byte
		return conn.Invoke(ctx, name, &frame, &reply, grpc.ForceCodecV2(rawCodec{}))
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()},
		name, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}
	if err := s.SendMsg(&frame); err != nil && err != io.EOF {
		return err
	}
	_ = s.CloseSend()
	for {
		var reply []byte
		if err := s.RecvMsg(&reply); err != nil {
			return err
		}
	}
}

// Limits herd-server runs with in the bad-input tests (small, so that the
// oversize cases stay cheap; the flags are what is under test).
const (
	testMaxMessage = 256 << 10
	testMaxHeader  = 16 << 10
)

// snapshot is what the server has stored, to compare before and after.
func snapshot(t testing.TB, s *servertest.Server) string {
	t.Helper()
	var b strings.Builder
	for _, path := range []string{"/v1/hardware", "/v1/templates", "/v1/workflows"} {
		code, body := s.Rest("GET", path, "", adminToken)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		b.WriteString(body)
	}
	return b.String()
}

// TestReliabilityBadInputGRPC (issue 16): every gRPC method of herd-server
// (from the descriptors) gets invalid protobuf bytes, invalid UTF-8 in
// each string field, a message over --max-message-bytes and headers over
// --max-header-bytes, as raw frames over a real TLS connection with the
// admin token. Each must end InvalidArgument or ResourceExhausted (never
// Unknown, Internal or a crash), the server must serve afterwards, and
// what it stored must be unchanged.
func TestReliabilityBadInputGRPC(t *testing.T) {
	s := servertest.Start(t, "--max-message-bytes", fmt.Sprint(testMaxMessage), "--max-header-bytes", fmt.Sprint(testMaxHeader))
	conn := s.Dial(adminToken)
	seed(t, s)
	before := snapshot(t, s)

	type badCase struct {
		name   string
		frames func(m protoreflect.MethodDescriptor) [][]byte
		md     metadata.MD
		want   []codes.Code
	}
	one := func(b []byte) func(protoreflect.MethodDescriptor) [][]byte {
		return func(protoreflect.MethodDescriptor) [][]byte { return [][]byte{b} }
	}
	oversize := protowire.AppendBytes(protowire.AppendTag(nil, 19999, protowire.BytesType), make([]byte, testMaxMessage+1))
	cases := []badCase{
		{"invalid protobuf", one([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1}), nil, []codes.Code{codes.InvalidArgument}},
		{"truncated field", one([]byte{0x0a, 0x10, 'a'}), nil, []codes.Code{codes.InvalidArgument}},
		{"invalid UTF-8 in a string field", func(m protoreflect.MethodDescriptor) [][]byte { return badUTF8(m.Input(), 0) }, nil,
			[]codes.Code{codes.InvalidArgument}},
		{"oversize message", one(oversize), nil, []codes.Code{codes.ResourceExhausted}},
		{"oversize header", one(nil), metadata.Pairs("x-big", strings.Repeat("a", 2*testMaxHeader)), []codes.Code{codes.ResourceExhausted}},
	}
	methods := herdMethods(t)
	calls, bad := 0, 0
	seen := map[codes.Code]int{}
	for _, m := range methods {
		for _, c := range cases {
			for k, frame := range c.frames(m) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := callRaw(ctx, conn, m, frame, c.md)
				cancel()
				calls++
				code := status.Code(err)
				seen[code]++
				if !slices.Contains(c.want, code) {
					bad++
					t.Errorf("%s: %s (#%d): %v, want one of %v", m.FullName(), c.name, k, err, c.want)
				}
			}
		}
		if t.Failed() && bad > 20 {
			t.FailNow()
		}
	}
	// Still serving, nothing stored changed.
	if _, err := hardware.NewHardwareServiceClient(conn).All(context.Background(), &hardware.Empty{}); err != nil {
		t.Fatalf("herd-server after the bad input: %v", err)
	}
	if code, _ := s.Rest("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("/healthz after the bad input: %d", code)
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("stored records changed under bad input:\nbefore %s\nafter  %s", before, after)
		bad++
	}
	if strings.Contains(s.Stderr.String(), "panic") {
		t.Errorf("herd-server log shows a panic:\n%s", s.Stderr.String())
	}
	reliability.Record(t, reliability.Row{
		Case:   "Bad input: every gRPC method of herd-server",
		Done:   fmt.Sprintf("%d methods (from the descriptors) sent invalid protobuf, a truncated field, invalid UTF-8 in each string field, a message over --max-message-bytes and headers over --max-header-bytes, as raw frames", len(methods)),
		Volume: fmt.Sprintf("%d calls", calls),
		Lost:   bad,
		Notes:  fmt.Sprintf("codes seen: %v; server served and its records were unchanged afterwards", codeCounts(seen)),
	})
}

func codeCounts(seen map[codes.Code]int) string {
	var parts []string
	for c, n := range seen {
		parts = append(parts, fmt.Sprintf("%s %d", c, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// seed stores one hardware record and one template through the API.
func seed(t testing.TB, s *servertest.Server) {
	t.Helper()
	conn := s.Dial(adminToken)
	_, err := hardware.NewHardwareServiceClient(conn).Push(context.Background(), &hardware.PushRequest{Data: &hardware.Hardware{
		Id: "0eba0bf8-3772-4b4a-ab9f-6ebe93b9bad1", Metadata: `{"instance":{"hostname":"bad1"}}`,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp:    &hardware.Hardware_DHCP{Mac: "52:54:00:be:ad:01", Ip: &hardware.Hardware_DHCP_IP{Address: "10.88.0.10", Netmask: "255.255.255.0"}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = template.NewTemplateServiceClient(conn).CreateTemplate(context.Background(), &template.WorkflowTemplate{Name: "bad-seed",
		Data: "version: \"0.1\"\nname: bad-seed\ntasks:\n  - name: t\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: a\n        image: noop\n"})
	if err != nil {
		t.Fatal(err)
	}
}

// restRoute is one route of the REST gateway, from the OpenAPI document.
type restRoute struct {
	method, path string
	body         bool
}

func restRoutes(t testing.TB) []restRoute {
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct{ In string }
		}
	}
	if err := json.Unmarshal(herdproto.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var out []restRoute
	for path, ops := range doc.Paths {
		for method, op := range ops {
			r := restRoute{method: strings.ToUpper(method), path: path}
			for _, p := range op.Parameters {
				r.body = r.body || p.In == "body"
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	if len(out) < 10 {
		t.Fatalf("only %d REST routes in the OpenAPI document", len(out))
	}
	// The operator endpoints beside the gateway.
	for _, p := range []string{"/cert", "/metrics", "/healthz", "/version", "/openapi.json"} {
		out = append(out, restRoute{method: "GET", path: p})
	}
	return out
}

// fill puts a value in each {param} of a route's path.
func fill(path, value string) string {
	for {
		i := strings.IndexByte(path, '{')
		j := strings.IndexByte(path, '}')
		if i < 0 || j < i {
			return path
		}
		path = path[:i] + value + path[j+1:]
	}
}

// TestReliabilityBadInputHTTP (issue 16): every REST route of the
// gateway (from the OpenAPI document) and /cert, /metrics, /healthz,
// /version, /openapi.json get a body over --max-message-bytes, headers
// over --max-header-bytes, invalid UTF-8 (in a JSON string and in the
// path), JSON nested 20,000 deep (as the body, and inside a string field
// the server decodes itself), and a body that is not JSON. A route that
// reads the input must answer 4xx naming it, none may answer 5xx, the
// server must serve afterwards and what it stored must be unchanged.
func TestReliabilityBadInputHTTP(t *testing.T) {
	s := servertest.Start(t, "--max-message-bytes", fmt.Sprint(testMaxMessage), "--max-header-bytes", fmt.Sprint(testMaxHeader))
	seed(t, s)
	before := snapshot(t, s)
	// Nested 20,000 deep: past protojson's limit, under the body limit.
	deep := strings.Repeat(`{"data":`, 20000) + "1" + strings.Repeat("}", 20000)
	deepArr := `{"data":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "}"
	type badCase struct {
		name   string
		path   func(restRoute) string
		body   string
		header string
		// reads: the route consumes this input, so it must answer 4xx;
		// otherwise it may ignore it (a GET's body) but never answer 5xx.
		reads func(restRoute) bool
	}
	always := func(restRoute) bool { return true }
	bodied := func(r restRoute) bool { return r.body }
	gateway := func(r restRoute) bool { return strings.HasPrefix(r.path, "/v1/") && strings.Contains(r.path, "{") }
	// Paths name a record that does not exist: a DELETE that ignores its
	// bad body must not remove the seeded one.
	normal := func(r restRoute) string { return fill(r.path, "0eba0bf8-3772-4b4a-ab9f-000000000000") }
	cases := []badCase{
		{"oversize body", normal, strings.Repeat("a", testMaxMessage+1), "", always},
		{"oversize header", normal, "", strings.Repeat("b", 2*testMaxHeader), always},
		{"invalid UTF-8 in a JSON string", normal, "{\"data\":{\"id\":\"\xff\xfe\",\"metadata\":\"\xc3(\"},\"name\":\"\xff\",\"data_json\":\"\xfe\"}", "", bodied},
		{"invalid UTF-8 in the path", func(r restRoute) string { return fill(r.path, "%FF%FE") + "?mac=%ff&name=%fe" }, "", "", gateway},
		{"deeply nested JSON", normal, deep, "", bodied},
		{"deeply nested JSON array", normal, deepArr, "", bodied},
		{"not JSON", normal, "\x00\x01{{{", "", bodied},
		// JSON inside a string field, decoded by the server itself
		// (encoding/json: 10,000 levels at most).
		{"deeply nested JSON in a string field", normal, `{"template":"0eba0bf8-3772-4b4a-ab9f-000000000000","hardware":"` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `"}`, "",
			func(r restRoute) bool { return r.body }},
	}
	routes := restRoutes(t)
	// Bodies over the limit go with Expect: 100-continue, as curl sends
	// large ones: the server's 413 comes before the body, which is never
	// sent (without it the client would see the connection closed under
	// the body it is still writing).
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	requests, bad := 0, 0
	statuses := map[int]int{}
	for _, r := range routes {
		for _, c := range cases {
			req, err := http.NewRequest(r.method, s.HTTP+c.path(r), strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+adminToken)
			req.Header.Set("Content-Type", "application/json")
			if c.header != "" {
				req.Header.Set("X-Big", c.header)
			}
			if len(c.body) > testMaxMessage {
				req.Header.Set("Expect", "100-continue")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req = req.WithContext(ctx)
			res, err := client.Do(req)
			requests++
			if err != nil {
				cancel()
				bad++
				t.Errorf("%s %s: %s: %v", r.method, r.path, c.name, err)
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
			res.Body.Close()
			cancel()
			statuses[res.StatusCode]++
			switch {
			case res.StatusCode >= 500:
				bad++
				t.Errorf("%s %s: %s: %d %s", r.method, r.path, c.name, res.StatusCode, body)
			case c.reads(r) && (res.StatusCode < 400 || len(bytes.TrimSpace(body)) == 0 && res.StatusCode != 431):
				bad++
				t.Errorf("%s %s: %s: %d %q, want a 4xx saying what is wrong", r.method, r.path, c.name, res.StatusCode, body)
			}
		}
	}
	if code, _ := s.Rest("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("/healthz after the bad input: %d", code)
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("stored records changed under bad input:\nbefore %s\nafter  %s", before, after)
		bad++
	}
	if strings.Contains(s.Stderr.String(), "panic") {
		t.Errorf("herd-server log shows a panic:\n%s", s.Stderr.String())
	}
	reliability.Record(t, reliability.Row{
		Case:   "Bad input: every HTTP endpoint of herd-server (:42114)",
		Done:   fmt.Sprintf("%d routes (the REST gateway's from its OpenAPI document, /cert, /metrics, /healthz, /version, /openapi.json) sent bodies over --max-message-bytes, headers over --max-header-bytes, invalid UTF-8 in JSON and paths, JSON nested 20,000 deep (as the body and inside a string field), not-JSON", len(routes)),
		Volume: fmt.Sprintf("%d requests", requests),
		Lost:   bad,
		Notes:  fmt.Sprintf("statuses: %v; server served and its records were unchanged afterwards", statuses),
	})
}
