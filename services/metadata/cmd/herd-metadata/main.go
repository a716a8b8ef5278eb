// Command herd-metadata serves provisioned machines their own metadata,
// EC2 style (/latest/meta-data/..., /latest/user-data) and as the whole
// Tinkerbell/Equinix-style document (/metadata), on port 50061. It answers
// from an in-memory inventory that herd-server's Watch stream keeps
// current; it identifies the caller by its source address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/herd-metal/herd/pkg/bootnotes"
	"github.com/herd-metal/herd/pkg/config"
	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/logging"
	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/pkg/version"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/metadata/internal/clientip"
	"github.com/herd-metal/herd/services/metadata/internal/httpapi"
	"github.com/herd-metal/herd/services/metadata/internal/machines"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr, nil)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herd-metadata:", err)
		os.Exit(1)
	}
}

type settings struct {
	httpAddr            string
	conn                connect.Flags
	trustedProxies      string
	limits              httpapi.Limits
	logLevel, logFormat string
	showVersion         bool
	healthcheck         bool
}

func parse(args []string, lookup func(string) (string, bool), stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("herd-metadata", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: herd-metadata [flags] [healthcheck]\n\n"+
			"Serves each machine its own metadata, found by the request's source address.\n"+
			"healthcheck exits 0 when the herd-metadata listening on --metadata-addr answers /healthz (for container health checks).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&s.httpAddr, "metadata-addr", ":50061", "HTTP listen address (named apart from herd-server's --http-addr so one environment can hold both): EC2-style metadata, /metadata, /metrics, /healthz, /version")
	s.conn.Register(fs, "herd-server service token (herd-server --service-token; the admin token works too), needed to watch the hardware")
	fs.StringVar(&s.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For is believed (default none: the peer address is the caller)")
	fs.IntVar(&s.limits.MaxHeaderBytes, "http-max-header-bytes", httpapi.MaxHeaderBytes, "largest request line and headers accepted, in bytes (larger: 431)")
	fs.IntVar(&s.limits.MaxBodyBytes, "http-max-body-bytes", httpapi.MaxBodyBytes, "largest request body accepted, in bytes (larger: 413; metadata requests are GETs without one)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&s.logFormat, "log-format", "json", "json or text")
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

// run wires herd-metadata and serves until ctx ends. ready, if not nil,
// gets the HTTP listener's address once it listens (for tests).
func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer, ready func(net.Addr)) error {
	s, err := parse(args, lookup, stderr)
	if err != nil {
		return err
	}
	if s.showVersion {
		fmt.Fprintln(stderr, "herd-metadata", version.String())
		return nil
	}
	if s.healthcheck {
		return observe.Probe(ctx, s.httpAddr)
	}
	log, err := logging.New(stderr, s.logLevel, s.logFormat)
	if err != nil {
		return err
	}
	trusted, err := clientip.ParsePrefixes(s.trustedProxies)
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
	// QuickReconnect: machines must see changes made while herd-server
	// was away within a second of its return.
	conn, err := connect.Dial(ctx, cc, connect.QuickReconnect)
	if err != nil {
		return err
	}
	defer conn.Close()

	index := machines.New()
	inv := inventory.New(log, index.Derive)
	index.SetInventory(inv)

	reg := observe.NewRegistry()
	// A machine reading its metadata is noted on its workflow's timeline
	// (the installed OS's first crawl, after the workflow's end).
	notes := bootnotes.New("metadata", log, reg)
	h := httpapi.New(httpapi.Config{
		Notes:    notes,
		Lookup:   index.Lookup,
		Trusted:  trusted,
		Registry: reg,
		Log:      log,
		// Not loaded yet: 503. Loaded but herd-server unreachable: 200
		// "degraded" (answering from memory). Current: ok.
		Healthy: inv.Health,
	})
	ln, err := net.Listen("tcp", s.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.httpAddr, err)
	}
	log.Info("herd-metadata serving", "http", ln.Addr().String(), "server", s.conn.Server, "trusted_proxies", s.trustedProxies, "version", version.Version)
	if ready != nil {
		ready(ln.Addr())
	}

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return inv.Run(ctx, hardware.NewHardwareServiceClient(conn)) })
	eg.Go(func() error { return notes.Run(ctx, workflow.NewWorkflowServiceClient(conn)) })
	eg.Go(func() error {
		if inv.WaitSynced(ctx) == nil {
			// Loading the snapshot parsed every record's JSON: hand that
			// garbage back to the OS once, rather than keep the peak.
			debug.FreeOSMemory()
		}
		return nil
	})
	eg.Go(func() error { return httpapi.Serve(ctx, httpapi.NewServer(h, log, s.limits), ln) })
	return eg.Wait()
}
