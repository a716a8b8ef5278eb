// Package servertest runs real herd-server processes on a throwaway
// PostgreSQL for the tests of every part that talks to the server (its own
// end-to-end tests, boots, metadata, the worker) and the benchmark, and
// talks to them the way clients do: the herd CLI, raw gRPC over TLS, REST.
package servertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/pgtest"
	"github.com/herd-metal/herd/proto/hardware"
)

// AdminToken is the admin bearer token of every server started here.
const AdminToken = "servertest-admin-token"

// ServiceToken is the service token (what herd-boots and herd-metadata
// use) of every server started here.
const ServiceToken = "servertest-service-token"

// binDir holds the binaries Main built: the one piece of package state,
// because tests reach the package only through their *testing.T.
var binDir string

// Main builds herd-server and herd (with the race detector when race is
// set), runs the tests and stops the throwaway PostgreSQL. Use it in
// TestMain: os.Exit(servertest.Main(m, true)).
func Main(m *testing.M, race bool) int {
	dir, err := os.MkdirTemp("", "herd-servertest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, here, _, _ := runtime.Caller(0)
	cmdDir := filepath.Join(filepath.Dir(here), "..", "..", "services", "server", "cmd")
	args := []string{"build", "-o", dir + "/"}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, filepath.Join(cmdDir, "herd-server"), filepath.Join(cmdDir, "herd"))...)
	cmd.Dir = cmdDir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building herd-server and herd:", err)
		return 1
	}
	binDir = dir
	return pgtest.Main(m)
}

// Server is one running herd-server process.
type Server struct {
	t        testing.TB
	StateDir string
	GRPC     string // host:port
	HTTP     string // http://host:port
	DBURL    string
	Stderr   *Buffer
	extra    []string
	cmd      *exec.Cmd
	pipe     *io.PipeWriter

	adminMu sync.Mutex
	admin   *grpc.ClientConn
}

// Buffer is a bytes.Buffer safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs herd-server on a fresh database with extra flags and waits
// until it serves. SIGINT stops it when the test ends; it must exit cleanly.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	return StartOn(t, pgtest.NewDatabase(t), extra...)
}

// StartOn is Start on the database at dbURL, which the test provides: one
// in a pgtest.Cluster of its own, which it may restart under the server.
func StartOn(t testing.TB, dbURL string, extra ...string) *Server {
	t.Helper()
	if binDir == "" {
		t.Fatal("servertest.Main did not run: call it from TestMain")
	}
	s := &Server{t: t, StateDir: t.TempDir(), DBURL: dbURL, Stderr: &Buffer{}, extra: extra}
	s.start("127.0.0.1:0", "127.0.0.1:0")
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *Server) start(grpcAddr, httpAddr string) {
	s.t.Helper()
	// Hardware records take no loopback address, so the tests' workers,
	// on 127.0.0.1, call through it as through a trusted NAT gateway; the
	// source check stays strict for every other address (a test's extra
	// --worker-trusted-sources replaces this one).
	args := append([]string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--log-format", "json", "--log-level", "debug", "--timeout-check", "200ms", "--worker-trusted-sources", "127.0.0.1"}, s.extra...)
	cmd := exec.Command(filepath.Join(binDir, "herd-server"), args...)
	cmd.Env = append(os.Environ(), "HERD_DB_URL="+s.DBURL, "HERD_STATE_DIR="+s.StateDir, "HERD_AUTH_TOKEN="+AdminToken,
		"HERD_SERVICE_TOKEN="+ServiceToken)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.pipe = cmd, pw
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			s.Stderr.Write(append(append([]byte{}, line...), '\n'))
			var ev struct{ Msg, GRPC, HTTP string }
			if bytes.Contains(line, []byte(`"msg":"serving"`)) && json.Unmarshal(line, &ev) == nil {
				s.GRPC, s.HTTP = ev.GRPC, "http://"+ev.HTTP
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		s.t.Fatalf("herd-server did not start:\n%s", s.Stderr.String())
	}
}

// Stop ends the server with SIGINT; it must exit cleanly. Stopping a
// stopped server does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	cmd := s.cmd
	s.cmd = nil
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			s.t.Errorf("herd-server did not stop cleanly: %v\n%s", err, s.Stderr.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Errorf("herd-server did not stop within 15s of SIGINT")
	}
	s.pipe.Close()
}

// Kill ends the server with SIGKILL, by its pid, as a crash would: no
// clean exit is expected. Restart brings it back; killing a stopped server
// does nothing.
func (s *Server) Kill() {
	s.t.Helper()
	if s.cmd == nil {
		return
	}
	cmd := s.cmd
	s.cmd = nil
	if err := cmd.Process.Kill(); err != nil {
		s.t.Errorf("SIGKILL herd-server (pid %d): %v", cmd.Process.Pid, err)
	}
	_ = cmd.Wait() // "signal: killed", as intended
	s.pipe.Close()
}

// Restart stops the server (unless Kill did) and starts it again on the
// same database, state directory and ports, as after an upgrade or a crash.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start(s.GRPC, strings.TrimPrefix(s.HTTP, "http://"))
}

// CA fetches the CA bundle from /cert, as clients do.
func (s *Server) CA() *x509.CertPool {
	s.t.Helper()
	res, err := http.Get(s.HTTP + "/cert")
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	pem, _ := io.ReadAll(res.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		s.t.Fatalf("/cert served no certificate: %q", pem)
	}
	return pool
}

// Dial is a raw gRPC connection with a bearer token ("" = none), closed
// when the test ends.
func (s *Server) Dial(token string) *grpc.ClientConn {
	return s.DialCA(s.CA(), token)
}

// DialCA is Dial with a CA pool already fetched (for many connections).
func (s *Server) DialCA(ca *x509.CertPool, token string) *grpc.ClientConn {
	s.t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca, ServerName: "127.0.0.1"}))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(connect.Bearer(token)))
	}
	conn, err := grpc.NewClient(s.GRPC, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return conn
}

// WorkerToken is the credential boots would give the machine hwID now:
// the one the hardware Watch hands herd's services. The record must have
// been pushed.
func (s *Server) WorkerToken(hwID string) string {
	s.t.Helper()
	tok, ok := s.WorkerTokens()[hwID]
	if !ok {
		s.t.Fatalf("no hardware record %s: push it before asking for its worker credential", hwID)
	}
	return tok
}

// WorkerTokens are the credentials WorkerToken gives, of every record, by
// hardware id: one Watch snapshot.
func (s *Server) WorkerTokens() map[string]string {
	s.t.Helper()
	tokens, err := WatchTokens(context.Background(), hardware.NewHardwareServiceClient(s.adminConn()))
	if err != nil {
		s.t.Fatal(err)
	}
	return tokens
}

// WatchTokens reads a Watch snapshot from c and returns the worker
// credentials in it, by hardware id.
func WatchTokens(ctx context.Context, c hardware.HardwareServiceClient) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	stream, err := c.Watch(ctx, &hardware.WatchRequest{})
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	tokens := map[string]string{}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		if ev.GetType() == hardware.WatchEvent_TYPE_SYNCED {
			return tokens, nil
		}
		tokens[ev.GetHardware().GetId()] = ev.GetWorkerToken()
	}
}

// adminConn is one admin connection, kept for the test.
func (s *Server) adminConn() *grpc.ClientConn {
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	if s.admin == nil {
		s.admin = s.Dial(AdminToken)
	}
	return s.admin
}

// WorkerKey is the server's worker credential key (for tests that forge
// credentials).
func (s *Server) WorkerKey() []byte {
	s.t.Helper()
	key, err := os.ReadFile(filepath.Join(s.StateDir, "worker.key"))
	if err != nil {
		s.t.Fatal(err)
	}
	return key
}

// HerdCommand is the CLI set up to talk to this server.
func (s *Server) HerdCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "herd"), args...)
	cmd.Env = append(os.Environ(), "HERD_GRPC_AUTHORITY="+s.GRPC, "HERD_CERT_URL="+s.HTTP+"/cert", "HERD_TOKEN="+AdminToken)
	return cmd
}

// Herd runs the CLI with stdin and returns what it printed and its exit code.
func (s *Server) Herd(stdin string, args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := s.HerdCommand(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// MustHerd runs the CLI and fails the test unless it exits 0.
func (s *Server) MustHerd(stdin string, args ...string) string {
	s.t.Helper()
	out, errOut, code := s.Herd(stdin, args...)
	if code != 0 {
		s.t.Fatalf("herd %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// CreateWorkflow creates a workflow with the CLI and returns its id.
func (s *Server) CreateWorkflow(template, devices string) string {
	s.t.Helper()
	out := s.MustHerd("", "workflow", "create", "-t", template, "-r", devices, "-o", "json")
	var created struct{ ID string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		s.t.Fatalf("workflow create printed %q (%v)", out, err)
	}
	return created.ID
}

// Rest does an HTTP request on the gateway, with a bearer token unless "".
func (s *Server) Rest(method, path, body, token string) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.HTTP+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// PushHardware pushes record(i) for i in [from, to) from 32 concurrent
// clients, failing the test on the first refusal, and returns how long it
// took (benchmarks fill the inventory with it).
func PushHardware(t testing.TB, c hardware.HardwareServiceClient, from, to int, record func(int) *hardware.Hardware) time.Duration {
	t.Helper()
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(32)
	for i := from; i < to; i++ {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := c.Push(ctx, &hardware.PushRequest{Data: record(i)}); err != nil {
				return fmt.Errorf("push record %d: %w", i, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}
