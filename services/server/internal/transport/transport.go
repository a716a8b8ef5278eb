// Package transport serves herd-server's API: gRPC over TLS, and HTTP with
// the REST gateway, the CA bundle, the OpenAPI document and the operator
// endpoints.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/proto"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/ui"
)

// Config is where and how to listen.
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// TLS is the server side of gRPC.
	TLS *tls.Config
	// CA is the PEM bundle served at /cert.
	CA []byte
	// Limits bound what one client may hold; zero fields take the
	// defaults.
	Limits Limits
	// ReusePort binds both listeners with SO_REUSEPORT: replicas on one
	// host share the ports (herd-server --reuse-port).
	ReusePort bool
}

// Limits bound slow, idle and numerous connections: the provisioning
// network is hostile, and a host on it must not hold the server's
// connections or memory with requests it never finishes.
type Limits struct {
	// HTTP: time to read a request's headers; to read a whole request,
	// body included; the longest one write of a response may block (REST
	// streams get a fresh deadline for each write); how long a keep-alive
	// connection may wait for its next request.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// gRPC: time for a new connection's TLS and HTTP/2 handshake.
	HandshakeTimeout time.Duration
	// gRPC: a connection with no call for MaxConnectionIdle is closed
	// (GOAWAY; clients reconnect when they need to).
	MaxConnectionIdle time.Duration
	// gRPC: the server pings a connection quiet for KeepaliveTime and
	// closes it when no answer comes within KeepaliveTimeout (dead peers,
	// half-open connections of a watch).
	KeepaliveTime, KeepaliveTimeout time.Duration
	// gRPC: a client pinging more often than KeepaliveMinTime is
	// disconnected (too_many_pings).
	KeepaliveMinTime time.Duration
	// Both listeners: connections one source address may hold open at
	// once (0: no limit).
	MaxConnsPerSource int
	// MaxMessageBytes bounds one gRPC message received and one HTTP
	// request body (REST): larger ones are refused with ResourceExhausted
	// / 413 before they are decoded.
	MaxMessageBytes int
	// MaxHeaderBytes bounds a request's headers: HTTP (431 beyond it)
	// and gRPC's header list (the stream is refused).
	MaxHeaderBytes int
}

// DefaultLimits are the documented defaults: generous enough for herd's
// services and a few hundred workers behind one NAT address.
var DefaultLimits = Limits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       time.Minute,
	WriteTimeout:      time.Minute,
	IdleTimeout:       2 * time.Minute,
	HandshakeTimeout:  10 * time.Second,
	MaxConnectionIdle: 2 * time.Minute,
	KeepaliveTime:     time.Minute,
	KeepaliveTimeout:  20 * time.Second,
	KeepaliveMinTime:  30 * time.Second,
	MaxConnsPerSource: 256,
	MaxMessageBytes:   4 << 20,
	MaxHeaderBytes:    64 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	for _, f := range []struct{ v, def *time.Duration }{
		{&l.ReadHeaderTimeout, &d.ReadHeaderTimeout}, {&l.ReadTimeout, &d.ReadTimeout}, {&l.WriteTimeout, &d.WriteTimeout},
		{&l.IdleTimeout, &d.IdleTimeout}, {&l.HandshakeTimeout, &d.HandshakeTimeout}, {&l.MaxConnectionIdle, &d.MaxConnectionIdle},
		{&l.KeepaliveTime, &d.KeepaliveTime}, {&l.KeepaliveTimeout, &d.KeepaliveTimeout}, {&l.KeepaliveMinTime, &d.KeepaliveMinTime},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return l
}

// Services are the gRPC implementations.
type Services struct {
	Hardware hardware.HardwareServiceServer
	Template template.TemplateServiceServer
	Workflow workflow.WorkflowServiceServer
	Machine  machine.MachineServiceServer
	BMCAgent machine.BMCAgentServiceServer
}

// registered is every gRPC service herd-server serves, with its
// implementation: New registers these, and ServiceDescs lists them, so
// the bad-input tests that enumerate ServiceDescs cover a service the
// day it is added here.
func registered(svc Services) []struct {
	desc *grpc.ServiceDesc
	impl any
} {
	return []struct {
		desc *grpc.ServiceDesc
		impl any
	}{
		{&hardware.HardwareService_ServiceDesc, svc.Hardware},
		{&template.TemplateService_ServiceDesc, svc.Template},
		{&workflow.WorkflowService_ServiceDesc, svc.Workflow},
		{&machine.MachineService_ServiceDesc, svc.Machine},
		{&machine.BMCAgentService_ServiceDesc, svc.BMCAgent},
	}
}

// ServiceDescs are the descriptors of the gRPC services herd-server
// serves.
func ServiceDescs() []*grpc.ServiceDesc {
	var out []*grpc.ServiceDesc
	for _, r := range registered(Services{}) {
		out = append(out, r.desc)
	}
	return out
}

// Server is the listening API.
type Server struct {
	cfg      Config
	grpc     *grpc.Server
	http     *http.Server
	internal *memListener
	log      *slog.Logger
	limits   Limits
	refused  *prometheus.CounterVec
	warn     *logging.Limiter
	// Bound addresses, known once Listen returned.
	GRPCAddr, HTTPAddr net.Addr
	grpcLn, httpLn     net.Listener
}

// New builds the servers. Interceptors run in the order given.
func New(cfg Config, svc Services, unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor,
	reg *prometheus.Registry, healthy func(context.Context) error, log *slog.Logger) (*Server, error) {
	lim := cfg.Limits.withDefaults()
	s := &Server{cfg: cfg, log: log, internal: newMemListener(), limits: lim,
		warn: logging.NewLimiter(10*time.Second, 1, 1024),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_server_connections_refused_total",
			Help: "Connections closed at once because their source address held --max-conns-per-source already, by listener.",
		}, []string{"listener"})}
	reg.MustRegister(s.refused)
	dec := newDecoding()
	s.grpc = grpc.NewServer(
		grpc.ForceServerCodecV2(dec),
		// The header limit first: refused before any other work.
		grpc.ChainUnaryInterceptor(append([]grpc.UnaryServerInterceptor{headerLimitUnary(lim.MaxHeaderBytes)}, unary...)...),
		grpc.ChainStreamInterceptor(append([]grpc.StreamServerInterceptor{headerLimitStream(lim.MaxHeaderBytes)}, stream...)...),
		grpc.MaxRecvMsgSize(lim.MaxMessageBytes),
		grpc.MaxHeaderListSize(uint32(headerCeiling(lim.MaxHeaderBytes))),
		grpc.ConnectionTimeout(lim.HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: lim.MaxConnectionIdle,
			Time:              lim.KeepaliveTime,
			Timeout:           lim.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: lim.KeepaliveMinTime, PermitWithoutStream: true}),
	)
	// Registered through decodeErrors (all of them must be): a request
	// that is not a valid message is the client's fault, InvalidArgument.
	for _, r := range registered(svc) {
		s.grpc.RegisterService(dec.decodeErrors(r.desc), r.impl)
	}

	gw, conn, err := s.gateway()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", validUTF8(gw))
	// The web UI calls the API in-process with the operator's token.
	webUI := ui.New(conn, log)
	mux.Handle(ui.Prefix, webUI)
	mux.HandleFunc("GET /cert", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(cfg.CA)
	})
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(proto.OpenAPI)
	})
	observe.Mount(mux, "herd-server", reg, healthy)
	s.http = &http.Server{Handler: deadlines(limitBody(mux, int64(lim.MaxMessageBytes)), lim.WriteTimeout), MaxHeaderBytes: lim.MaxHeaderBytes,
		ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout}
	s.http.RegisterOnShutdown(webUI.Close)
	return s, nil
}

// peerKey is the metadata key the REST gateway puts the HTTP client's
// address in. Only in-process calls (the gateway's) are believed, and the
// gateway never forwards a client's own header of that name.
const peerKey = "x-herd-peer"

// Peer names the address a call comes from: the gRPC client's, or for a
// REST call the HTTP client's.
func Peer(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if _, inProcess := p.Addr.(memAddr); inProcess {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get(peerKey); len(v) == 1 {
			return v[0]
		}
		return "in-process"
	}
	return p.Addr.String()
}

// headerMatcher is the gateway's default mapping of HTTP headers to gRPC
// metadata, except that no header becomes peerKey.
func headerMatcher(key string) (string, bool) {
	name, ok := runtime.DefaultHeaderMatcher(key)
	if ok && strings.EqualFold(name, peerKey) {
		return "", false
	}
	return name, ok
}

// refuse notes a connection closed for its source's count: a warning, at
// most one per source per 10 s, and the metric.
func (s *Server) refuse(listener string) func(netip.Addr) {
	return func(src netip.Addr) {
		s.refused.WithLabelValues(listener).Inc()
		if ok, held := s.warn.Allow(listener+" "+src.String(), time.Now()); ok {
			s.log.Warn("connection refused: too many open from one address", "listener", listener, "source", src.String(),
				"limit", s.limits.MaxConnsPerSource, "suppressed", held)
		}
	}
}

// gateway is the REST mapping of the gRPC API, talking to it in-process.
// Field names are the proto names (snake_case), as Tinkerbell v0.6's
// gateway wrote them.
func (s *Server) gateway() (http.Handler, *grpc.ClientConn, error) {
	gw := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}),
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			return metadata.Pairs(peerKey, r.RemoteAddr)
		}))
	conn, err := grpc.NewClient("passthrough:///herd-server",
		grpc.WithContextDialer(s.internal.Dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(s.limits.MaxMessageBytes), grpc.MaxCallSendMsgSize(s.limits.MaxMessageBytes)))
	if err != nil {
		return nil, nil, err
	}
	ctx := context.Background()
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		hardware.RegisterHardwareServiceHandler,
		template.RegisterTemplateServiceHandler,
		workflow.RegisterWorkflowServiceHandler,
		machine.RegisterMachineServiceHandler,
	} {
		if err := register(ctx, gw, conn); err != nil {
			return nil, nil, err
		}
	}
	return gw, conn, nil
}

// Listen binds both addresses, so callers learn the ports before Serve.
func (s *Server) Listen() error {
	g, err := listenTCP(context.Background(), s.cfg.GRPCAddr, s.cfg.ReusePort)
	if err != nil {
		return fmt.Errorf("gRPC listen on %s: %w%s", s.cfg.GRPCAddr, err, inUseHint(err, s.cfg.ReusePort))
	}
	h, err := listenTCP(context.Background(), s.cfg.HTTPAddr, s.cfg.ReusePort)
	if err != nil {
		g.Close()
		return fmt.Errorf("HTTP listen on %s: %w%s", s.cfg.HTTPAddr, err, inUseHint(err, s.cfg.ReusePort))
	}
	tlsConf := s.cfg.TLS.Clone()
	tlsConf.NextProtos = []string{"h2"}
	tlsConf.MinVersion = tls.VersionTLS12
	// The per-source limit counts TCP connections, before TLS.
	max := s.limits.MaxConnsPerSource
	s.grpcLn = tls.NewListener(limitSources(g, max, s.refuse("grpc")), tlsConf)
	s.httpLn = limitSources(h, max, s.refuse("http"))
	s.GRPCAddr, s.HTTPAddr = g.Addr(), h.Addr()
	return nil
}

// Serve runs until ctx ends, then stops gracefully (streams get a few
// seconds to finish).
func (s *Server) Serve(ctx context.Context) error {
	if s.grpcLn == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.log.Info("serving", "grpc", s.GRPCAddr.String(), "http", s.HTTPAddr.String())
	eg, ctx := errgroup.WithContext(ctx)
	// A stop that comes before Serve has begun on a listener makes Serve
	// return ErrServerStopped: that is a clean stop, not a failure.
	serveGRPC := func(ln net.Listener) error {
		if err := s.grpc.Serve(ln); !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	}
	eg.Go(func() error { return serveGRPC(s.grpcLn) })
	eg.Go(func() error { return serveGRPC(s.internal) })
	eg.Go(func() error {
		if err := s.http.Serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	eg.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.http.Shutdown(sctx)
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-sctx.Done():
			s.grpc.Stop()
		}
		return nil
	})
	return eg.Wait()
}
