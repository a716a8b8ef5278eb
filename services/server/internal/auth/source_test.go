package auth

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestSourceAllowed(t *testing.T) {
	const other = "11111111-2222-4333-8444-555555555555"
	nat := []netip.Prefix{netip.MustParsePrefix("10.9.0.1/32"), netip.MustParsePrefix("10.8.0.0/16")}
	for _, c := range []struct {
		name   string
		p      SourcePolicy
		src    string
		owner  string
		expect bool
	}{
		{"its own interface", SourcePolicy{}, "10.0.0.5", hwID, true},
		{"an address no hardware owns", SourcePolicy{}, "10.0.0.66", "", false},
		{"another machine's address", SourcePolicy{}, "10.0.0.6", other, false},
		{"no address (in-process without the gateway's)", SourcePolicy{}, "", "", false},
		{"a trusted NAT gateway", SourcePolicy{Trusted: nat}, "10.9.0.1", "", true},
		{"inside a trusted relay range", SourcePolicy{Trusted: nat}, "10.8.3.4", other, true},
		{"beside the trusted gateway", SourcePolicy{Trusted: nat}, "10.9.0.2", "", false},
		{"check off", SourcePolicy{Off: true}, "10.0.0.66", "", true},
		{"check off, no address", SourcePolicy{Off: true}, "", "", true},
	} {
		var src netip.Addr
		if c.src != "" {
			src = netip.MustParseAddr(c.src)
		}
		if got := SourceAllowed(c.p, hwID, src, c.owner); got != c.expect {
			t.Errorf("%s: SourceAllowed = %v, want %v", c.name, got, c.expect)
		}
	}
	if got := SourceAllowed(SourcePolicy{}, "", netip.MustParseAddr("10.0.0.66"), ""); got {
		t.Errorf("an empty hardware id matched an unowned address")
	}
}

func TestSourceAddr(t *testing.T) {
	for peer, want := range map[string]string{
		"10.0.0.5:4000":         "10.0.0.5",
		"[::ffff:10.0.0.5]:400": "10.0.0.5",
		"[fd00::1]:400":         "fd00::1",
		"in-process":            "invalid IP",
		"unknown":               "invalid IP",
		"10.0.0.5":              "invalid IP",
	} {
		if got := SourceAddr(peer).String(); got != want {
			t.Errorf("SourceAddr(%q) = %s, want %s", peer, got, want)
		}
	}
}

// owners is a fake address book.
type owners struct {
	m       map[string]string
	err     error
	lookups int
}

func (o *owners) HardwareIDByIP(_ context.Context, ip string) (string, bool, error) {
	o.lookups++
	id, ok := o.m[ip]
	return id, ok, o.err
}

type peerKey struct{}

// TestAuthenticateSource: a valid worker credential from its machine's
// address opens the worker RPCs; from another address it is refused with
// PermissionDenied and ReasonSource; a lookup failure is Unavailable.
func TestAuthenticateSource(t *testing.T) {
	g := &gens{m: map[string]int64{hwID: 1}}
	o := &owners{m: map[string]string{"10.0.0.5": hwID}}
	a, err := New(Config{AdminToken: "s3cret", WorkerKey: bytes.Repeat([]byte{7}, 32), WorkerLifetime: time.Hour, Generations: g,
		Owners: o, Peer: func(ctx context.Context) string { s, _ := ctx.Value(peerKey{}).(string); return s }})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := a.WorkerToken(hwID, 1)
	from := func(peer, method string) (Principal, error) {
		ctx := context.WithValue(context.Background(), peerKey{}, peer)
		return a.Authenticate(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok)), method)
	}
	if p, err := from("10.0.0.5:5000", report); err != nil || p.Worker != hwID {
		t.Errorf("from its own address: %+v, %v", p, err)
	}
	for _, peer := range []string{"10.0.0.66:5000", "in-process", "unknown"} {
		_, err := from(peer, report)
		var ae *Error
		if !errors.As(err, &ae) || ae.Code != codes.PermissionDenied || ae.Reason != ReasonSource || ae.Claimed != "worker:"+hwID {
			t.Errorf("from %s: %v, want PermissionDenied (%s)", peer, err, ReasonSource)
		}
	}
	// The admin token is not bound to an address.
	ctx := context.WithValue(context.Background(), peerKey{}, "10.0.0.66:1")
	if p, err := a.Authenticate(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer s3cret")), report); err != nil || !p.Admin {
		t.Errorf("admin from anywhere: %+v %v", p, err)
	}
	o.err = errors.New("database down")
	if _, err := from("10.0.0.5:5000", report); status.Code(err) != codes.Unavailable {
		t.Errorf("lookup failure: %v, want Unavailable", err)
	}
	if _, err := New(Config{AdminToken: "x", WorkerKey: bytes.Repeat([]byte{7}, 32), WorkerLifetime: time.Hour, Generations: g}); err == nil {
		t.Errorf("a strict source check without Owners and Peer was accepted")
	}
}

// TestOwnerCache: with hardware notifications, a machine's worker calls
// look its address up once; any hardware change drops every cached owner
// (an address may have moved to another record), so a moved address is
// refused at once.
func TestOwnerCache(t *testing.T) {
	g := &gens{m: map[string]int64{hwID: 1}}
	o := &owners{m: map[string]string{"10.0.0.5": hwID}}
	f := feed{make(chan string)}
	a, err := New(Config{AdminToken: "s3cret", WorkerKey: bytes.Repeat([]byte{7}, 32), WorkerLifetime: time.Hour, Generations: g,
		Owners: o, Notifier: f, Channel: "hw", Peer: func(ctx context.Context) string { s, _ := ctx.Value(peerKey{}).(string); return s }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	tok, _ := a.WorkerToken(hwID, 1)
	from := func(peer string) error {
		ctx := context.WithValue(context.Background(), peerKey{}, peer)
		_, err := a.Authenticate(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tok)), report)
		return err
	}
	for range 3 {
		if err := from("10.0.0.5:5000"); err != nil {
			t.Fatal(err)
		}
	}
	if o.lookups != 1 {
		t.Fatalf("%d address lookups for 3 calls, want 1", o.lookups)
	}
	// Another record takes the address: a change of that record, not of
	// the credential's, must still drop the cached owner.
	o.m["10.0.0.5"] = "other-machine"
	f.ch <- "other-machine"
	f.ch <- "x" // Run has handled the change once it takes the next one
	if err := from("10.0.0.5:5000"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("after the address moved: %v, want PermissionDenied", err)
	}
	if o.lookups != 2 {
		t.Fatalf("%d address lookups after a change, want 2", o.lookups)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
