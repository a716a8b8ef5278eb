package auth

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	report    = workflowService + "ReportActionStatus"
	push      = hardwareService + "Push"
	watch     = hardwareService + "Watch"
	nextJob   = "/herd.machine.v1.BMCAgentService/NextJob"
	reportJob = "/herd.machine.v1.BMCAgentService/ReportJob"
	boot      = workflowService + "RecordBootEvent"
	hwID      = "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"
)

// gens is a fake store of credential generations that counts lookups.
type gens struct {
	mu      sync.Mutex
	m       map[string]int64
	lookups int
	err     error
}

func (g *gens) HardwareCredentialGeneration(_ context.Context, id string) (int64, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lookups++
	gen, ok := g.m[id]
	return gen, ok, g.err
}

func (g *gens) set(id string, gen int64, present bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if present {
		g.m[id] = gen
	} else {
		delete(g.m, id)
	}
}

// feed is a fake Notifier.
type feed struct{ ch chan string }

func (f feed) Subscribe(string) (<-chan string, func()) { return f.ch, func() {} }

func newAuth(t *testing.T, g Generations, n Notifier, now func() time.Time) *Authenticator {
	t.Helper()
	a, err := New(Config{AdminToken: "s3cret", ServiceToken: "svc-token", BMCToken: "bmc-token", WorkerKey: bytes.Repeat([]byte{7}, 32),
		WorkerLifetime: time.Hour, Generations: g, Notifier: n, Channel: "hw", Now: now, Sources: SourcePolicy{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func call(a *Authenticator, method string, auth ...string) (Principal, error) {
	md := metadata.MD{}
	for _, v := range auth {
		md.Append("authorization", v)
	}
	return a.Authenticate(metadata.NewIncomingContext(context.Background(), md), method)
}

func TestAuthenticate(t *testing.T) {
	g := &gens{m: map[string]int64{hwID: 3}}
	now := time.Unix(1_700_000_000, 0)
	a := newAuth(t, g, nil, func() time.Time { return now })
	worker, _ := a.WorkerToken(hwID, 3)
	oldGen, _ := a.WorkerToken(hwID, 2)
	other, _ := newAuth(t, g, nil, time.Now).WorkerToken(hwID, 3)
	otherKey, _ := New(Config{AdminToken: "s3cret", WorkerKey: bytes.Repeat([]byte{8}, 32), WorkerLifetime: time.Hour, Generations: g, Sources: SourcePolicy{Off: true}})
	forged, _ := otherKey.WorkerToken(hwID, 3)
	gone, _ := a.WorkerToken("5f2c6a3e-1111-4c4c-9a9a-222233334444", 1)
	expired := func() string {
		past := newAuth(t, g, nil, func() time.Time { return now.Add(-2 * time.Hour) })
		tok, _ := past.WorkerToken(hwID, 3)
		return tok
	}()
	tests := []struct {
		name   string
		auth   []string
		method string
		want   Principal
		code   codes.Code
		reason string
	}{
		{"admin on admin rpc", []string{"Bearer s3cret"}, push, Principal{Admin: true}, codes.OK, ""},
		{"admin on worker rpc", []string{"bearer s3cret"}, report, Principal{Admin: true}, codes.OK, ""},
		{"service on watch", []string{"Bearer svc-token"}, watch, Principal{Service: true}, codes.OK, ""},
		{"service on boot events", []string{"Bearer svc-token"}, boot, Principal{Service: true}, codes.OK, ""},
		{"service on push", []string{"Bearer svc-token"}, push, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"service on worker rpc", []string{"Bearer svc-token"}, report, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"bmc agent takes a job", []string{"Bearer bmc-token"}, nextJob, Principal{BMCAgent: true}, codes.OK, ""},
		{"bmc agent reports a job", []string{"Bearer bmc-token"}, reportJob, Principal{BMCAgent: true}, codes.OK, ""},
		{"bmc agent on watch", []string{"Bearer bmc-token"}, watch, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"bmc agent asks for a job", []string{"Bearer bmc-token"}, "/herd.machine.v1.MachineService/Power", Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"service takes a bmc job", []string{"Bearer svc-token"}, nextJob, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"worker takes a bmc job", []string{"Bearer " + worker}, nextJob, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"worker on worker rpc", []string{"Bearer " + worker}, report, Principal{Worker: hwID}, codes.OK, ""},
		{"same credential from the same step", []string{"Bearer " + other}, report, Principal{Worker: hwID}, codes.OK, ""},
		{"worker on admin rpc", []string{"Bearer " + worker}, push, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"worker on boot events", []string{"Bearer " + worker}, boot, Principal{}, codes.PermissionDenied, ReasonForbidden},
		{"worker token from another key", []string{"Bearer " + forged}, report, Principal{}, codes.Unauthenticated, ReasonInvalid},
		{"worker token edited", []string{"Bearer x" + worker}, report, Principal{}, codes.Unauthenticated, ReasonInvalid},
		{"worker token of an older record", []string{"Bearer " + oldGen}, report, Principal{}, codes.Unauthenticated, ReasonRevoked},
		{"worker token of a deleted record", []string{"Bearer " + gone}, report, Principal{}, codes.Unauthenticated, ReasonRevoked},
		{"worker token expired", []string{"Bearer " + expired}, report, Principal{}, codes.Unauthenticated, ReasonExpired},
		{"no header", nil, push, Principal{}, codes.Unauthenticated, ReasonMissing},
		{"two headers", []string{"Bearer s3cret", "Bearer s3cret"}, push, Principal{}, codes.Unauthenticated, ReasonMissing},
		{"wrong scheme", []string{"Basic s3cret"}, push, Principal{}, codes.Unauthenticated, ReasonMalformed},
		{"wrong token", []string{"Bearer s3cre"}, push, Principal{}, codes.Unauthenticated, ReasonInvalid},
		{"empty token", []string{"Bearer "}, push, Principal{}, codes.Unauthenticated, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := call(a, tt.method, tt.auth...)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if p != tt.want {
				t.Fatalf("principal %+v, want %+v", p, tt.want)
			}
			var ae *Error
			if tt.reason != "" && (!errors.As(err, &ae) || ae.Reason != tt.reason) {
				t.Fatalf("error %#v, want reason %q", err, tt.reason)
			}
		})
	}
	// A store that cannot answer is Unavailable (the worker retries), not
	// a refusal.
	g.err = errors.New("connection refused")
	if _, err := call(a, report, "Bearer "+worker); status.Code(err) != codes.Unavailable {
		t.Fatalf("store down: %v, want Unavailable", err)
	}
}

// TestGenerationCache: checks hit the store once per record until the
// record changes; a change drops the cached generation, "" drops all.
func TestGenerationCache(t *testing.T) {
	g := &gens{m: map[string]int64{hwID: 1}}
	f := feed{make(chan string)}
	a := newAuth(t, g, f, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	tok, _ := a.WorkerToken(hwID, 1)
	for range 3 {
		if _, err := call(a, report, "Bearer "+tok); err != nil {
			t.Fatal(err)
		}
	}
	if g.lookups != 1 {
		t.Fatalf("%d lookups for 3 calls, want 1", g.lookups)
	}
	// Deleted, then pushed again: a new generation.
	g.set(hwID, 2, true)
	f.ch <- hwID
	f.ch <- "other" // Run has handled hwID once it takes the next one
	if _, err := call(a, report, "Bearer "+tok); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after the record changed: %v, want Unauthenticated", err)
	}
	fresh, _ := a.WorkerToken(hwID, 2)
	if _, err := call(a, report, "Bearer "+fresh); err != nil {
		t.Fatal(err)
	}
	g.set(hwID, 0, false)
	f.ch <- ""
	f.ch <- "other"
	if _, err := call(a, report, "Bearer "+fresh); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("after a resync with the record gone: %v, want Unauthenticated", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDisabledAndConfig(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	g := &gens{m: map[string]int64{}}
	for name, c := range map[string]Config{
		"empty admin token with auth on": {WorkerKey: key, WorkerLifetime: time.Hour, Generations: g},
		"short worker key":               {AdminToken: "t", WorkerKey: key[:8], WorkerLifetime: time.Hour, Generations: g},
		"service token = admin token":    {AdminToken: "t", ServiceToken: "t", WorkerKey: key, WorkerLifetime: time.Hour, Generations: g},
		"bmc token = admin token":        {AdminToken: "t", BMCToken: "t", WorkerKey: key, WorkerLifetime: time.Hour, Generations: g},
		"bmc token = service token":      {AdminToken: "t", ServiceToken: "s", BMCToken: "s", WorkerKey: key, WorkerLifetime: time.Hour, Generations: g},
		"lifetime too short":             {AdminToken: "t", WorkerKey: key, WorkerLifetime: time.Second, Generations: g},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	a, err := New(Config{Disabled: true, WorkerKey: key, WorkerLifetime: time.Hour, Generations: g, Sources: SourcePolicy{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(context.Background(), push)
	if err != nil || !p.Admin {
		t.Fatalf("disabled auth: %+v %v", p, err)
	}
}

func TestPrincipal(t *testing.T) {
	if !(Principal{Admin: true}).CanActFor("x") || !(Principal{Worker: "x"}).CanActFor("x") ||
		(Principal{Worker: "x"}).CanActFor("y") || (Principal{}).CanActFor("") || (Principal{Service: true}).CanActFor("x") {
		t.Fatal("CanActFor decisions wrong")
	}
	for p, want := range map[Principal]string{{Admin: true}: "admin", {Service: true}: "service", {BMCAgent: true}: "bmc-agent", {Worker: "x"}: "worker:x", {}: "anonymous"} {
		if p.Identity() != want {
			t.Errorf("%+v: identity %q, want %q", p, p.Identity(), want)
		}
	}
}
