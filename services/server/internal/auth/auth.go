// Package auth decides who is calling herd-server. Four kinds of callers:
// operators with the admin bearer token; herd's own services (boots,
// metadata) with the service token, which opens reading and watching the
// hardware and recording boot events; herd-bmc with the BMC agent's token,
// which opens taking and reporting BMC jobs; and machines being provisioned with
// a per-machine worker credential that only opens the worker RPCs for that
// machine's own workflows, expires, and dies with its hardware record.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/workertoken"
)

// Principal is an authenticated caller.
type Principal struct {
	// Admin may call everything.
	Admin bool
	// Service may call ServiceMethods (boots, metadata).
	Service bool
	// BMCAgent may call BMCAgentMethods (herd-bmc).
	BMCAgent bool
	// Worker is the hardware id a worker credential speaks for.
	Worker string
}

// CanActFor reports whether p may read or report workflows run by worker.
func (p Principal) CanActFor(worker string) bool {
	return p.Admin || (p.Worker != "" && p.Worker == worker)
}

// GetsWorkerTokens reports whether the hardware Watch hands p the
// machines' worker credentials (boots renders them into the machines'
// scripts).
func (p Principal) GetsWorkerTokens() bool { return p.Admin || p.Service }

// Identity names p in the log: admin, service or worker:<hardware id>.
func (p Principal) Identity() string {
	switch {
	case p.Admin:
		return "admin"
	case p.Service:
		return "service"
	case p.BMCAgent:
		return "bmc-agent"
	case p.Worker != "":
		return "worker:" + p.Worker
	}
	return "anonymous"
}

type principalKey struct{}

// FromContext returns the caller that the interceptor put in ctx.
func FromContext(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}

// WithPrincipal returns ctx carrying p (for in-process callers and tests).
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

const (
	hardwareService = "/github.com.tinkerbell.tink.protos.hardware.HardwareService/"
	workflowService = "/github.com.tinkerbell.tink.protos.workflow.WorkflowService/"
)

// workerMethods are the RPCs a worker credential opens: Tinkerbell v0.6's
// worker-facing calls, and herd's log upload.
var workerMethods = map[string]bool{
	workflowService + "GetWorkflowContexts":    true,
	workflowService + "GetWorkflowContextList": true,
	workflowService + "GetWorkflowActions":     true,
	workflowService + "ReportActionStatus":     true,
	workflowService + "GetWorkflowData":        true,
	workflowService + "GetWorkflowMetadata":    true,
	workflowService + "GetWorkflowDataVersion": true,
	workflowService + "UpdateWorkflowData":     true,
	// herd's addition for workers.
	workflowService + "ReportActionLogs": true,
}

// ServiceMethods are the RPCs the service token opens: what herd-boots and
// herd-metadata call (their inventory's Watch, lookups) and boots' boot
// events. Nothing that changes hardware, templates or workflows, and
// nothing that reads a workflow (its actions and data may hold secrets).
var ServiceMethods = map[string]bool{
	hardwareService + "ByMAC":           true,
	hardwareService + "ByIP":            true,
	hardwareService + "ByID":            true,
	hardwareService + "All":             true,
	hardwareService + "Watch":           true,
	hardwareService + "DeprecatedWatch": true,
	workflowService + "RecordBootEvent": true,
}

// BMCAgentMethods are the RPCs the BMC agent's token opens: taking BMC
// jobs, with their BMC's secret, and reporting them. Nothing else: the
// agent neither reads the inventory nor starts jobs of its own.
var BMCAgentMethods = map[string]bool{
	"/herd.machine.v1.BMCAgentService/NextJob":   true,
	"/herd.machine.v1.BMCAgentService/ReportJob": true,
}

// Generations looks up a hardware record's credential generation (found
// false: no such record).
type Generations interface {
	HardwareCredentialGeneration(ctx context.Context, hwID string) (gen int64, found bool, err error)
}

// AddressOwners finds the hardware record whose interfaces hold an
// address (its canonical form, netip.Addr.String).
type AddressOwners interface {
	HardwareIDByIP(ctx context.Context, ip string) (hwID string, found bool, err error)
}

// SourcePolicy says from which addresses a worker credential is taken
// (herd-server --worker-source-check, --worker-trusted-sources).
type SourcePolicy struct {
	// Off takes a worker credential from any address (a stolen one too).
	Off bool
	// Trusted are sources taken for any machine: NAT gateways and relays
	// that machines reach herd-server through.
	Trusted []netip.Prefix
}

// SourceAllowed decides whether a worker credential of hardware hwID is
// taken from src, which interfaces of hardware owner hold ("" : none).
func SourceAllowed(p SourcePolicy, hwID string, src netip.Addr, owner string) bool {
	switch {
	case p.Off:
		return true
	case !src.IsValid():
		return false
	case p.trusts(src):
		return true
	}
	return hwID != "" && owner == hwID
}

func (p SourcePolicy) trusts(src netip.Addr) bool {
	for _, t := range p.Trusted {
		if t.Contains(src) {
			return true
		}
	}
	return false
}

// SourceAddr reads a peer as transport.Peer names it ("ip:port"); the
// zero Addr when it names no address.
func SourceAddr(peer string) netip.Addr {
	ap, err := netip.ParseAddrPort(peer)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Notifier delivers the ids of changed hardware records; "" means changes
// may have been missed.
type Notifier interface {
	Subscribe(channel string) (<-chan string, func())
}

// Config configures an Authenticator.
type Config struct {
	// AdminToken opens everything; required unless Disabled.
	AdminToken string
	// ServiceToken, if set, opens ServiceMethods.
	ServiceToken string
	// BMCToken, if set, opens BMCAgentMethods.
	BMCToken string
	// WorkerKey signs worker credentials (32 bytes or more).
	WorkerKey []byte
	// WorkerLifetime is how long a worker credential lives (at least
	// workertoken.MinLifetime).
	WorkerLifetime time.Duration
	// Disabled makes every caller an admin (legacy v0.6 clients send no
	// credentials).
	Disabled bool
	// Generations checks that a worker credential's hardware record still
	// exists and is the one it was issued for.
	Generations Generations
	// Sources says from which addresses worker credentials are taken;
	// unless Sources.Off, Owners and Peer are required.
	Sources SourcePolicy
	// Owners finds the hardware record a source address belongs to.
	Owners AddressOwners
	// Peer names a call's source address ("ip:port"; transport.Peer).
	Peer func(context.Context) string
	// Notifier and Channel, when set, announce hardware changes, so the
	// generations and address owners looked up can be cached.
	Notifier Notifier
	Channel  string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives the cache's troubles.
	Log *slog.Logger
}

// Authenticator checks bearer credentials.
type Authenticator struct {
	cfg     Config
	gens    *cache[int64]
	owners  *cache[string]
	changes <-chan string
	cancel  func()
}

// New returns an Authenticator. With a Notifier it subscribes now, so that
// no change after New is missed; Run must then run to receive them.
func New(c Config) (*Authenticator, error) {
	if !c.Disabled && c.AdminToken == "" {
		return nil, errors.New("no admin token configured: set one, or turn authentication off explicitly")
	}
	if c.ServiceToken != "" && c.ServiceToken == c.AdminToken {
		return nil, errors.New("the service token is the admin token: give herd's services a token of their own")
	}
	if c.BMCToken != "" && (c.BMCToken == c.AdminToken || c.BMCToken == c.ServiceToken) {
		return nil, errors.New("the BMC agent's token is the admin or the service token: give herd-bmc a token of its own")
	}
	if len(c.WorkerKey) < 32 {
		return nil, errors.New("worker key shorter than 32 bytes")
	}
	if c.WorkerLifetime < workertoken.MinLifetime {
		return nil, fmt.Errorf("worker credential lifetime %v: want at least %v", c.WorkerLifetime, workertoken.MinLifetime)
	}
	if c.Generations == nil {
		return nil, errors.New("no credential generation lookup configured")
	}
	if !c.Sources.Off && !c.Disabled && (c.Owners == nil || c.Peer == nil) {
		return nil, errors.New("worker source check without an address lookup: configure Owners and Peer, or turn the check off")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{cfg: c, cancel: func() {},
		gens:   &cache[int64]{lookup: c.Generations.HardwareCredentialGeneration},
		owners: &cache[string]{lookup: func(context.Context, string) (string, bool, error) { return "", false, nil }},
	}
	if c.Owners != nil {
		a.owners.lookup = c.Owners.HardwareIDByIP
	}
	if c.Notifier != nil {
		a.changes, a.cancel = c.Notifier.Subscribe(c.Channel)
		a.gens.setEnabled(true)
		a.owners.setEnabled(true)
	}
	return a, nil
}

// Run follows hardware changes, dropping the cached generations and
// address owners they touch, until ctx ends. Without a Notifier it only waits.
func (a *Authenticator) Run(ctx context.Context) error {
	defer a.cancel()
	if a.changes == nil {
		<-ctx.Done()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case id, ok := <-a.changes:
			if !ok {
				// No more notifications: a cached answer could go stale,
				// so every check asks the database from now on.
				a.gens.setEnabled(false)
				a.owners.setEnabled(false)
				if ctx.Err() == nil {
					a.cfg.Log.Warn("hardware change feed closed; worker credentials are checked against the database on every call")
				}
				return nil
			}
			a.gens.invalidate(id)
			// Any record's change can move an address to another owner.
			a.owners.invalidate("")
		}
	}
}

// WorkerToken is the credential of generation gen of hardware record hwID,
// valid from now for about the configured lifetime (see
// workertoken.Expiry), and when a fresher one will be issued.
func (a *Authenticator) WorkerToken(hwID string, gen int64) (token string, renew time.Time) {
	exp, renew := workertoken.Expiry(a.cfg.Now(), a.cfg.WorkerLifetime)
	return workertoken.Sign(a.cfg.WorkerKey, workertoken.Claims{HardwareID: hwID, Generation: gen, Expires: exp}), renew
}

// Reasons a call is refused, as Error.Reason says them (and the metric
// labels).
const (
	ReasonMissing   = "missing credentials"
	ReasonMalformed = "malformed authorization header"
	ReasonInvalid   = "invalid token"
	ReasonExpired   = "expired worker credential"
	ReasonRevoked   = "revoked worker credential"
	ReasonForbidden = "method not open to this credential"
	ReasonSource    = "worker credential from another address"
)

// Error is a refused authentication: the status the caller gets, why, and
// who the credential claimed to be (for the log; never the token).
type Error struct {
	Code    codes.Code
	Reason  string
	Claimed string
	Message string
}

func (e *Error) Error() string { return e.Message }

// GRPCStatus makes the error its status for grpc and status.FromError.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Authenticate turns the request metadata of a call to method into a
// Principal, or an *Error (Unauthenticated / PermissionDenied), or an
// Unavailable status when a worker credential cannot be checked now.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (Principal, error) {
	if a.cfg.Disabled {
		return Principal{Admin: true}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return Principal{}, &Error{codes.Unauthenticated, ReasonMissing, "", "missing credentials: send \"authorization: Bearer <token>\""}
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return Principal{}, &Error{codes.Unauthenticated, ReasonMalformed, "", "malformed authorization header: want \"Bearer <token>\""}
	}
	if equal(token, a.cfg.AdminToken) {
		return Principal{Admin: true}, nil
	}
	if a.cfg.ServiceToken != "" && equal(token, a.cfg.ServiceToken) {
		if !ServiceMethods[method] {
			return Principal{}, &Error{codes.PermissionDenied, ReasonForbidden, "service",
				fmt.Sprintf("the service credential cannot call %s", method)}
		}
		return Principal{Service: true}, nil
	}
	if a.cfg.BMCToken != "" && equal(token, a.cfg.BMCToken) {
		if !BMCAgentMethods[method] {
			return Principal{}, &Error{codes.PermissionDenied, ReasonForbidden, "bmc-agent",
				fmt.Sprintf("the BMC agent's credential cannot call %s", method)}
		}
		return Principal{BMCAgent: true}, nil
	}
	c, err := workertoken.Verify(a.cfg.WorkerKey, token, a.cfg.Now())
	switch {
	case errors.Is(err, workertoken.ErrExpired):
		return Principal{}, &Error{codes.Unauthenticated, ReasonExpired, "worker:" + c.HardwareID,
			"worker credential expired: the machine gets a fresh one when it boots again"}
	case err != nil:
		return Principal{}, &Error{codes.Unauthenticated, ReasonInvalid, "", "invalid token"}
	}
	claimed := "worker:" + c.HardwareID
	if !workerMethods[method] {
		return Principal{}, &Error{codes.PermissionDenied, ReasonForbidden, claimed,
			fmt.Sprintf("a worker credential cannot call %s", method)}
	}
	gen, found, err := a.gens.get(ctx, c.HardwareID)
	if err != nil {
		a.cfg.Log.ErrorContext(ctx, "checking a worker credential failed", "hardware_id", c.HardwareID, "error", err)
		return Principal{}, status.Error(codes.Unavailable, "cannot check the worker credential now; retry")
	}
	if !found || gen != c.Generation {
		return Principal{}, &Error{codes.Unauthenticated, ReasonRevoked, claimed,
			"worker credential revoked: its hardware record was deleted"}
	}
	if err := a.checkSource(ctx, c.HardwareID); err != nil {
		return Principal{}, err
	}
	return Principal{Worker: c.HardwareID}, nil
}

// checkSource refuses a worker credential of hwID used from an address
// that is neither one of its hardware record's interfaces nor trusted: a
// credential read off another machine's script works only from that
// machine. PermissionDenied, with one message whoever owns the address.
func (a *Authenticator) checkSource(ctx context.Context, hwID string) error {
	p := a.cfg.Sources
	if p.Off {
		return nil
	}
	peer := a.cfg.Peer(ctx)
	src := SourceAddr(peer)
	owner := ""
	if src.IsValid() && !p.trusts(src) {
		id, found, err := a.owners.get(ctx, src.String())
		if err != nil {
			a.cfg.Log.ErrorContext(ctx, "checking a worker's source address failed", "hardware_id", hwID, "peer", peer, "error", err)
			return status.Error(codes.Unavailable, "cannot check the worker credential now; retry")
		}
		if found {
			owner = id
		}
	}
	if SourceAllowed(p, hwID, src, owner) {
		return nil
	}
	return &Error{codes.PermissionDenied, ReasonSource, "worker:" + hwID,
		"this worker credential is not taken from this address: only from its machine's own (herd-server --worker-source-check)"}
}

func equal(a, b string) bool {
	return b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// cache remembers the answers of a lookup that only hardware changes can
// alter (a record's credential generation, the owner of an address), so
// that a worker call costs no extra query. Entries are dropped when
// hardware changes (notifications); a lookup that raced with a change is
// not kept.
type cache[V any] struct {
	lookup func(ctx context.Context, key string) (V, bool, error)

	mu      sync.Mutex
	enabled bool
	epoch   uint64
	m       map[string]entry[V]
}

type entry[V any] struct {
	v     V
	found bool
}

// maxCacheEntries bounds a cache; past it, it starts over.
const maxCacheEntries = 1 << 16

func (c *cache[V]) get(ctx context.Context, key string) (V, bool, error) {
	c.mu.Lock()
	e, hit := c.m[key]
	enabled, epoch := c.enabled, c.epoch
	c.mu.Unlock()
	if hit {
		return e.v, e.found, nil
	}
	v, found, err := c.lookup(ctx, key)
	if err != nil || !enabled {
		return v, found, err
	}
	c.mu.Lock()
	if c.enabled && c.epoch == epoch {
		if c.m == nil || len(c.m) >= maxCacheEntries {
			c.m = map[string]entry[V]{}
		}
		c.m[key] = entry[V]{v, found}
	}
	c.mu.Unlock()
	return v, found, nil
}

// invalidate drops key ("" : everything).
func (c *cache[V]) invalidate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if key == "" {
		c.m = nil
	} else {
		delete(c.m, key)
	}
}

func (c *cache[V]) setEnabled(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enabled, c.m = on, nil
	c.epoch++
}
