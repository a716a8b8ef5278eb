package api

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/lib/pq"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/services/server/internal/store"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     codes.Code
		mention  string
		internal bool
	}{
		{"status passes through", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, "no", false},
		{"field error", &spec.FieldError{Field: "network.interfaces[0].dhcp.mac", Problem: "not a MAC"}, codes.InvalidArgument, "network.interfaces[0].dhcp.mac", false},
		{"joined field errors", errors.Join(&spec.FieldError{Field: "a", Problem: "x"}, &spec.FieldError{Field: "b", Problem: "y"}), codes.InvalidArgument, "b: y", false},
		{"store invalid", fmt.Errorf("render: %w", store.ErrInvalid), codes.InvalidArgument, "render", false},
		{"not found", fmt.Errorf("workflow 1: %w", store.ErrNotFound), codes.NotFound, "workflow 1", false},
		{"conflict", fmt.Errorf("mac x already belongs to hardware y: %w", store.ErrConflict), codes.AlreadyExists, "already belongs", false},
		{"precondition", fmt.Errorf("out of order: %w", store.ErrPrecondition), codes.FailedPrecondition, "out of order", false},
		{"canceled", fmt.Errorf("query: %w", context.Canceled), codes.Canceled, "", false},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", false},
		{"database restarting", fmt.Errorf("saving workflow x status: %w", &pq.Error{Code: "57P01", Message: "terminating connection due to administrator command"}), codes.Unavailable, "retry", true},
		{"database starting up", &pq.Error{Code: "57P03", Message: "the database system is starting up"}, codes.Unavailable, "retry", true},
		{"connection exception", &pq.Error{Code: "08006"}, codes.Unavailable, "retry", true},
		{"connection refused", fmt.Errorf("begin transaction: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), codes.Unavailable, "retry", true},
		{"bad connection", fmt.Errorf("reading workflow: %w", driver.ErrBadConn), codes.Unavailable, "retry", true},
		{"connection closed mid-reply", fmt.Errorf("commit: %w", io.ErrUnexpectedEOF), codes.Unavailable, "retry", true},
		{"database disk full", fmt.Errorf("saving workflow x status: %w", &pq.Error{Code: "53100", Message: "could not extend file \"base/16384/16390\": No space left on device"}), codes.ResourceExhausted, "disk full", true},
		{"database out of memory", &pq.Error{Code: "53200", Message: "out of memory"}, codes.ResourceExhausted, "out of memory", true},
		{"database out of connections", &pq.Error{Code: "53300", Message: "sorry, too many clients already"}, codes.ResourceExhausted, "too many connections", true},
		{"other insufficient resources", &pq.Error{Code: "53400", Message: "configuration limit exceeded"}, codes.ResourceExhausted, "SQLSTATE 53400", true},
		{"other SQL error stays internal", &pq.Error{Code: "42P01", Message: "relation does not exist"}, codes.Internal, "internal error", true},
		{"unknown hides its text", errors.New(`pq: relation "workflow" does not exist`), codes.Internal, "internal error", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, internal := Status(tt.err)
			if st.Code() != tt.code || internal != tt.internal {
				t.Fatalf("got %v internal=%v, want %v internal=%v", st.Code(), internal, tt.code, tt.internal)
			}
			if tt.mention != "" && !strings.Contains(st.Message(), tt.mention) {
				t.Fatalf("message %q does not mention %q", st.Message(), tt.mention)
			}
			if tt.internal && strings.Contains(st.Message(), "pq:") {
				t.Fatalf("internal detail leaked: %q", st.Message())
			}
		})
	}
	if st, _ := Status(nil); st != nil {
		t.Fatal("nil error gave a status")
	}
}
