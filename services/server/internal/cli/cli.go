// Package cli is the herd command: Tinkerbell v0.6's `tink` command tree
// (hardware, template, workflow) over herd-server's gRPC API, plus herd's
// additions such as `workflow watch`.
//
// The command tree is built by New from explicit readers, writers, an
// environment lookup and a dial function, so tests drive it in-process:
//
//	code := cli.Run(ctx, cli.New(stdin, &stdout, &stderr, cli.WithLookupEnv(env)), args)
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/version"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// Exit codes of Run.
const (
	ExitOK       = 0
	ExitError    = 1 // an RPC or local check failed
	ExitUsage    = 2 // bad command line: unknown command or flag, wrong arguments
	ExitFailed   = 3 // workflow watch: the workflow ended FAILED
	ExitTimedOut = 4 // workflow watch: the workflow ended TIMEOUT
)

// Defaults of the global flags.
const (
	DefaultAuthority = "127.0.0.1:42113"
	DefaultCertURL   = "http://127.0.0.1:42114/cert"
	DefaultTimeout   = time.Minute
)

// DialFunc connects to herd-server; connect.Dial in production.
type DialFunc func(ctx context.Context, c connect.Config) (*grpc.ClientConn, error)

// Option changes how New builds the command.
type Option func(*app)

// WithLookupEnv sets the environment lookup (default os.LookupEnv).
func WithLookupEnv(lookup func(string) (string, bool)) Option {
	return func(a *app) { a.lookup = lookup }
}

// WithDial sets how the command connects to herd-server (default
// connect.Dial), e.g. to an in-process server in tests.
func WithDial(dial DialFunc) Option {
	return func(a *app) { a.dial = dial }
}

// global is one global flag and the environment variables backing it, in
// order of precedence.
type global struct {
	name string
	env  []string
}

// globals lists the global flags that read the environment.
func globals() []global {
	return []global{
		{"authority", []string{"HERD_GRPC_AUTHORITY", "TINKERBELL_GRPC_AUTHORITY"}},
		{"cert-url", []string{"HERD_CERT_URL", "TINKERBELL_CERT_URL"}},
		{"ca-file", []string{"HERD_CA_FILE"}},
		{"token", []string{"HERD_TOKEN"}},
		{"server-name", []string{"HERD_SERVER_NAME"}},
	}
}

// settings are the global options once flags and environment are resolved.
type settings struct {
	conn connect.Config
	json bool
	// timeout bounds the whole command; 0 means none. timeoutSet says it
	// was given explicitly (workflow watch only honours an explicit one).
	timeout    time.Duration
	timeoutSet bool
}

// app is one command-line invocation's state.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookup         func(string) (string, bool)
	dial           DialFunc

	set  settings
	conn *grpc.ClientConn
}

// New builds the herd command tree reading stdin and writing stdout and
// stderr. It reads no environment and opens no connection until a
// command runs.
func New(stdin io.Reader, stdout, stderr io.Writer, opts ...Option) *cobra.Command {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, lookup: os.LookupEnv, dial: dialTLS}
	for _, o := range opts {
		o(a)
	}
	root := &cobra.Command{
		Use:   "herd",
		Short: "Provision bare-metal machines with herd-server",
		Long: `herd talks to herd-server: it stores hardware records, templates and workflows
and follows workflows as machines run them. Its commands and files are those of
Tinkerbell v0.6's tink CLI.

Connection: the server's gRPC address is --authority. herd always uses TLS and
trusts the CA in --ca-file, else the CA it downloads from --cert-url, else the
system's CAs (give --cert-url "" to skip the download). The admin token from
--token is sent as a bearer token with every call.

Each global flag can be set in the environment instead (named in its help); a
flag on the command line wins. TINKERBELL_GRPC_AUTHORITY and TINKERBELL_CERT_URL
are honoured too, after the HERD_ variables.

Exit codes: 0 success, 1 error, 2 usage error, 3 and 4 a watched workflow ended
FAILED or TIMEOUT.`,
		Version:       version.String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	// The global flags are read back by resolve, which also applies the
	// environment.
	pf := root.PersistentFlags()
	pf.String("authority", DefaultAuthority,
		"herd-server gRPC address, host:port (env HERD_GRPC_AUTHORITY)")
	pf.String("cert-url", DefaultCertURL,
		"URL to download the server's CA certificate (PEM) from when --ca-file is not set; empty: trust the system's CAs (env HERD_CERT_URL)")
	pf.String("ca-file", "",
		"PEM file of the CA to trust; wins over --cert-url (env HERD_CA_FILE)")
	pf.String("token", "",
		"admin bearer token sent with every call; prefer the environment, command lines are visible to other users (env HERD_TOKEN)")
	pf.String("server-name", "",
		"name to check the server certificate against (default: the host of --authority) (env HERD_SERVER_NAME)")
	pf.StringP("output", "o", "table",
		"output format: table (aligned columns, for people) or json (JSON; lists print one document per line)")
	pf.Duration("timeout", DefaultTimeout,
		"time limit for the whole command, 0 for none (workflow watch waits without limit unless this is given)")

	root.AddCommand(a.hardwareCmd(), a.templateCmd(), a.workflowCmd(), a.machineCmd(), a.bmcCmd(), a.importCmd())
	return root
}

func dialTLS(ctx context.Context, c connect.Config) (*grpc.ClientConn, error) {
	return connect.Dial(ctx, c)
}

// resolve applies the environment to the global flags not given on the
// command line and checks them.
func resolve(fs *pflag.FlagSet, lookup func(string) (string, bool)) (settings, error) {
	val := map[string]string{}
	for _, g := range globals() {
		f := fs.Lookup(g.name)
		if f == nil {
			return settings{}, fmt.Errorf("internal: no flag --%s", g.name)
		}
		val[g.name] = f.Value.String()
		if f.Changed {
			continue
		}
		for _, env := range g.env {
			if v, ok := lookup(env); ok {
				val[g.name] = v
				break
			}
		}
	}
	s := settings{conn: connect.Config{
		Authority:  strings.TrimSpace(val["authority"]),
		CertURL:    strings.TrimSpace(val["cert-url"]),
		CAFile:     val["ca-file"],
		Token:      strings.TrimSpace(val["token"]),
		ServerName: val["server-name"],
	}}
	if s.conn.Authority == "" {
		return s, usageError{errors.New("--authority is empty: give herd-server's host:port")}
	}
	switch out, _ := fs.GetString("output"); out {
	case "table":
	case "json":
		s.json = true
	default:
		return s, usageError{fmt.Errorf("--output %q: want table or json", out)}
	}
	s.timeout, _ = fs.GetDuration("timeout")
	if s.timeout < 0 {
		return s, usageError{fmt.Errorf("--timeout %s: must not be negative", s.timeout)}
	}
	s.timeoutSet = fs.Changed("timeout")
	return s, nil
}

// waitsForever marks commands that only honour an explicit --timeout.
const waitsForever = "herd/waits-for-ever"

// action wraps a command's work: it resolves the global settings, bounds
// the context, closes the connection afterwards and marks the error as
// the command's own (not a command-line mistake).
func (a *app) action(fn func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := resolve(cmd.Flags(), a.lookup)
		if err != nil {
			return err
		}
		a.set = s
		ctx := cmd.Context()
		if ctx == nil {
			ctx = context.Background()
		}
		bounded := s.timeout > 0 && (s.timeoutSet || cmd.Annotations[waitsForever] == "")
		if bounded {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.timeout)
			defer cancel()
		}
		defer a.close()
		err = fn(ctx, cmd, args)
		if err == nil {
			return nil
		}
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		// The server sees the deadline too and may answer
		// DeadlineExceeded just before ctx itself expires.
		if bounded && (errors.Is(ctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) {
			return commandError{fmt.Errorf("no answer within %s (--timeout)", s.timeout)}
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return commandError{errors.New("interrupted")}
		}
		if status.Code(err) == codes.Unavailable {
			return commandError{fmt.Errorf("cannot reach herd-server at %s: %s", s.conn.Authority, status.Convert(err).Message())}
		}
		return commandError{err}
	}
}

// connection dials herd-server once per invocation.
func (a *app) connection(ctx context.Context) (*grpc.ClientConn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	conn, err := a.dial(ctx, a.set.conn)
	if err != nil {
		return nil, err
	}
	a.conn = conn
	return conn, nil
}

func (a *app) close() {
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
}

func (a *app) hardwareClient(ctx context.Context) (hardware.HardwareServiceClient, error) {
	conn, err := a.connection(ctx)
	if err != nil {
		return nil, err
	}
	return hardware.NewHardwareServiceClient(conn), nil
}

func (a *app) templateClient(ctx context.Context) (template.TemplateServiceClient, error) {
	conn, err := a.connection(ctx)
	if err != nil {
		return nil, err
	}
	return template.NewTemplateServiceClient(conn), nil
}

func (a *app) workflowClient(ctx context.Context) (workflow.WorkflowServiceClient, error) {
	conn, err := a.connection(ctx)
	if err != nil {
		return nil, err
	}
	return workflow.NewWorkflowServiceClient(conn), nil
}

// group returns a command that only holds subcommands: bare, it prints its
// help; with an unknown subcommand, it is a usage error.
func group(use, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:                        use,
		Short:                      short,
		Long:                       long,
		SuggestionsMinimumDistance: 2,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %q?)", s[0])
			}
			return usageError{errors.New(msg)}
		},
	}
}

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// commandError is a failure of a command that ran: exit code 1 unless it
// wraps an exitError.
type commandError struct{ err error }

func (e commandError) Error() string { return e.err.Error() }
func (e commandError) Unwrap() error { return e.err }

// exitError ends the command with a specific code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// Run executes root (built by New) with args and returns the process exit
// code. Errors are printed to root's error writer as "herd: <message>";
// for a gRPC error the message is the server's status message.
func Run(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	w := root.ErrOrStderr()
	fmt.Fprintf(w, "herd: %s\n", message(err))
	code := ExitCode(err)
	if code == ExitUsage && cmd != nil {
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// ExitCode maps an error returned by executing the command to an exit code.
func ExitCode(err error) int {
	var ee exitError
	var ue usageError
	var ce commandError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ce):
		return ExitError
	default:
		// Errors cobra makes itself: unknown flags and commands, wrong
		// argument counts, missing required flags.
		return ExitUsage
	}
}

// message is what a user reads about err: the server's status message for
// a gRPC error (unless something added text to it), else the error text.
func message(err error) string {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	if errors.As(err, &se) && se.Error() == err.Error() {
		return se.GRPCStatus().Message()
	}
	return err.Error()
}
