package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/workflow"
)

// The fuzzers of what herd-server parses from outside, against a real
// herd-server and PostgreSQL (make fuzz; go test runs their seeds).

// fuzzMAC is seed()'s machine.
const fuzzMAC = "52:54:00:be:ad:01"

// FuzzREST: every REST route that takes a JSON body gets whatever bytes
// the fuzzer makes; herd-server never answers 5xx, a refusal says what is
// wrong, and it goes on serving.
func FuzzREST(f *testing.F) {
	s := servertest.Start(f)
	seed(f, s)
	wf := s.CreateWorkflow("bad-seed", `{"device_1":"`+fuzzMAC+`"}`)
	var routes []restRoute
	for _, r := range restRoutes(f) {
		if r.body {
			routes = append(routes, r)
		}
	}
	for i, body := range []string{
		`{}`,
		`{"data":{"id":"0eba0bf8-3772-4b4a-ab9f-6ebe93b9bad1","network":{"interfaces":[{"dhcp":{"mac":"` + fuzzMAC + `"}}]}}}`,
		`{"mac":"` + fuzzMAC + `"}`,
		`{"ip":"10.88.0.10"}`,
		`{"name":"x","data":"version: \"0.1\"\nname: x\ntasks: []\n"}`,
		`{"template":"` + wf + `","hardware":"{\"device_1\":\"` + fuzzMAC + `\"}"}`,
		`{"action":"POWER_ACTION_ON","device":"BOOT_DEVICE_PXE","persistent":true}`,
		`{"username":"u","password":"p"}`,
		`[1,{"a":null}]`,
		"\xff",
	} {
		for j := range routes {
			if j%len(routes) == i%len(routes) || i < 2 {
				f.Add(uint8(j), []byte(body))
			}
		}
	}
	client := &http.Client{Timeout: 20 * time.Second}
	f.Fuzz(func(t *testing.T, pick uint8, body []byte) {
		r := routes[int(pick)%len(routes)]
		req, err := http.NewRequest(r.method, s.HTTP+fill(r.path, wf), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s %q: %v (is herd-server up?)\n%s", r.method, r.path, body, err, s.Stderr.String())
		}
		got, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		res.Body.Close()
		switch {
		case res.StatusCode >= 500:
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, res.StatusCode, got)
		case res.StatusCode >= 400 && len(bytes.TrimSpace(got)) == 0:
			t.Fatalf("%s %s %q: %d without saying why", r.method, r.path, body, res.StatusCode)
		}
	})
}

// FuzzWorkflowData: a worker's UpdateWorkflowData with any bytes as data
// and metadata is stored or refused InvalidArgument / ResourceExhausted
// (never Unknown or Internal); what is stored reads back as the same JSON,
// and sending it again adds no version.
func FuzzWorkflowData(f *testing.F) {
	s := servertest.Start(f)
	seed(f, s)
	wf := s.CreateWorkflow("bad-seed", `{"device_1":"`+fuzzMAC+`"}`)
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken("0eba0bf8-3772-4b4a-ab9f-6ebe93b9bad1")))
	for _, seed := range []struct{ data, meta string }{
		{`{"disks":["/dev/sda"],"n":1.5e3}`, `{"action":"write"}`},
		{`[]`, ``},
		{`"\u0000"`, `{}`},
		{`{"a":{"a":{"a":[[[[null]]]]}}}`, `{"a":1}`},
		{`1e400`, `{"big":123456789012345678901234567890}`},
		{"{\"\xff\":1}", `{}`},
		{`{`, `{}`},
		{``, `{}`},
	} {
		f.Add([]byte(seed.data), []byte(seed.meta))
	}
	f.Fuzz(func(t *testing.T, data, meta []byte) {
		ctx := func() context.Context {
			c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			t.Cleanup(cancel)
			return c
		}
		_, err := w.UpdateWorkflowData(ctx(), &workflow.UpdateWorkflowDataRequest{WorkflowId: wf, Data: data, Metadata: meta})
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
				t.Fatalf("data %q metadata %q: %v", data, meta, err)
			}
			return
		}
		v, err := w.GetWorkflowDataVersion(ctx(), &workflow.GetWorkflowDataRequest{WorkflowId: wf})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := w.GetWorkflowData(ctx(), &workflow.GetWorkflowDataRequest{WorkflowId: wf, Version: v.GetVersion()})
		if err != nil {
			t.Fatal(err)
		}
		if !sameJSON(stored.GetData(), data) {
			t.Fatalf("stored %q for %q", stored.GetData(), data)
		}
		if _, err := w.UpdateWorkflowData(ctx(), &workflow.UpdateWorkflowDataRequest{WorkflowId: wf, Data: data, Metadata: meta}); err != nil {
			t.Fatalf("resending %q: %v", data, err)
		}
		if again, err := w.GetWorkflowDataVersion(ctx(), &workflow.GetWorkflowDataRequest{WorkflowId: wf}); err != nil || again.GetVersion() != v.GetVersion() {
			t.Fatalf("resending %q moved the version from %d to %d (%v)", data, v.GetVersion(), again.GetVersion(), err)
		}
	})
}

// sameJSON compares two JSON texts as values (what the server stores may
// be reformatted). PostgreSQL's jsonb keeps a number's value but not its
// spelling (1.5e3 comes back as 1500, 1e400
// as its 401 digits), so numbers compare by value, exactly.
func sameJSON(a, b []byte) bool {
	va, erra := decodeJSON(a)
	vb, errb := decodeJSON(b)
	if erra != nil || errb != nil {
		return false
	}
	return sameValue(va, vb)
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	return v, d.Decode(&v)
}

func sameValue(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		x, _, errx := big.ParseFloat(a.String(), 10, 4096, big.ToNearestEven)
		y, _, erry := big.ParseFloat(b.String(), 10, 4096, big.ToNearestEven)
		return errx == nil && erry == nil && x.Cmp(y) == 0
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}
