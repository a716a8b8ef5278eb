package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

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
