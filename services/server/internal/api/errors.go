// Package api implements herd-server's gRPC services: Tinkerbell v0.6's
// HardwareService, TemplateService and WorkflowService plus herd's
// additions. Handlers validate what they receive and call the store; the
// interceptor in this file is the one place errors become gRPC statuses.
package api

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/services/server/internal/store"
)

// Status maps an error from a handler, the store or pkg/spec to the gRPC
// status a client can act on. Unknown errors become Internal without their
// text, which may hold SQL or paths; the caller logs the detail.
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
	return status.New(codes.Internal, "internal error; the server log has the details"), true
}

// Interceptors converts errors to statuses, logs failures and counts calls.
type Interceptors struct {
	log      *slog.Logger
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewInterceptors registers the gRPC metrics on reg.
func NewInterceptors(log *slog.Logger, reg prometheus.Registerer) *Interceptors {
	i := &Interceptors{
		log: log,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_grpc_calls_total", Help: "gRPC calls handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_grpc_call_seconds", Help: "gRPC call duration (streams: until they end), by method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30},
		}, []string{"method"}),
	}
	reg.MustRegister(i.calls, i.duration)
	return i
}

func (i *Interceptors) finish(ctx context.Context, method string, start time.Time, err error) error {
	st, internal := Status(err)
	code := codes.OK
	if st != nil {
		code = st.Code()
	}
	i.calls.WithLabelValues(method, code.String()).Inc()
	i.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	switch {
	case internal:
		i.log.ErrorContext(ctx, "call failed", "method", method, "error", err)
	case st != nil && code != codes.Canceled:
		i.log.DebugContext(ctx, "call refused", "method", method, "code", code.String(), "error", st.Message())
	}
	if st == nil {
		return nil
	}
	return st.Err()
}

// Unary is the unary server interceptor.
func (i *Interceptors) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := next(ctx, req)
	if err = i.finish(ctx, info.FullMethod, start, err); err != nil {
		return nil, err
	}
	return resp, nil
}

// Stream is the stream server interceptor.
func (i *Interceptors) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	start := time.Now()
	return i.finish(ss.Context(), info.FullMethod, start, next(srv, ss))
}

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
