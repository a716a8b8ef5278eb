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
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/proto"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// MaxMessageBytes bounds one gRPC message or REST body.
const MaxMessageBytes = 4 << 20

// Config is where and how to listen.
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// TLS is the server side of gRPC.
	TLS *tls.Config
	// CA is the PEM bundle served at /cert.
	CA []byte
}

// Services are the gRPC implementations.
type Services struct {
	Hardware hardware.HardwareServiceServer
	Template template.TemplateServiceServer
	Workflow workflow.WorkflowServiceServer
}

// Server is the listening API.
type Server struct {
	cfg      Config
	grpc     *grpc.Server
	http     *http.Server
	internal *memListener
	log      *slog.Logger
	// Bound addresses, known once Listen returned.
	GRPCAddr, HTTPAddr net.Addr
	grpcLn, httpLn     net.Listener
}

// New builds the servers. Interceptors run in the order given.
func New(cfg Config, svc Services, unary []grpc.UnaryServerInterceptor, stream []grpc.StreamServerInterceptor,
	reg *prometheus.Registry, healthy func(context.Context) error, log *slog.Logger) (*Server, error) {
	s := &Server{cfg: cfg, log: log, internal: newMemListener()}
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
	)
	hardware.RegisterHardwareServiceServer(s.grpc, svc.Hardware)
	template.RegisterTemplateServiceServer(s.grpc, svc.Template)
	workflow.RegisterWorkflowServiceServer(s.grpc, svc.Workflow)

	gw, err := s.gateway()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", http.MaxBytesHandler(gw, MaxMessageBytes))
	mux.HandleFunc("GET /cert", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(cfg.CA)
	})
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(proto.OpenAPI)
	})
	observe.Mount(mux, "herd-server", reg, healthy)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	return s, nil
}

// gateway is the REST mapping of the gRPC API, talking to it in-process.
// Field names are the proto names (snake_case), as Tinkerbell v0.6's
// gateway wrote them.
func (s *Server) gateway() (http.Handler, error) {
	gw := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}))
	conn, err := grpc.NewClient("passthrough:///herd-server",
		grpc.WithContextDialer(s.internal.Dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes)))
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		hardware.RegisterHardwareServiceHandler,
		template.RegisterTemplateServiceHandler,
		workflow.RegisterWorkflowServiceHandler,
	} {
		if err := register(ctx, gw, conn); err != nil {
			return nil, err
		}
	}
	return gw, nil
}

// Listen binds both addresses, so callers learn the ports before Serve.
func (s *Server) Listen() error {
	g, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("gRPC listen on %s: %w", s.cfg.GRPCAddr, err)
	}
	h, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		g.Close()
		return fmt.Errorf("HTTP listen on %s: %w", s.cfg.HTTPAddr, err)
	}
	tlsConf := s.cfg.TLS.Clone()
	tlsConf.NextProtos = []string{"h2"}
	tlsConf.MinVersion = tls.VersionTLS12
	s.grpcLn, s.httpLn = tls.NewListener(g, tlsConf), h
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
	eg.Go(func() error { return s.grpc.Serve(s.grpcLn) })
	eg.Go(func() error { return s.grpc.Serve(s.internal) })
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
