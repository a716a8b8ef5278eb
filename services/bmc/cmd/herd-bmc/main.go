// Command herd-bmc runs BMC jobs: it takes them from herd-server over
// gRPC with the BMC agent's token (herd-server --bmc-token), reaches the
// machines' BMCs by IPMI or Redfish, and reports each job's states back.
// It runs where the BMC network is reachable; it holds no state and
// touches no database.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/connectivity"

	"github.com/herd-metal/herd/pkg/config"
	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/spec"
	"github.com/herd-metal/herd/pkg/version"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/bmc/internal/driver"
	"github.com/herd-metal/herd/services/bmc/internal/ipmi"
	"github.com/herd-metal/herd/services/bmc/internal/redfish"
	"github.com/herd-metal/herd/services/bmc/internal/runner"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr, nil)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd-bmc:", err)
		os.Exit(1)
	}
}

type settings struct {
	httpAddr            string
	conn                connect.Flags
	agent               string
	global              int
	callTimeout         time.Duration
	attempts            int
	redfishScheme       string
	redfishVerifyTLS    bool
	logLevel, logFormat string
	showVersion         bool
	healthcheck         bool
}

func parse(args []string, lookup func(string) (string, bool), stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("herd-bmc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herd-bmc [flags] [healthcheck]\n\n"+
			"Runs the BMC jobs herd-server hands out (power, boot device, netboot, power checks).\n"+
			"healthcheck exits 0 when the herd-bmc listening on --bmc-http-addr answers /healthz.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	host, _ := os.Hostname()
	fs.StringVar(&s.httpAddr, "bmc-http-addr", ":42115", "HTTP listen address: /metrics, /healthz, /version")
	s.conn.Register(fs, "the BMC agent's token (herd-server --bmc-token)")
	fs.StringVar(&s.agent, "agent", host, "this herd-bmc's name in the jobs it takes and herd-server's log")
	fs.IntVar(&s.global, "max-jobs", 16, "jobs run at once over all BMCs (one at a time per BMC whatever this says)")
	fs.DurationVar(&s.callTimeout, "bmc-call-timeout", 20*time.Second, "bound of one call to a BMC (session, command, close)")
	fs.IntVar(&s.attempts, "attempts", 3, "attempts per job, while its deadline allows (wrong credentials and refusals are not retried)")
	fs.StringVar(&s.redfishScheme, "redfish-scheme", "https", "https, or http for BMCs behind a TLS-terminating proxy")
	fs.BoolVar(&s.redfishVerifyTLS, "redfish-verify-tls", false, "check Redfish BMCs' TLS certificates against the system CAs (most BMCs carry self-signed ones)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "json", "json or text")
	fs.BoolVar(&s.showVersion, "version", false, "print the version and exit")
	if err := config.Parse(fs, args, "HERD_", connect.Lookup(lookup)); err != nil {
		return s, err
	}
	switch {
	case fs.NArg() == 1 && fs.Arg(0) == "healthcheck":
		s.healthcheck = true
	case fs.NArg() > 0:
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	case spec.AgentNameProblem(s.agent) != "":
		return s, fmt.Errorf("--agent %q: %s", s.agent, spec.AgentNameProblem(s.agent))
	case s.global < 1:
		return s, fmt.Errorf("--max-jobs %d: want at least 1", s.global)
	case s.attempts < 1:
		return s, fmt.Errorf("--attempts %d: want at least 1", s.attempts)
	case s.callTimeout < 100*time.Millisecond:
		return s, fmt.Errorf("--bmc-call-timeout %v: want at least 100ms", s.callTimeout)
	case s.redfishScheme != "https" && s.redfishScheme != "http":
		return s, fmt.Errorf("--redfish-scheme %q: want https or http", s.redfishScheme)
	}
	return s, nil
}

// run wires herd-bmc and works until ctx ends. ready, if not nil, gets
// the HTTP listener's address once it listens (for tests).
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer, ready func(net.Addr)) error {
	s, err := parse(args, lookup, stderr)
	if err != nil {
		return err
	}
	if s.showVersion {
		fmt.Fprintln(stderr, "herd-bmc", version.String())
		return nil
	}
	if s.healthcheck {
		return observe.Probe(ctx, s.httpAddr)
	}
	log, err := logging.New(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	cc, err := s.conn.Config()
	if err != nil {
		return err
	}
	if cc.Token == "" {
		return errors.New("no token: herd-bmc needs the BMC agent's token (herd-server --bmc-token; HERD_TOKEN or --token-file)")
	}
	conn, err := connect.Dial(ctx, cc, connect.QuickReconnect)
	if err != nil {
		return err
	}
	defer conn.Close()

	reg := observe.NewRegistry()
	m := newMetrics(reg)
	src := &serverSource{client: machine.NewBMCAgentServiceClient(conn), agent: s.agent, log: log,
		connected: func() bool { return conn.GetState() == connectivity.Ready }}
	drivers := map[driver.Protocol]driver.Driver{
		driver.IPMI:    &ipmi.Driver{Timeout: s.callTimeout},
		driver.Redfish: &redfish.Driver{Timeout: s.callTimeout, Scheme: s.redfishScheme, Insecure: !s.redfishVerifyTLS},
	}
	r := runner.New(runner.Config{Global: s.global, Policy: runner.Policy{MaxAttempts: s.attempts}},
		drivers, m.observe(src), log)

	ln, err := net.Listen("tcp", s.httpAddr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	observe.Mount(mux, "herd-bmc", reg, src.health)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	if ready != nil {
		ready(ln.Addr())
	}
	log.Info("herd-bmc running", "http", ln.Addr().String(), "server", s.conn.Server, "agent", s.agent,
		"max_jobs", s.global, "version", version.Version)

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	eg.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	eg.Go(func() error { return r.Run(ctx) })
	err = eg.Wait()
	log.Info("herd-bmc stopped")
	return err
}
