package auth

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	report = "/github.com.tinkerbell.tink.protos.workflow.WorkflowService/ReportActionStatus"
	push   = "/github.com.tinkerbell.tink.protos.hardware.HardwareService/Push"
)

func TestAuthenticate(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	a, err := New("s3cret", key, false)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := New("s3cret", bytes.Repeat([]byte{8}, 32), false)
	worker := a.WorkerToken("0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94")
	tests := []struct {
		name   string
		auth   []string
		method string
		want   Principal
		code   codes.Code
	}{
		{"admin on admin rpc", []string{"Bearer s3cret"}, push, Principal{Admin: true}, codes.OK},
		{"admin on worker rpc", []string{"bearer s3cret"}, report, Principal{Admin: true}, codes.OK},
		{"worker on worker rpc", []string{"Bearer " + worker}, report, Principal{Worker: "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94"}, codes.OK},
		{"worker on admin rpc", []string{"Bearer " + worker}, push, Principal{}, codes.PermissionDenied},
		{"worker token from another key", []string{"Bearer " + other.WorkerToken("0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94")}, report, Principal{}, codes.Unauthenticated},
		{"worker token for another machine", []string{"Bearer x" + worker}, report, Principal{}, codes.Unauthenticated},
		{"no header", nil, push, Principal{}, codes.Unauthenticated},
		{"two headers", []string{"Bearer s3cret", "Bearer s3cret"}, push, Principal{}, codes.Unauthenticated},
		{"wrong scheme", []string{"Basic s3cret"}, push, Principal{}, codes.Unauthenticated},
		{"wrong token", []string{"Bearer s3cre"}, push, Principal{}, codes.Unauthenticated},
		{"empty token", []string{"Bearer "}, push, Principal{}, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md := metadata.MD{}
			for _, v := range tt.auth {
				md.Append("authorization", v)
			}
			p, err := a.Authenticate(metadata.NewIncomingContext(context.Background(), md), tt.method)
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if p != tt.want {
				t.Fatalf("principal %+v, want %+v", p, tt.want)
			}
		})
	}
}

func TestDisabledAndConfig(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	if _, err := New("", key, false); err == nil {
		t.Error("empty admin token accepted with auth on")
	}
	if _, err := New("t", key[:8], false); err == nil {
		t.Error("short worker key accepted")
	}
	a, err := New("", key, true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(context.Background(), push)
	if err != nil || !p.Admin {
		t.Fatalf("disabled auth: %+v %v", p, err)
	}
}

func TestCanActFor(t *testing.T) {
	if !(Principal{Admin: true}).CanActFor("x") || !(Principal{Worker: "x"}).CanActFor("x") ||
		(Principal{Worker: "x"}).CanActFor("y") || (Principal{}).CanActFor("") {
		t.Fatal("CanActFor decisions wrong")
	}
}
