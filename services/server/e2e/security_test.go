package e2e

// The attacks of issue 14 on herd-server, each performed against a real
// server over real connections and shown refused, with the legitimate path
// beside it still working. docs/security.md lists them.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/inventory"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/pkg/workertoken"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

const serviceToken = servertest.ServiceToken

// from dials from a loopback source address of the test's choosing
// (127.0.0.0/8 is all on lo), so that the server sees distinct hosts.
func from(src string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
}

// caPool fetches the server's CA without leaving a keep-alive connection
// behind (some tests count connections).
func caPool(t *testing.T, s *servertest.Server, src string) *x509.CertPool {
	t.Helper()
	c := httpFrom(src)
	res, err := c.Get(s.HTTP + "/cert")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	pem, _ := io.ReadAll(res.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("/cert: %q", pem)
	}
	return pool
}

// httpFrom is an HTTP client from src that keeps no connection open.
func httpFrom(src string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: from(src).DialContext, DisableKeepAlives: true}}
}

// dialFrom is a gRPC connection from src with token.
func dialFrom(t *testing.T, s *servertest.Server, ca *x509.CertPool, src, token string) *grpc.ClientConn {
	t.Helper()
	d := from(src)
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca, ServerName: "127.0.0.1"})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(connect.Bearer(token)))
	}
	conn, err := grpc.NewClient(s.GRPC, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// closedWithin reports how long the server took to close c (reading and
// dropping whatever it sends), failing the test if it kept it past limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server still held the connection after %v", what, limit)
	}
	return took
}

// slowTemplate has two actions with a long timeout, for workflows a test
// keeps running a while.
const slowTemplate = `version: "0.1"
name: patient
tasks:
  - name: "only"
    worker: "{{.device_1}}"
    actions:
      - name: "first"
        image: busybox
        timeout: 600
      - name: "second"
        image: busybox
        timeout: 600
`

// TestSlowAndIdleHTTPClientsAreCut (finding 3): a client that trickles its
// headers or its body, or holds a keep-alive connection idle, is cut off
// at the configured timeouts; a REST stream that outlives them all keeps
// going.
func TestSlowAndIdleHTTPClientsAreCut(t *testing.T) {
	s := servertest.Start(t, "--http-read-header-timeout", "1s", "--http-read-timeout", "2s",
		"--http-write-timeout", "2s", "--http-idle-timeout", "1s")
	addr := strings.TrimPrefix(s.HTTP, "http://")
	dial := func() net.Conn {
		c, err := from("127.0.0.1").Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// trickle writes one byte every 300 ms until the server hangs up.
	trickle := func(c net.Conn) {
		go func() {
			for {
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}

	t.Run("slow-loris headers", func(t *testing.T) {
		c := dial()
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: herd\r\nX-Slow: ")
		trickle(c)
		if took := closedWithin(t, c, 8*time.Second, "headers trickled"); took > 4*time.Second {
			t.Errorf("headers trickled: cut after %v, want about the 1s header timeout", took)
		}
	})
	t.Run("slow-loris body", func(t *testing.T) {
		c := dial()
		fmt.Fprintf(c, "POST /v1/hardware HTTP/1.1\r\nHost: herd\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", adminToken)
		trickle(c)
		if took := closedWithin(t, c, 10*time.Second, "body trickled"); took > 5*time.Second {
			t.Errorf("body trickled: cut after %v, want about the 2s read timeout", took)
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dial()
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: herd\r\n\r\n")
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("keep-alive request: %v %v", res, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(8 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("idle keep-alive: read %v, want the server to close it", err)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("idle keep-alive closed after %v, want about the 1s idle timeout", took)
		}
	})
	t.Run("REST stream outlives the timeouts", func(t *testing.T) {
		s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
		s.MustHerd(slowTemplate, "template", "create")
		id := s.CreateWorkflow("patient", `{"device_1":"`+mac1+`"}`)
		req, _ := http.NewRequest("GET", s.HTTP+"/v1/workflows/"+id+"/events/watch", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("watch over REST: %v %v", res, err)
		}
		defer res.Body.Close()
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(res.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		next := func(want string) {
			t.Helper()
			select {
			case l, ok := <-lines:
				if !ok || !strings.Contains(l, want) {
					t.Fatalf("stream line %q (open %v), want one with %q", l, ok, want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no %q on the stream", want)
			}
		}
		next("allow_pxe") // the server's netboot note
		// Quiet for longer than every timeout (read 2s, write 2s, idle 1s).
		time.Sleep(3500 * time.Millisecond)
		w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
		report(t, w, id, "only", "first", workflow.State_STATE_RUNNING)
		next(`"action_name":"first"`)
		time.Sleep(2500 * time.Millisecond)
		report(t, w, id, "only", "first", workflow.State_STATE_SUCCESS)
		next(`"action_name":"first"`)
		report(t, w, id, "only", "second", workflow.State_STATE_RUNNING)
		next(`"action_name":"second"`)
		report(t, w, id, "only", "second", workflow.State_STATE_SUCCESS)
		next(`"action_name":"second"`)
	})
}

// h2Frame writes one HTTP/2 frame.
func h2Frame(w io.Writer, typ, flags byte, stream uint32, payload []byte) error {
	hdr := make([]byte, 9)
	hdr[0], hdr[1], hdr[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	hdr[3], hdr[4] = typ, flags
	binary.BigEndian.PutUint32(hdr[5:], stream)
	_, err := w.Write(append(hdr, payload...))
	return err
}

// idleH2 opens a TLS + HTTP/2 connection to the gRPC port and then calls
// nothing, answering the server's SETTINGS and PINGs as a client does. It
// returns when the server closes the connection: after how long, and
// whether a GOAWAY came first.
func idleH2(t *testing.T, s *servertest.Server, ca *x509.CertPool, limit time.Duration) (time.Duration, bool) {
	t.Helper()
	c, err := tls.DialWithDialer(from("127.0.0.1"), "tcp", s.GRPC, &tls.Config{RootCAs: ca, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := h2Frame(c, 0x4, 0, 0, nil); err != nil { // SETTINGS
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(start.Add(limit))
	goaway := false
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("idle TLS+h2 connection still open after %v", limit)
			}
			return time.Since(start), goaway
		}
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return time.Since(start), goaway
		}
		switch typ, flags := hdr[3], hdr[4]; {
		case typ == 0x4 && flags&1 == 0: // SETTINGS: acknowledge
			_ = h2Frame(c, 0x4, 1, 0, nil)
		case typ == 0x6 && flags&1 == 0: // PING: answer
			_ = h2Frame(c, 0x6, 1, 0, payload)
		case typ == 0x7: // GOAWAY
			goaway = true
		}
	}
}

// TestIdleGRPCConnectionsAreClosed (finding 3): a TLS+h2 connection that
// calls nothing is closed after --grpc-max-connection-idle, one that never
// finishes its handshake after --grpc-handshake-timeout; a real client
// that pauses longer than that simply reconnects.
func TestIdleGRPCConnectionsAreClosed(t *testing.T) {
	s := servertest.Start(t, "--grpc-max-connection-idle", "1s", "--grpc-handshake-timeout", "1s")
	ca := caPool(t, s, "127.0.0.1")
	took, goaway := idleH2(t, s, ca, 20*time.Second)
	if !goaway || took > 8*time.Second {
		t.Errorf("idle h2 connection: closed after %v, GOAWAY %v; want GOAWAY and close soon after 1s", took, goaway)
	}

	c, err := from("127.0.0.1").Dial("tcp", s.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if took := closedWithin(t, c, 10*time.Second, "no TLS handshake"); took > 5*time.Second {
		t.Errorf("connection without a handshake closed after %v, want about 1s", took)
	}

	hc := hardware.NewHardwareServiceClient(dialFrom(t, s, ca, "127.0.0.1", adminToken))
	for range 2 {
		if _, err := hc.ByMAC(ctx(t), &hardware.GetRequest{Mac: mac1}); status.Code(err) != codes.NotFound {
			t.Fatalf("call after an idle pause: %v, want NotFound", err)
		}
		time.Sleep(2500 * time.Millisecond)
	}
}

// TestConnectionsPerSource (finding 3): one address holding
// --max-conns-per-source connections gets no more, on either listener;
// another address still gets in, and so does the first once it lets one
// go.
func TestConnectionsPerSource(t *testing.T) {
	s := servertest.Start(t, "--max-conns-per-source", "3", "--http-read-header-timeout", "60s")
	ca := caPool(t, s, "127.0.0.9")
	httpAddr := strings.TrimPrefix(s.HTTP, "http://")
	get := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n"); err != nil {
			return err
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	for _, l := range []struct {
		name string
		open func(src string) (net.Conn, error)
		use  func(c net.Conn) error
	}{
		{"http", func(src string) (net.Conn, error) { return from(src).Dial("tcp", httpAddr) }, get},
		{"grpc", func(src string) (net.Conn, error) {
			c, err := tls.DialWithDialer(from(src), "tcp", s.GRPC, &tls.Config{RootCAs: ca, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
			if err != nil {
				return nil, err
			}
			return c, nil
		}, func(c net.Conn) error { return nil }},
	} {
		t.Run(l.name, func(t *testing.T) {
			var held []net.Conn
			for i := range 3 {
				c, err := l.open("127.0.0.1")
				if err != nil {
					t.Fatalf("connection %d of 3: %v", i+1, err)
				}
				held = append(held, c)
				defer c.Close()
			}
			// The fourth from the same address: closed at once, before TLS
			// or the first request.
			c, err := l.open("127.0.0.1")
			if err == nil {
				err = l.use(c)
				c.Close()
			}
			if err == nil || isTimeout(err) {
				t.Fatalf("fourth connection from 127.0.0.1: served or held (%v), want it closed by the server", err)
			}
			// Another address gets in and is served.
			if l.name == "http" {
				res, err := httpFrom("127.0.0.2").Get(s.HTTP + "/healthz")
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("from 127.0.0.2: %v %v", res, err)
				}
				res.Body.Close()
			} else {
				hc := hardware.NewHardwareServiceClient(dialFrom(t, s, ca, "127.0.0.2", adminToken))
				if _, err := hc.ByMAC(ctx(t), &hardware.GetRequest{Mac: mac1}); status.Code(err) != codes.NotFound {
					t.Fatalf("gRPC from 127.0.0.2: %v, want NotFound", err)
				}
			}
			// Once one closes, the first address may connect again.
			held[0].Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := l.open("127.0.0.1")
				if err == nil {
					err = l.use(c)
					c.Close()
				}
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("127.0.0.1 after closing one: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	log := s.Stderr.String()
	for _, want := range []string{`"msg":"connection refused: too many open from one address","listener":"http","source":"127.0.0.1"`,
		`"listener":"grpc","source":"127.0.0.1"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if code, out := s.Rest("GET", "/metrics", "", ""); code != 200 || !strings.Contains(out, `herd_server_connections_refused_total{listener="grpc"}`) {
		t.Errorf("metrics lack the refused connections")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestWorkerCredentialsAreRevoked (finding 4): after its workflow is
// deleted a machine's credential reads nothing of it; after its hardware
// is deleted the credential opens nothing, and pushing the same hardware
// id again does not bring it back.
func TestWorkerCredentialsAreRevoked(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd(slowTemplate, "template", "create")
	id := s.CreateWorkflow("patient", `{"device_1":"`+mac1+`"}`)
	old := s.WorkerToken(hw1)
	w := workflow.NewWorkflowServiceClient(s.Dial(old))
	contexts := func() ([]*workflow.WorkflowContext, error) {
		l, err := w.GetWorkflowContextList(ctx(t), &workflow.WorkflowContextRequest{WorkerId: hw1})
		return l.GetWorkflowContexts(), err
	}
	if l, err := contexts(); err != nil || len(l) != 1 {
		t.Fatalf("own contexts: %v %v", l, err)
	}
	if _, err := w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id}); err != nil {
		t.Fatalf("own actions: %v", err)
	}

	s.MustHerd("", "workflow", "delete", id)
	_, err := w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
	wantCode(t, err, codes.NotFound, "workflow "+id+": not found")
	_, err = w.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	wantCode(t, err, codes.NotFound, "workflow "+id+": not found")
	if l, err := contexts(); err != nil || len(l) != 0 {
		t.Fatalf("contexts after the workflow's deletion: %v %v", l, err)
	}

	s.MustHerd("", "hardware", "delete", hw1)
	refused := func(what string, c workflow.WorkflowServiceClient) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := c.GetWorkflowContextList(ctx(t), &workflow.WorkflowContextRequest{WorkerId: hw1})
			if status.Code(err) == codes.Unauthenticated {
				wantCode(t, err, codes.Unauthenticated, "revoked")
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v, want Unauthenticated", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	refused("old credential after the hardware's deletion", w)

	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	fresh := s.WorkerToken(hw1)
	if fresh == old {
		t.Fatal("the record pushed again got the old credential back")
	}
	refused("old credential after the same id was pushed again", w)
	if _, err := workflow.NewWorkflowServiceClient(s.Dial(fresh)).GetWorkflowContextList(ctx(t), &workflow.WorkflowContextRequest{WorkerId: hw1}); err != nil {
		t.Fatalf("the new record's credential: %v", err)
	}
	// Nor does a restart bring the old one back.
	s.Restart()
	refused("old credential after a restart", workflow.NewWorkflowServiceClient(s.Dial(old)))
}

// TestWorkerCredentialEndsWithItsWorkflow (finding 1): once the workflow
// has ended, the machine's credential no longer reads its actions (their
// environment may hold secrets) or its data, nor writes the data; the
// answer is the one for a workflow that does not exist. The operator still
// reads everything, and late log lines of the last action are still taken.
func TestWorkerCredentialEndsWithItsWorkflow(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd(slowTemplate, "template", "create")
	id := s.CreateWorkflow("patient", `{"device_1":"`+mac1+`"}`)
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw1)))
	acts, err := w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
	if err != nil || len(acts.GetActionList()) == 0 {
		t.Fatalf("own actions while the workflow runs: %v %v", acts, err)
	}
	if _, err := w.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(`{"step":1}`)}); err != nil {
		t.Fatalf("own data while the workflow runs: %v", err)
	}
	for _, a := range acts.GetActionList() {
		for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
			if _, err := w.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: a.GetTaskName(),
				ActionName: a.GetName(), ActionStatus: st}); err != nil {
				t.Fatalf("report %s %s: %v", a.GetName(), st, err)
			}
		}
	}
	admin := workflow.NewWorkflowServiceClient(s.Dial(servertest.AdminToken))
	if wf, err := admin.GetWorkflow(ctx(t), &workflow.GetRequest{Id: id}); err != nil || wf.GetState() != workflow.State_STATE_SUCCESS {
		t.Fatalf("workflow after its last action: %v %v, want SUCCESS", wf.GetState(), err)
	}

	gone := "workflow " + id + ": not found"
	_, err = w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
	wantCode(t, err, codes.NotFound, gone)
	_, err = w.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	wantCode(t, err, codes.NotFound, gone)
	_, err = w.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(`{"step":2}`)})
	wantCode(t, err, codes.NotFound, gone)

	last := acts.GetActionList()[len(acts.GetActionList())-1]
	if _, err := w.ReportActionLogs(ctx(t), &workflow.ActionLogs{WorkflowId: id, TaskName: last.GetTaskName(), ActionName: last.GetName(),
		Lines: []*workflow.LogLine{{Stream: "stdout", Text: "last words"}}}); err != nil {
		t.Errorf("late log lines of the last action: %v", err)
	}
	if a, err := admin.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id}); err != nil || len(a.GetActionList()) != len(acts.GetActionList()) {
		t.Errorf("the operator reads the ended workflow's actions: %v %v", a, err)
	}
	d, err := admin.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
	if err != nil || strings.ReplaceAll(string(d.GetData()), " ", "") != `{"step":1}` {
		t.Errorf("the ended workflow's data: %q %v, want the version written while it ran", d.GetData(), err)
	}
}

// TestWorkerCredentialsExpire (finding 4): a credential stops working at
// its expiry; the hardware Watch (what boots follows) hands out fresh ones
// before that.
func TestWorkerCredentialsExpire(t *testing.T) {
	s := servertest.Start(t, "--worker-token-lifetime", "4s")
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	stream, err := hardware.NewHardwareServiceClient(s.Dial(serviceToken)).Watch(ctx(t), &hardware.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetWorkerToken() == "" {
		t.Fatalf("first event %v (%v), want hw1 with a credential", ev, err)
	}
	first := ev.GetWorkerToken()
	claims, err := workertoken.Verify(s.WorkerKey(), first, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(claims.Expires); left > 4*time.Second || left < 2*time.Second {
		t.Fatalf("credential has %v left, want 3-4 s of a 4 s lifetime", left)
	}
	call := func(tok string) error {
		_, err := workflow.NewWorkflowServiceClient(s.Dial(tok)).GetWorkflowContextList(ctx(t), &workflow.WorkflowContextRequest{WorkerId: hw1})
		return err
	}
	if err := call(first); err != nil {
		t.Fatalf("fresh credential: %v", err)
	}
	// Meanwhile the watch renews it, every quarter of the lifetime.
	latest := first
	for time.Now().Before(claims.Expires.Add(200 * time.Millisecond)) {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetType() == hardware.WatchEvent_TYPE_UPDATED && ev.GetHardware().GetId() == hw1 {
			latest = ev.GetWorkerToken()
		}
	}
	err = call(first)
	wantCode(t, err, codes.Unauthenticated, "expired")
	if latest == first {
		t.Fatal("the watch sent no fresher credential before the first one expired")
	}
	if err := call(latest); err != nil {
		t.Fatalf("the renewed credential: %v", err)
	}
}

// logLines are the server's JSON log lines with msg.
func logLines(s *servertest.Server, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(s.Stderr.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// findLine returns the first line with msg whose fields match want
// (regular expressions), or fails the test.
func findLine(t *testing.T, s *servertest.Server, msg string, want map[string]string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
	lines:
		for _, l := range logLines(s, msg) {
			for k, re := range want {
				if !regexp.MustCompile(re).MatchString(fmt.Sprint(l[k])) {
					continue lines
				}
			}
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line with %v in the log:\n%s", msg, want, s.Stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAuditTrail (finding 7): every call's log lines carry the caller's
// address and identity; a forged credential or a forged report shows who
// tried it, from where and why it was refused, at warn and rate-limited.
func TestAuditTrail(t *testing.T) {
	// The workers call from several loopback addresses (hardware records
	// take none): trusted as NAT gateways, so that the calls get as far as
	// the checks this test logs.
	s := servertest.Start(t, "--worker-trusted-sources", "127.0.0.0/8")
	ca := caPool(t, s, "127.0.0.1")
	for _, f := range []string{"hardware-1.json", "hardware-2.json"} {
		s.MustHerd(readFile(t, f), "hardware", "push")
	}
	s.MustHerd(slowTemplate, "template", "create")
	id := s.CreateWorkflow("patient", `{"device_1":"`+mac1+`"}`)
	tokens := s.WorkerTokens()

	// A forged credential (hw1's id, a made-up signature) from 127.0.0.2.
	forged := hw1 + ".1.9999999999.bm90LWEtc2lnbmF0dXJl"
	_, err := workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, "127.0.0.2", forged)).ReportActionStatus(ctx(t),
		&workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "only", ActionName: "first", ActionStatus: workflow.State_STATE_SUCCESS})
	wantCode(t, err, codes.Unauthenticated, "invalid token")
	l := findLine(t, s, "call refused: authentication failed", map[string]string{
		"peer": `^127\.0\.0\.2:\d+$`, "reason": "^invalid token$", "identity": "^unauthenticated$", "level": "^WARN$",
		"method": "ReportActionStatus$"})
	t.Logf("forged credential: %v", l)

	// hw2's real credential reporting hw1's action, from 127.0.0.3.
	_, err = workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, "127.0.0.3", tokens[hw2])).ReportActionStatus(ctx(t),
		&workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "only", ActionName: "first", ActionStatus: workflow.State_STATE_SUCCESS})
	wantCode(t, err, codes.NotFound, id)
	findLine(t, s, "call refused", map[string]string{"peer": `^127\.0\.0\.3:\d+$`, "identity": "^worker:" + hw2 + "$", "code": "^NotFound$"})
	// hw2 asking for hw1's contexts: a warning.
	_, err = workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, "127.0.0.3", tokens[hw2])).GetWorkflowContextList(ctx(t),
		&workflow.WorkflowContextRequest{WorkerId: hw1})
	wantCode(t, err, codes.PermissionDenied, hw1)
	findLine(t, s, "call refused: authentication failed", map[string]string{"peer": `^127\.0\.0\.3:`, "identity": "^worker:" + hw2 + "$", "level": "^WARN$"})

	// The real report, from 127.0.0.4: its line says who and from where.
	report(t, workflow.NewWorkflowServiceClient(dialFrom(t, s, ca, "127.0.0.4", tokens[hw1])), id, "only", "first", workflow.State_STATE_RUNNING)
	findLine(t, s, "action reported", map[string]string{"peer": `^127\.0\.0\.4:\d+$`, "identity": "^worker:" + hw1 + "$", "state": "RUNNING"})
	// Admin and service calls too.
	if _, err := hardware.NewHardwareServiceClient(dialFrom(t, s, ca, "127.0.0.5", adminToken)).ByID(ctx(t), &hardware.GetRequest{Id: hw1}); err != nil {
		t.Fatal(err)
	}
	findLine(t, s, "call", map[string]string{"peer": `^127\.0\.0\.5:`, "identity": "^admin$", "method": "ByID$", "level": "^INFO$"})
	if _, err := hardware.NewHardwareServiceClient(dialFrom(t, s, ca, "127.0.0.5", serviceToken)).ByMAC(ctx(t), &hardware.GetRequest{Mac: mac1}); err != nil {
		t.Fatal(err)
	}
	findLine(t, s, "call", map[string]string{"peer": `^127\.0\.0\.5:`, "identity": "^service$", "method": "ByMAC$"})

	// Over REST the peer is the HTTP client, whatever headers it sends.
	req, _ := http.NewRequest("DELETE", s.HTTP+"/v1/hardware/"+hw2, nil)
	req.Header.Set("Authorization", "Bearer wrong")
	req.Header.Set("Grpc-Metadata-X-Herd-Peer", "6.6.6.6:1")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	res, err := httpFrom("127.0.0.6").Do(req)
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("REST with a wrong token: %v %v", res, err)
	}
	res.Body.Close()
	findLine(t, s, "call refused: authentication failed", map[string]string{"peer": `^127\.0\.0\.6:\d+$`, "method": "HardwareService/Delete$"})

	// A flood of bad credentials from one address logs a few lines, not
	// one per call, and says how many it held back.
	flood := hardware.NewHardwareServiceClient(dialFrom(t, s, ca, "127.0.0.7", "guess"))
	for range 100 {
		_, err := flood.ByID(ctx(t), &hardware.GetRequest{Id: hw1})
		wantCode(t, err, codes.Unauthenticated, "invalid token")
	}
	n := 0
	for _, l := range logLines(s, "call refused: authentication failed") {
		if strings.HasPrefix(fmt.Sprint(l["peer"]), "127.0.0.7:") {
			n++
		}
	}
	if n == 0 || n > 10 {
		t.Errorf("%d warnings for 100 refused calls from one address, want a handful", n)
	}
	if code, out := s.Rest("GET", "/metrics", "", ""); code != 200 || !regexp.MustCompile(`herd_auth_failures_total\{reason="invalid token"\} 1\d\d`).MatchString(out) {
		t.Errorf("herd_auth_failures_total does not count the refused calls:\n%s", out)
	}
	// No credential ever reaches the log.
	for _, secret := range []string{adminToken, serviceToken, tokens[hw1], tokens[hw2], forged} {
		if strings.Contains(s.Stderr.String(), secret) {
			t.Errorf("the log holds a credential: %s", secret)
		}
	}
}

// TestWorkerErrorsSayNothing (finding 8): a machine asking about another
// machine's workflow, a deleted one or one that never existed gets the
// same answer from every worker call.
func TestWorkerErrorsSayNothing(t *testing.T) {
	s := servertest.Start(t)
	for _, f := range []string{"hardware-1.json", "hardware-2.json"} {
		s.MustHerd(readFile(t, f), "hardware", "push")
	}
	s.MustHerd(slowTemplate, "template", "create")
	other := s.CreateWorkflow("patient", `{"device_1":"`+mac1+`"}`)
	deleted := s.CreateWorkflow("patient", `{"device_1":"`+mac2+`"}`)
	s.MustHerd("", "workflow", "delete", deleted)
	const missing = "9c1f2f5e-0000-4000-8000-00000000abcd"
	w := workflow.NewWorkflowServiceClient(s.Dial(s.WorkerToken(hw2)))

	calls := map[string]func(id string) error{
		"GetWorkflowActions": func(id string) error {
			_, err := w.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
			return err
		},
		"GetWorkflowData": func(id string) error {
			_, err := w.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
			return err
		},
		"GetWorkflowMetadata": func(id string) error {
			_, err := w.GetWorkflowMetadata(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
			return err
		},
		"GetWorkflowDataVersion": func(id string) error {
			_, err := w.GetWorkflowDataVersion(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
			return err
		},
		"UpdateWorkflowData": func(id string) error {
			_, err := w.UpdateWorkflowData(ctx(t), &workflow.UpdateWorkflowDataRequest{WorkflowId: id, Data: []byte(`{}`)})
			return err
		},
		"ReportActionStatus": func(id string) error {
			_, err := w.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: "only", ActionName: "first", ActionStatus: workflow.State_STATE_RUNNING})
			return err
		},
		"ReportActionLogs": func(id string) error {
			_, err := w.ReportActionLogs(ctx(t), &workflow.ActionLogs{WorkflowId: id, TaskName: "only", ActionName: "first",
				Lines: []*workflow.LogLine{{Stream: "stdout", Text: "x"}}})
			return err
		},
	}
	for name, fn := range calls {
		answer := func(id string) string {
			st, _ := status.FromError(fn(id))
			return st.Code().String() + ": " + strings.ReplaceAll(st.Message(), id, "<id>")
		}
		want := answer(missing)
		if want != "NotFound: workflow <id>: not found" {
			t.Errorf("%s of a missing workflow: %s", name, want)
		}
		if got := answer(other); got != want {
			t.Errorf("%s of another machine's workflow: %q, of a missing one %q", name, got, want)
		}
	}
	// Reads of its own deleted workflow: the same answer too (a report on
	// it is told the workflow was deleted: it is the machine's own).
	for _, name := range []string{"GetWorkflowActions", "GetWorkflowData", "GetWorkflowMetadata", "GetWorkflowDataVersion", "UpdateWorkflowData"} {
		st, _ := status.FromError(calls[name](deleted))
		if got := st.Code().String() + ": " + strings.ReplaceAll(st.Message(), deleted, "<id>"); got != "NotFound: workflow <id>: not found" {
			t.Errorf("%s of its own deleted workflow: %s", name, got)
		}
	}
}

// TestServiceToken (finding 9): the service token does what herd-boots and
// herd-metadata do (watch and look up hardware, record boot events) and
// nothing else; the admin token still does it too.
func TestServiceToken(t *testing.T) {
	s := servertest.Start(t)
	s.MustHerd(readFile(t, "hardware-1.json"), "hardware", "push")
	s.MustHerd(slowTemplate, "template", "create")
	id := s.CreateWorkflow("patient", `{"device_1":"`+mac1+`"}`)
	conn := s.Dial(serviceToken)
	hc, tc, wc := hardware.NewHardwareServiceClient(conn), template.NewTemplateServiceClient(conn), workflow.NewWorkflowServiceClient(conn)

	// What boots and metadata do: the inventory they keep (Watch), with
	// the machines' worker credentials for boots' scripts.
	inv := inventory.New(slog.New(slog.DiscardHandler), nil)
	ictx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	go func() { _ = inv.Run(ictx, hc) }()
	if err := inv.WaitSynced(ctx(t)); err != nil {
		t.Fatal(err)
	}
	m, ok := inv.ByID(hw1)
	if !ok || m.WorkerToken != s.WorkerToken(hw1) {
		t.Fatalf("inventory over the service token: %+v %v", m, ok)
	}
	for name, fn := range map[string]func() error{
		"ByMAC": func() error { _, err := hc.ByMAC(ctx(t), &hardware.GetRequest{Mac: mac1}); return err },
		"ByIP":  func() error { _, err := hc.ByIP(ctx(t), &hardware.GetRequest{Ip: "10.1.0.11"}); return err },
		"ByID":  func() error { _, err := hc.ByID(ctx(t), &hardware.GetRequest{Id: hw1}); return err },
		"All": func() error {
			st, err := hc.All(ctx(t), &hardware.Empty{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
		"RecordBootEvent": func() error {
			res, err := wc.RecordBootEvent(ctx(t), &workflow.BootEvent{HardwareId: hw1, Message: "ipxe script served"})
			if err == nil && res.GetWorkflowId() != id {
				err = fmt.Errorf("recorded on %q, want %s", res.GetWorkflowId(), id)
			}
			return err
		},
	} {
		if err := fn(); err != nil {
			t.Errorf("service token, %s: %v", name, err)
		}
	}
	if out := s.MustHerd("", "workflow", "events", id); !strings.Contains(out, "ipxe script served") {
		t.Errorf("the boot event is not on the workflow:\n%s", out)
	}

	// Everything else is refused, changes and secrets alike.
	denied := map[string]func() error{
		"Push hardware": func() error {
			_, err := hc.Push(ctx(t), &hardware.PushRequest{Data: &hardware.Hardware{Id: hw2}})
			return err
		},
		"Delete hardware": func() error { _, err := hc.Delete(ctx(t), &hardware.DeleteRequest{Id: hw1}); return err },
		"CreateTemplate": func() error {
			_, err := tc.CreateTemplate(ctx(t), &template.WorkflowTemplate{Name: "evil", Data: strings.Replace(slowTemplate, "patient", "evil", 1)})
			return err
		},
		"GetTemplate": func() error {
			_, err := tc.GetTemplate(ctx(t), &template.GetRequest{GetBy: &template.GetRequest_Name{Name: "patient"}})
			return err
		},
		"DeleteTemplate": func() error {
			_, err := tc.DeleteTemplate(ctx(t), &template.GetRequest{GetBy: &template.GetRequest_Name{Name: "patient"}})
			return err
		},
		"CreateWorkflow": func() error {
			_, err := wc.CreateWorkflow(ctx(t), &workflow.CreateRequest{Template: "patient", Hardware: `{"device_1":"` + mac1 + `"}`})
			return err
		},
		"DeleteWorkflow": func() error { _, err := wc.DeleteWorkflow(ctx(t), &workflow.GetRequest{Id: id}); return err },
		"GetWorkflow":    func() error { _, err := wc.GetWorkflow(ctx(t), &workflow.GetRequest{Id: id}); return err },
		"GetWorkflowActions": func() error {
			_, err := wc.GetWorkflowActions(ctx(t), &workflow.WorkflowActionsRequest{WorkflowId: id})
			return err
		},
		"GetWorkflowData": func() error {
			_, err := wc.GetWorkflowData(ctx(t), &workflow.GetWorkflowDataRequest{WorkflowId: id})
			return err
		},
		"ReportActionStatus": func() error {
			_, err := wc.ReportActionStatus(ctx(t), &workflow.WorkflowActionStatus{WorkflowId: id, WorkerId: hw1, TaskName: "only", ActionName: "first", ActionStatus: workflow.State_STATE_SUCCESS})
			return err
		},
		"ListWorkflows": func() error {
			st, err := wc.ListWorkflows(ctx(t), &workflow.Empty{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
	}
	for name, fn := range denied {
		if err := fn(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("service token, %s: %v, want PermissionDenied", name, err)
		}
	}
	for path, want := range map[string]int{"/v1/hardware/" + hw1: 200, "/v1/workflows/" + id: 403, "/v1/templates": 403} {
		if code, out := s.Rest("GET", path, "", serviceToken); code != want {
			t.Errorf("REST GET %s with the service token: %d %s, want %d", path, code, out, want)
		}
	}
	if code, _ := s.Rest("DELETE", "/v1/hardware/"+hw1, "", serviceToken); code != 403 {
		t.Errorf("REST DELETE hardware with the service token: %d, want 403", code)
	}
	if out := s.MustHerd("", "workflow", "get", id, "-o", "json"); !strings.Contains(out, "STATE_PENDING") {
		t.Errorf("the workflow changed: %s", out)
	}

	// The admin token still does the services' calls (deployments that
	// have not switched).
	admin := workflow.NewWorkflowServiceClient(s.Dial(adminToken))
	if _, err := admin.RecordBootEvent(ctx(t), &workflow.BootEvent{HardwareId: hw1, Message: "with the admin token"}); err != nil {
		t.Fatal(err)
	}
	if toks, err := servertest.WatchTokens(ctx(t), hardware.NewHardwareServiceClient(s.Dial(adminToken))); err != nil || toks[hw1] == "" {
		t.Fatalf("admin watch: %v %v", toks, err)
	}
}
