package transport

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/herd-metal/herd/proto/hardware"
)

func TestLimitBodyAndUTF8(t *testing.T) {
	h := limitBody(validUTF8(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				if err.Error() != "EOF" {
					http.Error(w, err.Error(), http.StatusBadRequest)
				}
				return
			}
		}
	})), 10)
	tests := []struct {
		name, target, body string
		chunked            bool
		want               int
		says               string
	}{
		{"small body", "/v1/x", "12345", false, 200, ""},
		{"declared over the limit", "/v1/x", "12345678901", false, 413, "over the limit of 10 bytes"},
		{"chunked over the limit", "/v1/x", "12345678901", true, 400, "too large"},
		{"invalid UTF-8 path", "/v1/%FF", "", false, 400, "path is not valid UTF-8"},
		{"invalid UTF-8 query", "/v1/x?mac=%fe", "", false, 400, "query is not valid UTF-8"},
		{"escaped UTF-8 path", "/v1/%C3%A9", "", false, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", tt.target, strings.NewReader(tt.body))
			if tt.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.says) {
				t.Fatalf("%d %q, want %d saying %q", rec.Code, rec.Body.String(), tt.want, tt.says)
			}
		})
	}
}

// TestDecodeErrors: a request that does not unmarshal reaches no handler
// and ends InvalidArgument naming the message; a valid one passes.
func TestDecodeErrors(t *testing.T) {
	c := newDecoding()
	sd := c.decodeErrors(&hardware.HardwareService_ServiceDesc)
	var push grpc.MethodDesc
	for _, m := range sd.Methods {
		if m.MethodName == "Push" {
			push = m
		}
	}
	called := false
	srv := struct {
		hardware.UnimplementedHardwareServiceServer
	}{}
	ic := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		called = true
		return nil, nil
	}
	valid, err := proto.Marshal(&hardware.PushRequest{Data: &hardware.Hardware{Id: "ok"}})
	if err != nil {
		t.Fatal(err)
	}
	broken := []byte(strings.Replace(string(valid), "ok", "\xff\xfe", 1))
	for _, tt := range []struct {
		name  string
		frame []byte
		want  codes.Code
	}{
		{"invalid protobuf", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, codes.InvalidArgument},
		{"invalid UTF-8", broken, codes.InvalidArgument},
		{"valid", valid, codes.OK},
	} {
		called = false
		dec := func(v any) error { return c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tt.frame)}, v) }
		_, err := push.Handler(srv, context.Background(), dec, ic)
		if status.Code(err) != tt.want || called != (tt.want == codes.OK) {
			t.Errorf("%s: %v (handler called: %v), want %v", tt.name, err, called, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "not a valid github.com.tinkerbell.tink.protos.hardware.PushRequest message") {
			t.Errorf("%s: %v does not name the message", tt.name, err)
		}
	}
	n := 0
	c.failed.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d failed decodings left behind", n)
	}
}

func TestHeaderLimit(t *testing.T) {
	h := headerLimitUnary(100)
	ok := func(context.Context, any) (any, error) { return "ok", nil }
	for _, tt := range []struct {
		name string
		md   metadata.MD
		want codes.Code
	}{
		{"none", nil, codes.OK},
		{"small", metadata.Pairs("a", "b"), codes.OK},
		{"over", metadata.Pairs("a", strings.Repeat("b", 80)), codes.ResourceExhausted},
		{"two fields: 2×(1+1+32)", metadata.Pairs("a", "1", "b", "2"), codes.OK},
		{"three fields: 102 bytes", metadata.Pairs("a", "1", "b", "2", "c", "3"), codes.ResourceExhausted},
	} {
		ctx := metadata.NewIncomingContext(context.Background(), tt.md)
		_, err := h(ctx, nil, nil, ok)
		if status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "--max-header-bytes") {
			t.Errorf("%s: %v does not name the flag", tt.name, err)
		}
	}
	if headerCeiling(16<<10) != 1<<20 || headerCeiling(1<<20) != 4<<20 {
		t.Errorf("ceiling: %d, %d", headerCeiling(16<<10), headerCeiling(1<<20))
	}
}
