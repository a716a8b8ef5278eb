// Command herd-server is herd's state server: hardware, templates and
// workflows in PostgreSQL, served over Tinkerbell v0.6's gRPC API (TLS,
// port 42113) and its REST gateway (port 42114).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/herd-metal/herd/pkg/certs"
	"github.com/herd-metal/herd/pkg/config"
	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/version"
	"github.com/herd-metal/herd/services/server/internal/api"
	"github.com/herd-metal/herd/services/server/internal/auth"
	"github.com/herd-metal/herd/services/server/internal/keyring"
	"github.com/herd-metal/herd/services/server/internal/store"
	"github.com/herd-metal/herd/services/server/internal/transport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd-server:", err)
		os.Exit(1)
	}
}

type settings struct {
	grpcAddr, httpAddr   string
	dbURL, stateDir      string
	bmcKeyFile           string
	authToken, tokenFile string
	serviceToken         string
	serviceTokenFile     string
	bmcToken             string
	bmcTokenFile         string
	bmcJobTimeout        time.Duration
	bmcPollInterval      time.Duration
	workerTokenLifetime  time.Duration
	limits               transport.Limits
	reusePort            bool
	noAuth               bool
	tlsCert, tlsKey      string
	tlsCA, tlsHosts      string
	logLevel, logFormat  string
	maxDataVersions      int
	maxDataBytes         int
	dbMaxConns           int
	timeoutCheck         time.Duration
	sourceCheck          string
	trustedSources       string
	sources              auth.SourcePolicy
}

func parse(args []string, lookup func(string) (string, bool), stderr io.Writer) (settings, []string, error) {
	var s settings
	fs := flag.NewFlagSet("herd-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herd-server [flags] [serve|migrate|import tink|version|healthcheck]\n\n"+
			"serve (default) applies pending migrations and serves the API; migrate only applies them;\n"+
			"import tink --from URL imports a Tinkerbell v0.6 database (herd-server import tink --help);\n"+
			"healthcheck exits 0 when the server listening on --http-addr answers /healthz (for container health checks).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&s.grpcAddr, "grpc-addr", ":42113", "gRPC (TLS) listen address")
	fs.StringVar(&s.httpAddr, "http-addr", ":42114", "HTTP listen address: REST gateway, /cert, /openapi.json, /metrics, /healthz, /version")
	fs.StringVar(&s.dbURL, "db-url", "postgres://herd@localhost:5432/herd?sslmode=disable", "PostgreSQL connection URL (lib/pq)")
	fs.StringVar(&s.stateDir, "state-dir", "/var/lib/herd", "directory for what the server generates: CA, server certificate, worker key, BMC credential key")
	fs.StringVar(&s.bmcKeyFile, "bmc-key-file", "", "key file sealing the stored BMC credentials (lines \"ID BASE64-KEY\", the first seals; see docs/security.md for rotation); empty: STATE-DIR/bmc.key, made at first start")
	fs.StringVar(&s.authToken, "auth-token", "", "admin bearer token (prefer --auth-token-file or the environment over a flag)")
	fs.StringVar(&s.tokenFile, "auth-token-file", "", "file holding the admin bearer token")
	fs.StringVar(&s.serviceToken, "service-token", "", "bearer token of herd's services (herd-boots, herd-metadata): reads and watches hardware and records boot events, nothing else; empty: none, they use the admin token (prefer --service-token-file or the environment over a flag)")
	fs.StringVar(&s.serviceTokenFile, "service-token-file", "", "file holding the service token")
	fs.StringVar(&s.bmcToken, "bmc-token", "", "bearer token of herd-bmc: takes BMC jobs (with the BMC's decrypted credential) and reports them, nothing else; empty: no herd-bmc can connect (prefer --bmc-token-file or the environment over a flag)")
	fs.StringVar(&s.bmcTokenFile, "bmc-token-file", "", "file holding the BMC agent's token")
	fs.DurationVar(&s.bmcJobTimeout, "bmc-job-timeout", api.DefaultJobTimeout, "a BMC job not ended this long after it was asked ends TIMEOUT, all attempts included")
	fs.DurationVar(&s.bmcPollInterval, "bmc-poll-interval", time.Minute, "how often the power state of every machine with a BMC is checked (a status job each); 0: never")
	fs.DurationVar(&s.workerTokenLifetime, "worker-token-lifetime", 24*time.Hour, "how long a machine's worker credential stays valid (boots hands out fresh ones, renewed every quarter of this); at least 4s")
	fs.BoolVar(&s.reusePort, "reuse-port", false, "bind the gRPC and HTTP ports with SO_REUSEPORT, so replicas on one host (host networking: docker-compose --scale herd-server=N) share them; "+
		"the kernel spreads new connections over the replicas, and clients reconnect to the others when one stops. Only processes of the same user can share a port")
	fs.BoolVar(&s.noAuth, "insecure-no-auth", false, "accept every call without credentials (legacy Tinkerbell v0.6 clients only)")
	d := transport.DefaultLimits
	fs.DurationVar(&s.limits.ReadHeaderTimeout, "http-read-header-timeout", d.ReadHeaderTimeout, "HTTP: time a client has to send a request's headers")
	fs.DurationVar(&s.limits.ReadTimeout, "http-read-timeout", d.ReadTimeout, "HTTP: time a client has to send a whole request, headers and body")
	fs.DurationVar(&s.limits.WriteTimeout, "http-write-timeout", d.WriteTimeout, "HTTP: the longest one write of a response may wait for a client that does not read (REST streams get it for each write, so they may last)")
	fs.DurationVar(&s.limits.IdleTimeout, "http-idle-timeout", d.IdleTimeout, "HTTP: how long a keep-alive connection may wait for its next request")
	fs.DurationVar(&s.limits.HandshakeTimeout, "grpc-handshake-timeout", d.HandshakeTimeout, "gRPC: time a new connection has for its TLS and HTTP/2 handshake")
	fs.DurationVar(&s.limits.MaxConnectionIdle, "grpc-max-connection-idle", d.MaxConnectionIdle, "gRPC: a connection without a call for this long is closed (GOAWAY; clients reconnect)")
	fs.DurationVar(&s.limits.KeepaliveTime, "grpc-keepalive-time", d.KeepaliveTime, "gRPC: the server pings a connection quiet for this long (keeps NAT state of long watches, finds dead peers)")
	fs.DurationVar(&s.limits.KeepaliveTimeout, "grpc-keepalive-timeout", d.KeepaliveTimeout, "gRPC: a connection that does not answer a ping within this is closed")
	fs.DurationVar(&s.limits.KeepaliveMinTime, "grpc-keepalive-min-time", d.KeepaliveMinTime, "gRPC: a client pinging more often than this is disconnected")
	fs.IntVar(&s.limits.MaxConnsPerSource, "max-conns-per-source", d.MaxConnsPerSource, "connections one source address may hold open at once, on each of the gRPC and HTTP listeners (0: no limit); mind clients behind one NAT address")
	fs.IntVar(&s.limits.MaxMessageBytes, "max-message-bytes", d.MaxMessageBytes, "largest gRPC message and REST request body accepted, in bytes (larger: ResourceExhausted / 413)")
	fs.IntVar(&s.limits.MaxHeaderBytes, "max-header-bytes", d.MaxHeaderBytes, "largest request headers accepted, in bytes: HTTP (431 beyond) and gRPC's header list")
	fs.StringVar(&s.tlsCert, "tls-cert", "", "server certificate PEM; empty: generated in the state directory")
	fs.StringVar(&s.tlsKey, "tls-key", "", "server key PEM (with --tls-cert)")
	fs.StringVar(&s.tlsCA, "tls-ca", "", "CA bundle served at /cert (with --tls-cert; default: the certificate file itself)")
	fs.StringVar(&s.tlsHosts, "tls-hosts", "", "extra comma-separated names and IPs for the generated certificate (localhost, the host name and local addresses are always in)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "json", "json or text")
	fs.IntVar(&s.dbMaxConns, "db-max-conns", store.DefaultMaxConns, "most connections to PostgreSQL")
	fs.IntVar(&s.maxDataVersions, "max-data-versions", 16, "workflow data versions kept per workflow")
	fs.IntVar(&s.maxDataBytes, "max-data-bytes", 1<<20, "largest workflow data document, in bytes")
	fs.DurationVar(&s.timeoutCheck, "timeout-check", time.Second, "how often the server enforces action and global timeouts")
	fs.StringVar(&s.sourceCheck, "worker-source-check", "strict", "strict: a worker credential is taken only from an address its machine's hardware record holds "+
		"(an interface IP) or from --worker-trusted-sources, so a credential read off another machine's script is useless elsewhere; "+
		"off: from any address (machines behind NAT or a relay that --worker-trusted-sources cannot name; re-opens credential theft, docs/security.md)")
	fs.StringVar(&s.trustedSources, "worker-trusted-sources", "", "comma-separated addresses or CIDRs (NAT gateways, relays) from which a worker credential of any machine is taken")
	if err := config.Parse(fs, args, "HERD_", lookup); err != nil {
		return s, nil, err
	}
	switch s.sourceCheck {
	case "strict":
	case "off":
		s.sources.Off = true
	default:
		return s, nil, fmt.Errorf("--worker-source-check %q: want strict or off", s.sourceCheck)
	}
	for _, v := range strings.Split(s.trustedSources, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		pf, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return s, nil, fmt.Errorf("--worker-trusted-sources: %q is neither an address nor a CIDR", v)
			}
			pf = netip.PrefixFrom(a, a.BitLen())
		}
		s.sources.Trusted = append(s.sources.Trusted, pf.Masked())
	}
	if s.tokenFile != "" && s.authToken == "" {
		b, err := os.ReadFile(s.tokenFile)
		if err != nil {
			return s, nil, fmt.Errorf("auth token file: %w", err)
		}
		s.authToken = strings.TrimSpace(string(b))
	}
	if s.serviceTokenFile != "" && s.serviceToken == "" {
		b, err := os.ReadFile(s.serviceTokenFile)
		if err != nil {
			return s, nil, fmt.Errorf("service token file: %w", err)
		}
		s.serviceToken = strings.TrimSpace(string(b))
	}
	if s.bmcTokenFile != "" && s.bmcToken == "" {
		b, err := os.ReadFile(s.bmcTokenFile)
		if err != nil {
			return s, nil, fmt.Errorf("bmc token file: %w", err)
		}
		s.bmcToken = strings.TrimSpace(string(b))
	}
	if s.bmcPollInterval < 0 {
		return s, nil, fmt.Errorf("--bmc-poll-interval %v: want 0 (off) or more", s.bmcPollInterval)
	}
	if s.bmcJobTimeout < time.Second {
		return s, nil, fmt.Errorf("--bmc-job-timeout %v: want at least 1s", s.bmcJobTimeout)
	}
	if (s.tlsCert == "") != (s.tlsKey == "") {
		return s, nil, errors.New("--tls-cert and --tls-key go together")
	}
	return s, fs.Args(), nil
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) error {
	s, rest, err := parse(args, lookup, stderr)
	if err != nil {
		return err
	}
	cmd := "serve"
	if len(rest) > 0 {
		cmd = rest[0]
	}
	log, err := logging.New(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	var imp importSettings
	switch cmd {
	case "version":
		fmt.Fprintln(stderr, "herd-server", version.String())
		return nil
	case "healthcheck":
		return observe.Probe(ctx, s.httpAddr)
	case "migrate", "serve":
	case "import":
		if imp, err = parseImport(rest[1:], lookup, stderr); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown command %q: want serve, migrate, import, version or healthcheck", cmd)
	}

	st, err := store.Open(ctx, s.dbURL, store.Options{MaxDataVersions: s.maxDataVersions, MaxDataBytes: s.maxDataBytes, MaxConns: s.dbMaxConns, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	if cmd == "migrate" {
		log.Info("migrations applied")
		return nil
	}
	if cmd == "import" {
		return runImport(ctx, imp, st, os.Stdout)
	}
	if !s.noAuth && s.authToken == "" {
		return errors.New("no admin token: set HERD_AUTH_TOKEN or --auth-token-file, or pass --insecure-no-auth for legacy clients")
	}
	if s.noAuth {
		log.Warn("authentication is OFF: anyone who reaches the API can change everything")
	}
	if s.sources.Off && !s.noAuth {
		log.Warn("worker source check is OFF (--worker-source-check=off): a worker credential is taken from any address, a stolen one too")
	}
	files, err := loadStateFiles(ctx, s, st, log)
	if err != nil {
		return err
	}
	hub := store.NewHub(s.dbURL, log)
	authn, err := auth.New(auth.Config{AdminToken: s.authToken, ServiceToken: s.serviceToken, BMCToken: s.bmcToken, WorkerKey: files.workerKey,
		WorkerLifetime: s.workerTokenLifetime, Disabled: s.noAuth, Generations: st,
		Sources: s.sources, Owners: st, Peer: transport.Peer,
		Notifier: hub, Channel: store.ChannelHardware, Log: log})
	if err != nil {
		return err
	}
	if s.serviceToken == "" && !s.noAuth {
		log.Info("no service token (--service-token-file): herd-boots and herd-metadata need the admin token")
	}

	reg := observe.NewRegistry()
	reg.MustRegister(powerCollector{st: st, log: log})
	ic := api.NewInterceptors(log, reg, authn, transport.Peer)
	srv, err := transport.New(
		transport.Config{GRPCAddr: s.grpcAddr, HTTPAddr: s.httpAddr, TLS: files.tls, CA: files.caPEM, Limits: s.limits, ReusePort: s.reusePort},
		transport.Services{
			Hardware: api.NewHardware(st, hub, authn, log),
			Template: api.NewTemplate(st, log),
			Workflow: api.NewWorkflow(st, hub, log),
			Machine:  api.NewMachine(st, files.bmcKeys, hub, s.bmcJobTimeout, log),
			BMCAgent: api.NewBMCAgent(st, files.bmcKeys, hub, log),
		},
		[]grpc.UnaryServerInterceptor{ic.Unary},
		[]grpc.StreamServerInterceptor{ic.Stream},
		reg, st.Ping, log)
	if err != nil {
		return err
	}

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return hub.Run(ctx) })
	eg.Go(func() error { return authn.Run(ctx) })
	eg.Go(func() error { return srv.Serve(ctx) })
	eg.Go(func() error { return enforceTimeouts(ctx, st, s.timeoutCheck, log) })
	if s.bmcPollInterval > 0 {
		eg.Go(func() error { return pollPower(ctx, st, s.bmcPollInterval, log) })
	}
	return eg.Wait()
}

// enforceTimeouts ends workflows whose action or global deadline passed,
// also when their worker has gone silent.
func enforceTimeouts(ctx context.Context, st *store.Store, every time.Duration, log *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			n, err := st.ExpireWorkflows(ctx, now)
			if err != nil && ctx.Err() == nil {
				log.Error("timeout check failed", "error", err)
			}
			if n > 0 {
				log.Info("workflows timed out by the server", "count", n)
			}
			jobs, err := st.ExpireBMCJobs(ctx, now)
			if err != nil && ctx.Err() == nil {
				log.Error("bmc job timeout check failed", "error", err)
			}
			for _, j := range jobs {
				log.Warn("bmc job timed out by the server", "job", j.ID, "hardware_id", j.HardwareID, "kind", j.Kind, "reason", j.Message)
			}
		}
	}
}

// stateFiles are what the server reads from, or makes in, its state
// directory.
type stateFiles struct {
	workerKey []byte
	bmcKeys   *keyring.Keyring
	tls       *tls.Config
	caPEM     []byte
}

// loadStateFiles reads the state directory's files, making those missing,
// under the directory's lock: replicas sharing one directory may start at
// once, and then the first makes each file and the others read it (two
// worker keys would make each replica refuse the other's credentials).
func loadStateFiles(ctx context.Context, s settings, st *store.Store, log *slog.Logger) (stateFiles, error) {
	var f stateFiles
	unlock, err := lockStateDir(s.stateDir, log)
	if err != nil {
		return f, err
	}
	defer unlock()
	if f.workerKey, err = loadOrCreateKey(filepath.Join(s.stateDir, "worker.key")); err != nil {
		return f, err
	}
	if f.bmcKeys, err = bmcKeys(ctx, s, st, log); err != nil {
		return f, err
	}
	f.tls, f.caPEM, err = serverTLS(s)
	return f, err
}

// serverTLS loads the operator's certificate, or creates a CA and a server
// certificate in the state directory.
func serverTLS(s settings) (*tls.Config, []byte, error) {
	certFile, keyFile, caFile := s.tlsCert, s.tlsKey, s.tlsCA
	if certFile == "" {
		hosts := certs.LocalHosts()
		for _, h := range strings.Split(s.tlsHosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
		f, err := certs.Ensure(s.stateDir, hosts, time.Now())
		if err != nil {
			return nil, nil, err
		}
		certFile, keyFile, caFile = f.Cert, f.Key, f.CA
	}
	if caFile == "" {
		caFile = certFile
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS certificate: %w", err)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS CA bundle: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}, ca, nil
}

// bmcKeys loads the keyring that seals BMC credentials and reseals under
// its current key what older keys sealed (a rotation). A credential no
// key opens is logged and left as it is: the server still starts, and
// jobs that need it fail naming it.
func bmcKeys(ctx context.Context, s settings, st *store.Store, log *slog.Logger) (*keyring.Keyring, error) {
	path, create := s.bmcKeyFile, false
	if path == "" {
		path, create = filepath.Join(s.stateDir, "bmc.key"), true
	}
	keys, err := keyring.Load(path, create)
	if err != nil {
		return nil, err
	}
	n, err := st.ResealBMCCredentials(ctx, keys.Current(), func(c store.SealedCredential) (string, []byte, error) {
		plain, err := keys.Open(c.KeyID, api.BMCSealContext(c.Name), c.Sealed)
		if err != nil {
			return "", nil, err
		}
		return keys.Seal(api.BMCSealContext(c.Name), plain)
	})
	if n > 0 {
		log.Info("bmc credentials resealed under the current key", "count", n, "key_id", keys.Current())
	}
	if err != nil {
		if store.Unavailable(err) {
			return nil, err
		}
		log.Error("bmc credentials that no key in the key file opens: restore the key that sealed them, or set them again", "key_file", path, "error", err)
	}
	return keys, nil
}

// loadOrCreateKey returns the worker credential key, creating it once.
func loadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("worker key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("worker key: %w", err)
	}
	return b, nil
}
