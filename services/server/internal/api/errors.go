// Package api implements herd-server's gRPC services: Tinkerbell v0.6's
// HardwareService, TemplateService and WorkflowService plus herd's
// additions. Handlers validate what they receive and call the store; the
// interceptors in this file are the one place calls are authenticated and
// logged and errors become gRPC statuses.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/services/server/internal/auth"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// Status maps an error from a handler, the store or pkg/spec to the gRPC
// status a client can act on. Unknown errors become Internal without their
// text, which may hold SQL or paths; the caller logs the detail. A lost
// database connection is Unavailable, a database out of disk space (or
// memory, connections) ResourceExhausted naming it; clients retry both.
func Status(err error) (*status.Status, bool) {
	if err == nil {
		return nil, false
	}
	if st, ok := status.FromError(err); ok {
		return st, false
	}
	var fe *spec.FieldError
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, err.Error()), false
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, err.Error()), false
	case errors.As(err, &fe), errors.Is(err, store.ErrInvalid):
		return status.New(codes.InvalidArgument, err.Error()), false
	case errors.Is(err, store.ErrNotFound):
		return status.New(codes.NotFound, err.Error()), false
	case errors.Is(err, store.ErrConflict):
		return status.New(codes.AlreadyExists, err.Error()), false
	case errors.Is(err, store.ErrPrecondition):
		return status.New(codes.FailedPrecondition, err.Error()), false
	}
	if cause, ok := store.Exhausted(err); ok {
		// The database's disk (or memory) is full: the operator must act,
		// the client may retry later (herd-worker retries it with backoff).
		return status.New(codes.ResourceExhausted, "the database is out of resources ("+cause+"); writes fail until an operator frees them; retry with backoff"), true
	}
	if store.Unavailable(err) {
		// The database restarted or is away: the client retries (the
		// detail, which may name hosts, stays in the log).
		return status.New(codes.Unavailable, "the database is unavailable; retry with backoff"), true
	}
	return status.New(codes.Internal, "internal error; the server log has the details"), true
}

// Authenticator says who makes a call (see package auth).
type Authenticator interface {
	Authenticate(ctx context.Context, method string) (auth.Principal, error)
}

// Interceptors authenticate every call, convert errors to statuses, log
// each call with its peer address and identity, and count calls.
type Interceptors struct {
	log      *slog.Logger
	authn    Authenticator
	peer     func(context.Context) string
	limit    *logging.Limiter
	now      func() time.Time
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	refused  *prometheus.CounterVec
}

// Refused calls are logged at most refusedBurst times per source address
// in refusedWindow (the count of the others goes on the next line), for at
// most refusedSources addresses at once.
const (
	refusedWindow  = 10 * time.Second
	refusedBurst   = 5
	refusedSources = 1024
)

// NewInterceptors registers the gRPC metrics on reg. peer names the
// caller's address (the HTTP client's for REST calls).
func NewInterceptors(log *slog.Logger, reg prometheus.Registerer, authn Authenticator, peer func(context.Context) string) *Interceptors {
	i := &Interceptors{
		log: log, authn: authn, peer: peer, now: time.Now,
		limit: logging.NewLimiter(refusedWindow, refusedBurst, refusedSources),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_grpc_calls_total", Help: "gRPC calls handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_grpc_call_seconds", Help: "gRPC call duration (streams: until they end), by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30},
		}, []string{"method"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_auth_failures_total", Help: "Calls refused for their credentials (Unauthenticated, PermissionDenied), by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(i.calls, i.duration, i.refused)
	return i
}

// call is what the interceptors know of a call once it is authenticated.
type call struct {
	ctx    context.Context
	method string
	start  time.Time
	peer   string
	p      auth.Principal
	err    error // the authentication's
}

func (i *Interceptors) begin(ctx context.Context, method string) *call {
	c := &call{method: method, start: i.now(), peer: i.peer(ctx)}
	c.p, c.err = i.authn.Authenticate(ctx, method)
	identity := c.p.Identity()
	if c.err != nil {
		identity = "unauthenticated"
		var ae *auth.Error
		if errors.As(c.err, &ae) && ae.Claimed != "" {
			identity = "unauthenticated (claims " + ae.Claimed + ")"
		}
	} else {
		ctx = auth.WithPrincipal(ctx, c.p)
	}
	// Every line logged about the call, here and in the handlers, says
	// where it came from and who made it.
	c.ctx = logging.With(ctx, "peer", c.peer, "identity", identity)
	return c
}

func (i *Interceptors) finish(c *call, err error) error {
	st, internal := Status(err)
	code := codes.OK
	if st != nil {
		code = st.Code()
	}
	i.calls.WithLabelValues(c.method, code.String()).Inc()
	i.duration.WithLabelValues(c.method).Observe(i.now().Sub(c.start).Seconds())
	switch {
	case internal:
		i.log.ErrorContext(c.ctx, "call failed", "method", c.method, "error", err)
	case code == codes.Canceled:
		i.log.DebugContext(c.ctx, "call canceled", "method", c.method)
	case st != nil:
		i.refusedCall(c, err, st)
	case c.p.Worker != "":
		// Workers poll every few seconds: their reads stay at debug, and
		// the handlers log what they change (with the peer and identity).
		i.log.DebugContext(c.ctx, "call", "method", c.method, "seconds", i.now().Sub(c.start).Seconds())
	default:
		i.log.InfoContext(c.ctx, "call", "method", c.method, "seconds", i.now().Sub(c.start).Seconds())
	}
	if st == nil {
		return nil
	}
	return st.Err()
}

// refusedCall logs a refused call: at warn when it is refused for its
// credentials, else at info; rate-limited per source address.
func (i *Interceptors) refusedCall(c *call, err error, st *status.Status) {
	level, reason := slog.LevelInfo, ""
	var ae *auth.Error
	switch {
	case errors.As(err, &ae):
		level, reason = slog.LevelWarn, ae.Reason
	case st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated:
		level, reason = slog.LevelWarn, auth.ReasonForbidden
	}
	if reason != "" {
		i.refused.WithLabelValues(reason).Inc()
	}
	if !i.log.Enabled(c.ctx, level) {
		return
	}
	host, _, splitErr := net.SplitHostPort(c.peer)
	if splitErr != nil {
		host = c.peer
	}
	ok, held := i.limit.Allow(host, i.now())
	if !ok {
		return
	}
	args := []any{"method", c.method, "code", st.Code().String(), "error", st.Message()}
	if reason != "" {
		args = append(args, "reason", reason)
	}
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	msg := "call refused"
	if level == slog.LevelWarn {
		msg = "call refused: authentication failed"
	}
	i.log.Log(c.ctx, level, msg, args...)
}

// Unary is the unary server interceptor.
func (i *Interceptors) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	c := i.begin(ctx, info.FullMethod)
	var resp any
	err := c.err
	if err == nil {
		resp, err = next(c.ctx, req)
	}
	if err = i.finish(c, err); err != nil {
		return nil, err
	}
	return resp, nil
}

// Stream is the stream server interceptor.
func (i *Interceptors) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	c := i.begin(ss.Context(), info.FullMethod)
	err := c.err
	if err == nil {
		if c.p.Admin || c.p.Service {
			// A stream (a watch) may last for days: say when it starts.
			i.log.InfoContext(c.ctx, "stream opened", "method", c.method)
		}
		err = next(srv, &ctxStream{ServerStream: ss, ctx: c.ctx})
	}
	return i.finish(c, err)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// invalid is an InvalidArgument naming the field.
func invalid(field, problem string) error {
	return &spec.FieldError{Field: field, Problem: problem}
}

// requireID checks that an id the client sent is a UUID before it reaches
// the database.
func requireID(field, v string) error {
	if v == "" {
		return invalid(field, "missing")
	}
	if _, err := uuid.Parse(v); err != nil {
		return invalid(field, "\""+clip(v)+"\" is not a UUID")
	}
	return nil
}

// clip keeps echoed client input short.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
