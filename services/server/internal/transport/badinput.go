package transport

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// decoding is the gRPC server's codec: protobuf, except that a request
// that does not unmarshal (invalid protobuf, invalid UTF-8 in a string
// field) is noted here instead of failing in grpc-go, which would answer
// Internal — read as herd-server's bug — and write that status itself
// before any handler sees the error. The handlers that decodeErrors wraps
// take the note and answer InvalidArgument, naming the message expected.
// Every service must be registered through decodeErrors: another would
// see a failed request as an empty message.
type decoding struct {
	base   encoding.CodecV2
	failed sync.Map // the message being decoded (a pointer) → its error
}

func newDecoding() *decoding { return &decoding{base: encoding.GetCodecV2(grpcproto.Name)} }

func (c *decoding) Name() string                           { return c.base.Name() }
func (c *decoding) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c *decoding) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.base.Unmarshal(data, v); err != nil {
		c.failed.Store(v, err)
	}
	return nil
}

// check is the error decoding v met, as InvalidArgument (nil: none).
func (c *decoding) check(v any) error {
	e, ok := c.failed.LoadAndDelete(v)
	if !ok {
		return nil
	}
	name := fmt.Sprintf("%T", v)
	if pm, ok := v.(proto.Message); ok {
		name = string(pm.ProtoReflect().Descriptor().FullName())
	}
	return status.Errorf(codes.InvalidArgument, "the request is not a valid %s message: %v", name, e)
}

// decodeErrors is sd with every method's request decoding checked by c.
func (c *decoding) decodeErrors(sd *grpc.ServiceDesc) *grpc.ServiceDesc {
	out := *sd
	out.Methods = append([]grpc.MethodDesc(nil), sd.Methods...)
	for i := range out.Methods {
		h := out.Methods[i].Handler
		out.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			return h(srv, ctx, func(v any) error {
				if err := dec(v); err != nil {
					c.failed.Delete(v)
					return err
				}
				return c.check(v)
			}, ic)
		}
	}
	out.Streams = append([]grpc.StreamDesc(nil), sd.Streams...)
	for i := range out.Streams {
		h := out.Streams[i].Handler
		out.Streams[i].Handler = func(srv any, ss grpc.ServerStream) error {
			return h(srv, decodingStream{ss, c})
		}
	}
	return &out
}

// decodingStream checks each message RecvMsg decodes.
type decodingStream struct {
	grpc.ServerStream
	c *decoding
}

func (s decodingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		s.c.failed.Delete(m)
		return err
	}
	return s.c.check(m)
}

// limitBody refuses an HTTP request whose declared body is over max with
// 413 before anything reads it, and cuts a body that grows past max while
// read (chunked: the REST gateway answers 400 naming it).
func limitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = fmt.Fprintf(w, `{"code":8,"message":"request body of %d bytes is over the limit of %s bytes (--max-message-bytes)"}`+"\n",
				r.ContentLength, strconv.FormatInt(max, 10))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// validUTF8 refuses a request whose path or query is not UTF-8 once
// unescaped with 400: the REST gateway would put it in a protobuf string
// field, which cannot hold it (the in-process call failed Internal).
func validUTF8(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := ""
		if !utf8.ValidString(r.URL.Path) {
			bad = "path"
		}
		for k, vs := range r.URL.Query() {
			if !utf8.ValidString(k) || !utf8.ValidString(strings.Join(vs, "")) {
				bad = "query"
			}
		}
		if bad != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"code":3,"message":"the request's %s is not valid UTF-8"}`+"\n", bad)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerCeiling is the header list size the gRPC server advertises and
// its transport enforces: far above --max-header-bytes, so that a
// request over the limit reaches headerLimit and gets a clear
// ResourceExhausted. Past the ceiling grpc-go resets the stream
// (FRAME_SIZE_ERROR), and grpc-go clients refuse to send at all.
func headerCeiling(limit int) int { return max(1<<20, 4*limit) }

// headerSize is a call's metadata as HTTP/2 counts a header list: each
// field's name and value and 32 bytes.
func headerSize(ctx context.Context) int {
	md, _ := metadata.FromIncomingContext(ctx)
	n := 0
	for k, vs := range md {
		for _, v := range vs {
			n += len(k) + len(v) + 32
		}
	}
	return n
}

func headerError(ctx context.Context, limit int) error {
	if n := headerSize(ctx); n > limit {
		return status.Errorf(codes.ResourceExhausted, "request headers of %d bytes are over the limit of %d bytes (--max-header-bytes)", n, limit)
	}
	return nil
}

func headerLimitUnary(limit int) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := headerError(ctx, limit); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

func headerLimitStream(limit int) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := headerError(ss.Context(), limit); err != nil {
			return err
		}
		return h(srv, ss)
	}
}
