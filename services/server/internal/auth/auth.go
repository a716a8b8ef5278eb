// Package auth decides who is calling herd-server. Two kinds of callers:
// operators (and herd's own services) with the admin bearer token, and
// machines being provisioned with a per-machine worker credential that only
// opens the worker RPCs for that machine's own workflows.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/workertoken"
)

// Principal is an authenticated caller.
type Principal struct {
	// Admin may call everything.
	Admin bool
	// Worker is the hardware id a worker credential speaks for.
	Worker string
}

// CanActFor reports whether p may read or report workflows run by worker.
func (p Principal) CanActFor(worker string) bool {
	return p.Admin || (p.Worker != "" && p.Worker == worker)
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

// workerMethods are the RPCs a worker credential opens: Tinkerbell v0.6's
// worker-facing calls, and herd's log upload.
var workerMethods = map[string]bool{
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/GetWorkflowContexts":    true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/GetWorkflowContextList": true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/GetWorkflowActions":     true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/ReportActionStatus":     true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/GetWorkflowData":        true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/GetWorkflowMetadata":    true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/GetWorkflowDataVersion": true,
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/UpdateWorkflowData":     true,
	// herd's addition for workers.
	"/github.com.tinkerbell.tink.protos.workflow.WorkflowService/ReportActionLogs": true,
}

// Authenticator checks bearer credentials.
type Authenticator struct {
	adminToken string
	workerKey  []byte
	disabled   bool
}

// New returns an Authenticator. adminToken must be non-empty unless
// disabled, which makes every caller an admin (legacy v0.6 clients send no
// credentials). workerKey signs worker credentials.
func New(adminToken string, workerKey []byte, disabled bool) (*Authenticator, error) {
	if !disabled && adminToken == "" {
		return nil, errors.New("no admin token configured: set one, or turn authentication off explicitly")
	}
	if len(workerKey) < 32 {
		return nil, errors.New("worker key shorter than 32 bytes")
	}
	return &Authenticator{adminToken: adminToken, workerKey: workerKey, disabled: disabled}, nil
}

// WorkerToken is the credential of the machine with hardware id hwID (see
// pkg/workertoken). The server keeps no list: it recomputes.
func (a *Authenticator) WorkerToken(hwID string) string {
	return workertoken.Sign(a.workerKey, hwID)
}

// Authenticate turns the request metadata of a call to method into a
// Principal, or an Unauthenticated / PermissionDenied status.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (Principal, error) {
	if a.disabled {
		return Principal{Admin: true}, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return Principal{}, status.Error(codes.Unauthenticated, "missing credentials: send \"authorization: Bearer <token>\"")
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || token == "" {
		return Principal{}, status.Error(codes.Unauthenticated, "malformed authorization header: want \"Bearer <token>\"")
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(a.adminToken)) == 1 {
		return Principal{Admin: true}, nil
	}
	if hwID, ok := workertoken.Verify(a.workerKey, token); ok {
		if !workerMethods[method] {
			return Principal{}, status.Errorf(codes.PermissionDenied, "a worker credential cannot call %s", method)
		}
		return Principal{Worker: hwID}, nil
	}
	return Principal{}, status.Error(codes.Unauthenticated, "invalid token")
}

// UnaryInterceptor authenticates every unary call.
func (a *Authenticator) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	p, err := a.Authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return next(WithPrincipal(ctx, p), req)
}

// StreamInterceptor authenticates every streaming call.
func (a *Authenticator) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	p, err := a.Authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return next(srv, &principalStream{ServerStream: ss, ctx: WithPrincipal(ss.Context(), p)})
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }
