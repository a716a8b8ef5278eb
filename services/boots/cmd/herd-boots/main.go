// Command herd-boots network-boots machines: DHCP (reservation or proxy
// mode), TFTP for the iPXE binaries, HTTP iPXE scripts and a syslog
// receiver, all answered from an in-memory inventory that herd-server's
// hardware Watch keeps current.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/herd-metal/herd/pkg/bootnotes"
	"github.com/herd-metal/herd/pkg/certs"
	"github.com/herd-metal/herd/pkg/config"
	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/version"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/boots/internal/dhcp"
	"github.com/herd-metal/herd/services/boots/internal/httpd"
	"github.com/herd-metal/herd/services/boots/internal/leases"
	"github.com/herd-metal/herd/services/boots/internal/script"
	"github.com/herd-metal/herd/services/boots/internal/syslog"
	"github.com/herd-metal/herd/services/boots/internal/tftp"
	"github.com/herd-metal/herd/services/boots/internal/timeservers"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd-boots:", err)
		os.Exit(1)
	}
}

type settings struct {
	conn                                      connect.Flags
	publicIP                                  string
	httpAddr, publicURL                       string
	httpsAddr, tlsCert, tlsKey, ipxeHTTPSURL  string
	workerCACert                              string
	httpLimits                                httpd.Limits
	dhcpMode, dhcpIface, dhcpAddr, pxeAddr    string
	tftpAddr, syslogAddr                      string
	syslogRate                                float64
	syslogBurst                               int
	ipxeDir, osieDir                          string
	osieURL, osieKernel, osieInitrd           string
	ipxeParams, userClass                     string
	grpcAuthority, workerCertURL, metadataURL string
	registry, syslogHost, console, domain     string
	registryUser, registryPassword            string
	leaseTime, timeServerRefresh              time.Duration
	requireIP                                 bool
	logLevel, logFormat                       string
	pprofAddr                                 string
	showVersion                               bool
	healthcheck                               bool
}

func parse(args []string, lookup func(string) (string, bool), stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("herd-boots", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herd-boots [flags] [healthcheck]\n\n"+
			"Answers machines' network boot: DHCP, TFTP (iPXE binaries), HTTP iPXE scripts, syslog.\n"+
			"Addresses set to \"off\" disable that service.\n"+
			"healthcheck exits 0 when the herd-boots listening on --http-addr answers /healthz (for container health checks).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	s.conn.Register(fs, "herd-server service token (herd-server --service-token; the admin token works too), needed to watch the hardware")
	fs.StringVar(&s.publicIP, "public-ip", "", "boots' IPv4 address as machines reach it: DHCP server identifier, TFTP next-server, script URLs (required)")
	fs.StringVar(&s.httpAddr, "http-addr", ":80", "HTTP listen address: iPXE scripts, /events, /ipxe/, /osie/, /metrics, /healthz, /version")
	fs.StringVar(&s.publicURL, "http-public-url", "", "boots' HTTP root as machines reach it (default http://PUBLIC-IP[:port of --http-addr])")
	fs.StringVar(&s.httpsAddr, "https-addr", "off", "HTTPS listen address, serving what --http-addr serves with the same limits (needs --tls-cert and --tls-key), or off")
	fs.StringVar(&s.tlsCert, "tls-cert", "", "PEM certificate (chain) of --https-addr; the names machines reach boots by must be in it, and iPXE must trust its CA (built with TRUST=)")
	fs.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&s.ipxeHTTPSURL, "ipxe-https-url", "", "boots' HTTPS root as machines reach it, e.g. https://10.0.5.1 (needs --https-addr). "+
		"Set, it opts in: iPXE that says in DHCP option 175 it has HTTPS gets its script, kernel and initrd over HTTPS; other firmware keeps HTTP. "+
		"Only for iPXE built to trust the CA of --tls-cert (docs/security.md)")
	fs.StringVar(&s.workerCACert, "worker-ca-cert", "", "PEM file of the one CA certificate the OSIE's worker must find at --worker-cert-url (herd-server's STATE-DIR/ca.pem): "+
		"its SHA-256 goes on the kernel line as herd.ca_sha256= and the worker refuses any other CA. Empty: no pin")
	d := httpd.DefaultLimits
	fs.DurationVar(&s.httpLimits.ReadHeader, "http-read-header-timeout", d.ReadHeader, "how long an HTTP client has to send a request's headers")
	fs.DurationVar(&s.httpLimits.Read, "http-read-timeout", d.Read, "how long an HTTP client has to send a whole request, body included")
	fs.DurationVar(&s.httpLimits.Write, "http-write-timeout", d.Write, "the longest an HTTP response may take to write; "+
		"downloads (/ipxe/, /osie/) may take longer as long as each 256 KiB of them goes out within it")
	fs.DurationVar(&s.httpLimits.Idle, "http-idle-timeout", d.Idle, "how long an idle keep-alive HTTP connection stays open")
	fs.IntVar(&s.httpLimits.PerSource, "http-max-conns-per-source", d.PerSource, "HTTP connections one source address may hold open at once, "+
		"beyond which it gets a 503 (behind NAT all machines are one address: raise it); 0: no limit")
	fs.IntVar(&s.httpLimits.MaxHeaderBytes, "http-max-header-bytes", d.MaxHeaderBytes, "largest HTTP request line and headers accepted, in bytes (431 beyond)")
	fs.Int64Var(&s.httpLimits.MaxBodyBytes, "http-max-body-bytes", d.MaxBodyBytes, "largest HTTP request body accepted, in bytes (413 beyond; only /events takes one, never read past 4 KiB)")
	fs.StringVar(&s.dhcpMode, "dhcp-mode", "reservation", "reservation (answer known MACs with their address and boot options) or proxy (proxyDHCP: boot options only)")
	fs.StringVar(&s.dhcpIface, "dhcp-interface", "", "network interface DHCP serves on, and only on (required unless --dhcp-addr off)")
	fs.StringVar(&s.dhcpAddr, "dhcp-addr", "0.0.0.0:67", "DHCP listen address (keep 0.0.0.0 to receive broadcasts; the interface limits the scope), or off")
	fs.StringVar(&s.pxeAddr, "pxe-addr", "0.0.0.0:4011", "proxyDHCP boot server listen address (proxy mode only; on --dhcp-interface), or off")
	fs.StringVar(&s.tftpAddr, "tftp-addr", "", "TFTP listen address (default PUBLIC-IP:69), or off")
	fs.StringVar(&s.syslogAddr, "syslog-addr", "", "syslog (UDP) listen address (default PUBLIC-IP:514), or off")
	fs.Float64Var(&s.syslogRate, "syslog-rate", 100, "syslog datagrams per second one source address may send on average (beyond it and --syslog-burst they are counted and dropped); 0: no limit")
	fs.IntVar(&s.syslogBurst, "syslog-burst", 500, "syslog datagrams one source address may send at once before --syslog-rate applies")
	fs.StringVar(&s.ipxeDir, "ipxe-dir", "/usr/lib/ipxe", "directory of iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi) served over TFTP and /ipxe/")
	fs.StringVar(&s.osieDir, "osie-dir", "", "directory served as /osie/ (kernel and initramfs), optional")
	fs.StringVar(&s.osieURL, "osie-url", "", "default OSIE base URL (default HTTP-PUBLIC-URL/osie); a hardware's netboot.osie.base_url wins")
	fs.StringVar(&s.osieKernel, "osie-kernel", "vmlinuz-{arch}", "default OSIE kernel file name; {arch} is the hardware's dhcp.arch (x86_64 when unset)")
	fs.StringVar(&s.osieInitrd, "osie-initrd", "initramfs-{arch}", "default OSIE initrd file name; {arch} as for --osie-kernel")
	fs.StringVar(&s.ipxeParams, "ipxe-params", "auto", "use iPXE's params/param commands: on, off (for iPXE built without PARAM_CMD) or auto (works on both); per hardware: metadata {\"boots\":{\"ipxe_params\":\"off\"}}")
	fs.StringVar(&s.userClass, "ipxe-user-class", "herd", "DHCP user class (option 77) of herd's own iPXE builds, treated like \"iPXE\"")
	fs.StringVar(&s.grpcAuthority, "worker-grpc-authority", "", "herd-server gRPC address put on the OSIE kernel command line (default --server)")
	fs.StringVar(&s.workerCertURL, "worker-cert-url", "", "CA URL put on the OSIE kernel command line (default --cert-url)")
	fs.StringVar(&s.metadataURL, "metadata-url", "", "herd-metadata root for the OSIE (default http://PUBLIC-IP:50061)")
	fs.StringVar(&s.registry, "registry", "", "container registry of action images, for the OSIE (kernel line docker_registry=)")
	fs.StringVar(&s.registryUser, "registry-user", "", "user name for --registry (htpasswd), for the OSIE (kernel line registry_username=)")
	fs.StringVar(&s.registryPassword, "registry-password", "", "password for --registry, for the OSIE (kernel line registry_password=; never logged; "+
		"prefer the environment to the command line, which ps shows; any machine boots serves can read it)")
	fs.StringVar(&s.syslogHost, "syslog-host", "", "syslog host for the OSIE (default PUBLIC-IP)")
	fs.StringVar(&s.console, "console", "ttyS0,115200", "default kernel console= for the OSIE; metadata {\"boots\":{\"console\":...}} wins")
	fs.StringVar(&s.domain, "dhcp-domain", "", "DHCP domain name (option 15) when a hostname has no dots")
	fs.DurationVar(&s.leaseTime, "dhcp-lease-time", 24*time.Hour, "lease time when the hardware's dhcp.lease_time is 0")
	fs.DurationVar(&s.timeServerRefresh, "time-server-refresh", timeservers.DefaultRefresh, "how often the hardware's dhcp.time_servers host names "+
		"are resolved again (with the system resolver, in the background; new names at once) for DHCP option 42")
	fs.BoolVar(&s.requireIP, "http-require-ip", true, "serve a machine's script, which carries its worker credential, only to the machine's own address: "+
		"a reserved IP of its hardware record, or in proxy mode the address its DHCP request asked for. "+
		"false (only for machines that reach boots through NAT) identifies other callers by the MAC they name: "+
		"anyone on the network can then take any machine's credential (docs/security.md)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&s.pprofAddr, "pprof-addr", "off", "listen address of Go's /debug/pprof/ profiles (for profiling under load; keep it on loopback), or off")
	fs.BoolVar(&s.showVersion, "version", false, "print the version and exit")
	if err := config.Parse(fs, args, "HERD_", connect.Lookup(lookup)); err != nil {
		return s, err
	}
	if fs.NArg() == 1 && fs.Arg(0) == "healthcheck" {
		s.healthcheck = true
	} else if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return s, nil
}

// run wires herd-boots and serves until ctx ends.
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) error {
	s, err := parse(args, lookup, stderr)
	if err != nil {
		return err
	}
	if s.showVersion {
		fmt.Fprintln(stderr, "herd-boots", version.String())
		return nil
	}
	if s.healthcheck {
		return observe.Probe(ctx, s.httpAddr)
	}
	log, err := logging.New(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	public := net.ParseIP(s.publicIP).To4()
	if public == nil {
		return fmt.Errorf("--public-ip %q: want the IPv4 address machines reach boots at", s.publicIP)
	}
	mode, err := dhcp.ParseMode(s.dhcpMode)
	if err != nil {
		return err
	}
	params, err := script.ParseParams(s.ipxeParams)
	if err != nil {
		return err
	}
	cc, err := s.conn.Config()
	if err != nil {
		return err
	}
	if cc.Token == "" {
		return errors.New("no token: watching the hardware needs herd-server's admin token (HERD_TOKEN or --token-file)")
	}
	if err := checkRegistry(s.registry, s.registryUser, s.registryPassword); err != nil {
		return err
	}
	if s.httpsAddr == "" {
		s.httpsAddr = "off"
	}
	if err := checkHTTPS(s.httpsAddr, s.tlsCert, s.tlsKey, s.ipxeHTTPSURL); err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if s.httpsAddr != "off" {
		pair, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
		if err != nil {
			return fmt.Errorf("--tls-cert %s, --tls-key %s: %w", s.tlsCert, s.tlsKey, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	var caPin string
	if s.workerCACert != "" {
		if caPin, err = certs.CAFingerprint(s.workerCACert); err != nil {
			return fmt.Errorf("--worker-ca-cert: %w", err)
		}
	}
	if s.dhcpAddr != "off" && s.dhcpIface == "" {
		return errors.New("--dhcp-interface is required: DHCP serves one interface only (or --dhcp-addr off)")
	}
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	defURL, err := defaultRoot("http", public, s.httpAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	baseURL := strings.TrimRight(or(s.publicURL, defURL), "/")
	// Scripts fetched over HTTPS point at the HTTPS root.
	var httpsURL string
	if s.httpsAddr != "off" {
		defHTTPS, err := defaultRoot("https", public, s.httpsAddr)
		if err != nil {
			return fmt.Errorf("--https-addr: %w", err)
		}
		httpsURL = strings.TrimRight(or(s.ipxeHTTPSURL, defHTTPS), "/")
	}
	s.tftpAddr = or(s.tftpAddr, net.JoinHostPort(public.String(), "69"))
	s.syslogAddr = or(s.syslogAddr, net.JoinHostPort(public.String(), "514"))

	// QuickReconnect: machines must see changes made while herd-server
	// was away within a second of its return.
	conn, err := connect.Dial(ctx, cc, connect.QuickReconnect)
	if err != nil {
		return err
	}
	defer conn.Close()
	// dhcp.Preparer parses each record once as it arrives, not per packet;
	// time-server names come from the resolver cache, which has the records
	// derived again when their addresses change.
	ntp := timeservers.New(net.DefaultResolver, log, timeservers.Config{Refresh: s.timeServerRefresh})
	inv := inventory.New(log, dhcp.Preparer{Names: ntp}.Prepare)
	reg := observe.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herd_boots_inventory_machines",
		Help: "Hardware records in boots' in-memory inventory."}, func() float64 { return float64(inv.Len()) }))

	bins, err := tftp.OpenDir(s.ipxeDir)
	if err != nil {
		return err
	}
	defer bins.Close()
	// What DHCP replies may not be sent to: boots' own address and the
	// serving interface's subnets' network and broadcast addresses.
	var link dhcp.Link
	if s.dhcpAddr != "off" {
		if link, err = dhcp.LinkOf(s.dhcpIface, public); err != nil {
			return err
		}
	}
	dcfg := dhcp.Config{Mode: mode, ServerID: public, UserClass: s.userClass, DefaultLease: s.leaseTime, DefaultDomain: s.domain,
		Boot: dhcp.BootConfig{NextServer: public, HTTPBase: baseURL, HTTPSBase: strings.TrimRight(s.ipxeHTTPSURL, "/")}, Link: link}
	notes := bootnotes.New("boots", log, reg)
	dcfg.Notes = notes
	// Proxy mode: the addresses machines take from the other DHCP server,
	// their own addresses for boot events and syslog.
	var book *leases.Book
	if mode == dhcp.Proxy {
		book = leases.New(leaseBookSize, s.leaseTime)
		dcfg.Leases = book
	}
	hcfg := httpd.Config{
		Script: script.Config{BaseURL: baseURL, GRPCAuthority: or(s.grpcAuthority, cc.Authority), CertURL: or(s.workerCertURL, cc.CertURL),
			CASHA256:    caPin,
			MetadataURL: or(s.metadataURL, "http://"+public.String()+":50061"),
			Registry:    s.registry, RegistryUser: s.registryUser, RegistryPassword: s.registryPassword,
			SyslogHost: or(s.syslogHost, public.String()), Console: s.console,
			OSIEBaseURL: strings.TrimRight(or(s.osieURL, baseURL+"/osie"), "/"), Kernel: s.osieKernel, Initrd: s.osieInitrd},
		Params: params, RequireIP: s.requireIP, Binaries: bins, OSIEDir: s.osieDir, Notes: notes, WriteTimeout: s.httpLimits.Write,
	}
	if httpsURL != "" {
		// The same scripts with the HTTPS root; an --osie-url given stays
		// as it is.
		hcfg.ScriptHTTPS = hcfg.Script
		hcfg.ScriptHTTPS.BaseURL = httpsURL
		hcfg.ScriptHTTPS.OSIEBaseURL = strings.TrimRight(or(s.osieURL, httpsURL+"/osie"), "/")
	}
	if book != nil {
		hcfg.Leases = book
	}
	// /healthz: 503 before the first snapshot, 200 "degraded" while
	// herd-server is unreachable (DHCP and scripts answer from memory).
	h, err := httpd.New(hcfg, inv, log, reg, inv.Health)
	if err != nil {
		return err
	}
	dh := dhcp.NewHandler(dcfg, inv, log, reg)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inv.Run(ctx, hardware.NewHardwareServiceClient(conn)) })
	g.Go(func() error { return ntp.Run(ctx, inv) })
	g.Go(func() error { return notes.Run(ctx, workflow.NewWorkflowServiceClient(conn)) })

	// HTTP and HTTPS: the same handler, limits and per-source budget.
	perSource := httpd.NewSourceLimit(s.httpLimits.PerSource, log, reg)
	hl, err := net.Listen("tcp", s.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	serveHTTP(ctx, g, "http", s.httpLimits.Server(h), perSource.Listener(hl, false))
	if tlsCfg != nil {
		tl, err := net.Listen("tcp", s.httpsAddr)
		if err != nil {
			return fmt.Errorf("https: %w", err)
		}
		// HTTP/1.1 only (no h2 in ALPN), as iPXE speaks: downloads' write
		// deadlines (httpd.Limits.Write) are per connection.
		serveHTTP(ctx, g, "https", s.httpLimits.Server(h), tls.NewListener(perSource.Listener(tl, true), tlsCfg))
	}
	if s.pprofAddr != "off" {
		pl, err := net.Listen("tcp", s.pprofAddr)
		if err != nil {
			return fmt.Errorf("pprof: %w", err)
		}
		ps := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := ps.Serve(pl); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("pprof: %w", err)
			}
			return nil
		})
		g.Go(func() error { <-ctx.Done(); return ps.Close() })
	}
	if s.dhcpAddr != "off" {
		for _, l := range []struct {
			addr string
			pxe  bool
		}{{s.dhcpAddr, false}, {s.pxeAddr, true}} {
			if l.addr == "off" || (l.pxe && mode != dhcp.Proxy) {
				continue
			}
			ua, err := net.ResolveUDPAddr("udp4", l.addr)
			if err != nil {
				return fmt.Errorf("dhcp address %q: %w", l.addr, err)
			}
			pc, err := dhcp.Listen(s.dhcpIface, ua)
			if err != nil {
				return err
			}
			pxe := l.pxe
			g.Go(func() error { return dhcp.Serve(ctx, pc, dh, log, pxe) })
		}
	}
	if s.tftpAddr != "off" {
		pc, err := net.ListenPacket("udp4", s.tftpAddr)
		if err != nil {
			return fmt.Errorf("tftp: %w", err)
		}
		ts := tftp.New(bins, log, reg)
		g.Go(func() error { return ts.Serve(ctx, pc) })
	}
	if s.syslogAddr != "off" {
		pc, err := net.ListenPacket("udp4", s.syslogAddr)
		if err != nil {
			return fmt.Errorf("syslog: %w", err)
		}
		scfg := syslog.Config{Rate: s.syslogRate, Burst: s.syslogBurst}
		if book != nil {
			scfg.Leases = book
		}
		g.Go(func() error { return syslog.Serve(ctx, pc, scfg, inv, log, reg) })
	}
	log.Info("herd-boots serving", "version", version.String(), "public_ip", public.String(), "http", s.httpAddr, "base_url", baseURL,
		"https", s.httpsAddr, "https_url", httpsURL, "ipxe_https", s.ipxeHTTPSURL != "", "ca_sha256", caPin,
		"dhcp_mode", string(mode), "dhcp_interface", s.dhcpIface, "tftp", s.tftpAddr, "syslog", s.syslogAddr, "ipxe_params", string(params),
		"registry", s.registry, "registry_user", s.registryUser, "registry_password_set", s.registryPassword != "")
	return g.Wait()
}

// defaultRoot is boots' root URL as machines reach it when no flag names
// it: scheme://PUBLIC-IP, with the port of listen unless it is the
// scheme's own.
func defaultRoot(scheme string, public net.IP, listen string) (string, error) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	root := scheme + "://" + public.String()
	if own := map[string]string{"http": "80", "https": "443"}[scheme]; port != own {
		root += ":" + port
	}
	return root, nil
}

// serveHTTP serves srv on l in g until ctx ends, then shuts it down.
func serveHTTP(ctx context.Context, g *errgroup.Group, name string, srv *http.Server, l net.Listener) {
	g.Go(func() error {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

// checkHTTPS refuses HTTPS settings that could not work: a listener
// without its certificate and key or the other way round, an iPXE HTTPS
// root without the listener, or one that is not an https:// URL.
func checkHTTPS(addr, cert, key, ipxeURL string) error {
	on := addr != "off"
	switch {
	case on && (cert == "" || key == ""):
		return errors.New("--https-addr needs --tls-cert and --tls-key (HERD_TLS_CERT, HERD_TLS_KEY): the certificate and key it serves")
	case !on && (cert != "" || key != ""):
		return errors.New("--tls-cert and --tls-key are for --https-addr (HERD_HTTPS_ADDR), which is off")
	case !on && ipxeURL != "":
		return errors.New("--ipxe-https-url needs --https-addr (HERD_HTTPS_ADDR): the listener it names")
	case ipxeURL == "":
		return nil
	}
	u, err := url.Parse(ipxeURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("--ipxe-https-url %q: want https://HOST[:PORT][/PATH], boots' HTTPS root as machines reach it", ipxeURL)
	}
	if err := script.CheckKernelValue(ipxeURL); err != nil {
		return fmt.Errorf("--ipxe-https-url %w", err)
	}
	return nil
}

// leaseBookSize bounds the proxy-mode addresses remembered; DHCP learns
// only MACs the inventory has.
const leaseBookSize = 1 << 17

// checkRegistry refuses registry credentials that could not work: one
// without the other, either without a registry, or a value the kernel
// line would not carry as it is. The errors never show the password.
func checkRegistry(registry, user, password string) error {
	switch {
	case (user == "") != (password == ""):
		return errors.New("--registry-user and --registry-password (HERD_REGISTRY_USER, HERD_REGISTRY_PASSWORD) go together: set both or neither")
	case user != "" && registry == "":
		return errors.New("--registry-user and --registry-password need --registry (HERD_REGISTRY): the registry they log in to")
	}
	if err := script.CheckKernelValue(user); err != nil {
		return fmt.Errorf("--registry-user %w", err)
	}
	if err := script.CheckKernelValue(password); err != nil {
		return fmt.Errorf("--registry-password %w", err)
	}
	return nil
}

// pprofMux serves net/http/pprof's handlers on a mux of their own (not
// http.DefaultServeMux, which the package's init fills).
func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}
