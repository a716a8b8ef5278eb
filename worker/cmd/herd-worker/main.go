// Command herd-worker runs a machine's workflow actions as containers: the
// counterpart of Tinkerbell's tink-worker. It runs inside the OSIE on the
// machine being provisioned, asks herd-server (gRPC, TLS, the machine's
// own credential) for its actions, runs them one by one with the local
// Docker engine, or with runc alone (--runtime runc: the OSIE's, no
// engine), and reports each state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"

	"github.com/herd-metal/herd/pkg/config"
	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/version"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/worker/internal/docker"
	"github.com/herd-metal/herd/worker/internal/runc"
	"github.com/herd-metal/herd/worker/internal/runner"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd-worker:", err)
		os.Exit(1)
	}
}

type settings struct {
	server, certURL, caFile, token string
	caSHA256                       string
	id                             string
	registry, regUser, regPassword string
	registryCA, certsDir           string
	registryInsecure               bool
	runtime                        string
	runcBin, runcState, runcRoot   string
	runcNoPivot                    bool
	pull, network                  string
	privileged, power              bool
	dataDir, dockerHost            string
	poll, stopGrace, dockerWait    time.Duration
	callTimeout                    time.Duration
	keepaliveTime, keepaliveWait   time.Duration
	maxDataBytes                   int
	logLevel, logFormat            string
	metricsAddr                    string
}

// legacy are Tinkerbell v0.6 tink-worker's environment variables, read
// when neither the flag nor its HERD_ variable is set, so an OSIE set up
// for tink-worker can start herd-worker unchanged.
var legacy = map[string]string{
	"HERD_SERVER":            "TINKERBELL_GRPC_AUTHORITY",
	"HERD_CERT_URL":          "TINKERBELL_CERT_URL",
	"HERD_ID":                "WORKER_ID",
	"HERD_REGISTRY":          "DOCKER_REGISTRY",
	"HERD_REGISTRY_USER":     "REGISTRY_USERNAME",
	"HERD_REGISTRY_PASSWORD": "REGISTRY_PASSWORD",
}

func parse(args []string, lookup func(string) (string, bool), stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("herd-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herd-worker [flags]\n\n"+
			"Runs this machine's workflow actions as containers and reports them to herd-server.\n"+
			"Tinkerbell's TINKERBELL_GRPC_AUTHORITY, TINKERBELL_CERT_URL, WORKER_ID, DOCKER_REGISTRY,\n"+
			"REGISTRY_USERNAME and REGISTRY_PASSWORD are read when the HERD_ variable is not set.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&s.server, "server", "", "herd-server's gRPC address, host:port (port 42113)")
	fs.StringVar(&s.certURL, "cert-url", "", "URL of herd-server's CA certificate, e.g. http://10.1.0.1:42114/cert (used when --ca-file is empty)")
	fs.StringVar(&s.caFile, "ca-file", "", "PEM file of the CA to trust for herd-server")
	fs.StringVar(&s.caSHA256, "ca-sha256", "", "pin of herd-server's CA: the hex SHA-256 of its certificate (DER), as herd-boots puts it on the kernel line "+
		"(herd.ca_sha256=); the CA from --ca-file or --cert-url is refused unless it matches. Empty: no pin")
	fs.StringVar(&s.token, "token", "", "this machine's worker credential (herd-boots puts it on the kernel command line)")
	fs.StringVar(&s.id, "id", "", "this machine's hardware id (the worker id)")
	fs.StringVar(&s.registry, "registry", "", "registry prefixed to action images that name none, host[:port]")
	fs.StringVar(&s.regUser, "registry-user", "", "user name for --registry")
	fs.StringVar(&s.regPassword, "registry-password", "", "password for --registry (prefer the environment)")
	fs.StringVar(&s.registryCA, "registry-ca-file", "", "PEM file of the CA that signed --registry's certificate (a private registry); written to --registry-certs-dir/<registry>/ca.crt for the Docker engine; --runtime runc trusts it directly")
	fs.StringVar(&s.certsDir, "registry-certs-dir", docker.DefaultCertsDir, "where the Docker engine reads registry CAs (dockerd's certs.d)")
	fs.BoolVar(&s.registryInsecure, "registry-insecure", false, "--runtime runc: treat --registry as dockerd's --insecure-registry does (the docker runtime leaves it to dockerd): "+
		"HTTPS without checking its certificate, or plain HTTP; a --registry written http://... is insecure too")
	fs.StringVar(&s.runtime, "runtime", runtimeDocker, "what runs the action containers: docker (the Docker engine at --docker-host) "+
		"or runc (runc run directly, no engine: herd-worker pulls and unpacks the images into --runc-state-dir; the OSIE's)")
	fs.StringVar(&s.runcBin, "runc", "runc", "--runtime runc: the runc binary")
	fs.StringVar(&s.runcState, "runc-state-dir", runc.DefaultStateDir, "--runtime runc: where unpacked images (one per digest) and container bundles live")
	fs.StringVar(&s.runcRoot, "runc-root", runc.DefaultRuncRoot, "--runtime runc: runc's own state directory (runc --root; on a tmpfs)")
	fs.BoolVar(&s.runcNoPivot, "runc-no-pivot", false, "--runtime runc: run containers with runc run --no-pivot, needed when / is an initramfs "+
		"(pivot_root cannot leave it; the OSIE sets it)")
	fs.StringVar(&s.pull, "pull", docker.PullAlways, "when to pull action images: always (as Tinkerbell) or missing")
	fs.StringVar(&s.network, "network", "host", "network mode of the action containers (--runtime runc: host only)")
	fs.BoolVar(&s.privileged, "privileged", true, "run actions as privileged containers (they write disks)")
	fs.BoolVar(&s.power, "power-control", true, "reboot or power off the machine when an action asks in /workflow/power (the reboot action)")
	fs.StringVar(&s.dataDir, "data-dir", "/var/lib/herd-worker", "directory of the workflow data; each workflow's is bound at /workflow in its actions")
	fs.StringVar(&s.dockerHost, "docker-host", "unix:///var/run/docker.sock", "Docker engine address")
	fs.DurationVar(&s.dockerWait, "docker-wait", time.Minute, "how long to wait at start for the Docker engine (or runc) to answer")
	fs.DurationVar(&s.poll, "poll-interval", 5*time.Second, "pause between two asks for work")
	fs.DurationVar(&s.callTimeout, "call-timeout", 15*time.Second, "longest one call to herd-server may take before it is given up and sent again with backoff "+
		"(a call sent into a dead link would otherwise wait for TCP to give up, minutes)")
	fs.DurationVar(&s.keepaliveTime, "keepalive-time", 30*time.Second, "ping herd-server after this long without hearing from it, and drop the connection for a new one "+
		"when the ping is not answered within --keepalive-timeout; at least 10s, and not below herd-server's --grpc-keepalive-min-time (default 30s), "+
		"or the server closes the connection (too_many_pings)")
	fs.DurationVar(&s.keepaliveWait, "keepalive-timeout", 5*time.Second, "how long a keepalive ping, or data sent, may wait for herd-server's answer before the connection is dropped")
	fs.DurationVar(&s.stopGrace, "stop-grace", 10*time.Second, "time a stopped action container gets before it is killed")
	fs.IntVar(&s.maxDataBytes, "max-data-bytes", 1<<20, "largest workflow data an action may leave in /workflow/data")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&s.metricsAddr, "metrics-addr", "127.0.0.1:42180", "listen address of /metrics, /healthz and /version; empty: off")
	withLegacy := func(name string) (string, bool) {
		if v, ok := lookup(name); ok {
			return v, true
		}
		if old, ok := legacy[name]; ok {
			return lookup(old)
		}
		return "", false
	}
	if err := config.Parse(fs, args, "HERD_", withLegacy); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case s.server == "":
		return s, errors.New("no herd-server address: set --server or HERD_SERVER")
	case s.id == "":
		return s, errors.New("no worker id: set --id or HERD_ID to this machine's hardware id")
	}
	if err := checkTimes(s); err != nil {
		return s, err
	}
	if err := checkRuntime(s); err != nil {
		return s, err
	}
	if s.caSHA256 != "" {
		pin, err := connect.ParsePin(s.caSHA256)
		if err != nil {
			return s, fmt.Errorf("--ca-sha256 (HERD_CA_SHA256): %w", err)
		}
		s.caSHA256 = pin
	}
	return s, nil
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) error {
	s, err := parse(args, lookup, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	log = log.With("service", "herd-worker")
	log.Info("starting", "version", version.String(), "server", s.server, "hardware_id", s.id, "runtime", s.runtime, "docker_host", s.dockerHost, "registry", s.registry)

	// The OSIE starts herd-worker as soon as the network is up: the server
	// (its CA URL) and the local engine may not answer yet.
	var conn *grpc.ClientConn
	err = retry(ctx, log, "fetching herd-server's CA", func() error {
		var err error
		conn, err = connect.Dial(ctx, connect.Config{Authority: s.server, CertURL: s.certURL, CAFile: s.caFile, Token: s.token, CASHA256: s.caSHA256},
			dialOptions(s)...)
		return err
	})
	if ctx.Err() != nil {
		return nil // stopped while waiting
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, err := newRuntime(s, log)
	if err != nil {
		return err
	}
	defer rt.Close()
	wctx, cancel := context.WithTimeout(ctx, s.dockerWait)
	err = retry(wctx, log, "waiting for the container runtime ("+s.runtime+")", func() error { return rt.Ping(wctx) })
	cancel()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		log.Error("the container runtime does not answer; actions will fail until it does", "runtime", s.runtime, "error", err)
	}
	reg := observe.NewRegistry()
	w, err := runner.New(runner.Config{WorkerID: s.id, DataDir: s.dataDir, MaxDataBytes: s.maxDataBytes, Poll: s.poll, CallTimeout: s.callTimeout,
		StopGrace: s.stopGrace, Privileged: s.privileged, Power: power(s.power)},
		runner.NewClient(workflow.NewWorkflowServiceClient(conn)), rt, log, runner.NewMetrics(reg))
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	if s.metricsAddr != "" {
		ln, err := net.Listen("tcp", s.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics address: %w", err)
		}
		mux := http.NewServeMux()
		observe.Mount(mux, "herd-worker", reg, rt.Ping)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		log.Info("serving", "metrics", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// The values of --runtime.
const (
	runtimeDocker = "docker"
	runtimeRunc   = "runc"
)

// containerRuntime is what herd-worker needs of a runtime besides running
// containers: a health check and a close.
type containerRuntime interface {
	runner.Runtime
	Ping(ctx context.Context) error
	Close() error
}

// checkRuntime refuses a runtime, or a setting of it, that cannot work.
func checkRuntime(s settings) error {
	switch s.runtime {
	case runtimeDocker:
	case runtimeRunc:
		if s.network != "host" {
			return fmt.Errorf("--network (HERD_NETWORK) %q: --runtime runc runs actions on the host's network only: want host", s.network)
		}
	default:
		return fmt.Errorf("--runtime (HERD_RUNTIME) %q: want %s or %s", s.runtime, runtimeDocker, runtimeRunc)
	}
	return nil
}

// newRuntime is the container runtime --runtime names.
func newRuntime(s settings, log *slog.Logger) (containerRuntime, error) {
	if s.runtime == runtimeRunc {
		return runc.New(runc.Config{Runc: s.runcBin, StateDir: s.runcState, RuncRoot: s.runcRoot, NoPivot: s.runcNoPivot,
			Registry: s.registry, Username: s.regUser, Password: s.regPassword, Insecure: s.registryInsecure,
			RegistryCA: s.registryCA, PullPolicy: s.pull}, log)
	}
	return docker.New(docker.Config{Host: s.dockerHost, Registry: s.registry, Username: s.regUser, Password: s.regPassword,
		PullPolicy: s.pull, NetworkMode: s.network, RegistryCA: s.registryCA, CertsDir: s.certsDir}, log)
}

// dialOptions make the connection to herd-server find out that a link
// went dead and come back soon after it does: keepalive pings (grpc-go
// also sets TCP_USER_TIMEOUT to the keepalive timeout, so data left
// unacknowledged that long drops the connection too), new connections
// tried at least every 5 s (gRPC's default pace grows to two minutes),
// and calls made while there is no connection wait for the next one
// (within --call-timeout) instead of failing at once and sleeping the
// worker's whole backoff.
func dialOptions(s settings) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: s.keepaliveTime, Timeout: s.keepaliveWait, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 20 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
	}
}

// minKeepaliveTime is grpc-go's floor for a client's keepalive time: a
// smaller one would be raised to it silently.
const minKeepaliveTime = 10 * time.Second

// checkTimes refuses call and keepalive times the worker cannot use.
func checkTimes(s settings) error {
	switch {
	case s.callTimeout <= 0:
		return fmt.Errorf("--call-timeout (HERD_CALL_TIMEOUT) %v: want a positive duration", s.callTimeout)
	case s.keepaliveTime < minKeepaliveTime:
		return fmt.Errorf("--keepalive-time (HERD_KEEPALIVE_TIME) %v: want at least %v (gRPC's floor; herd-server's default --grpc-keepalive-min-time is 30s)", s.keepaliveTime, minKeepaliveTime)
	case s.keepaliveWait <= 0:
		return fmt.Errorf("--keepalive-timeout (HERD_KEEPALIVE_TIMEOUT) %v: want a positive duration", s.keepaliveWait)
	}
	return nil
}

// retry calls fn until it succeeds or ctx ends, pausing 1s, 2s, ... 30s.
func retry(ctx context.Context, log *slog.Logger, what string, fn func() error) error {
	d := time.Second
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.Warn(what+" failed; retrying", "error", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
		d = min(2*d, 30*time.Second)
	}
}

// power is the machine's power control: reboot(2) after syncing disks.
func power(enabled bool) func(context.Context, string) error {
	if !enabled {
		return nil
	}
	return func(_ context.Context, mode string) error {
		syscall.Sync()
		cmd := syscall.LINUX_REBOOT_CMD_RESTART
		if mode == "poweroff" {
			cmd = syscall.LINUX_REBOOT_CMD_POWER_OFF
		}
		if err := syscall.Reboot(cmd); err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		return nil
	}
}
