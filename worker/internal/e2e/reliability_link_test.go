package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/reliability"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/workflow"
)

// TestReliabilityWorkerLinkLoss (issue 16): the real herd-worker runs in a
// network namespace of its own, reaching herd-server over a veth pair to a
// second namespace that relays to the server's gRPC port on the host's
// loopback. While the middle action of three runs (it prints a line every
// half second), the worker's end of the veth goes down (3 s short, 30 s
// full) and up again. Every action must end SUCCESS exactly once (one
// RUNNING and one SUCCESS event each) and every output line be stored
// once; the recovery is from the link up to the first report (event or
// output batch) the server stores after it.
func TestReliabilityWorkerLinkLoss(t *testing.T) {
	outage := time.Duration(reliability.Size(3, 30)) * time.Second
	const tickEvery = 500 * time.Millisecond
	ticks := int((outage + 10*time.Second) / tickEvery)
	sub := subnet()
	e := setupWith(t, "--tls-hosts", sub+"1")
	serverNS, workerNS := namespace(t, "herd-lks-"), namespace(t, "herd-lkw-")
	veth(t, serverNS, "lks0", sub+"1/24", workerNS, "lkw0", sub+"2/24")
	_, port, err := net.SplitHostPort(e.s.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	relayAddr := net.JoinHostPort(sub+"1", port)
	forward(listenIn(t, serverNS, relayAddr), e.s.GRPC)

	id := e.workflow(t, "linkloss", tickingTemplate("linkloss", ticks, tickEvery))
	w := startWorkerIn(t, e, buildWorker(t), workerNS, relayAddr)

	// The link goes down once the ticking action's output is flowing.
	waitFor(t, 2*time.Minute, w, "the ticking action's output to reach herd-server", func() bool {
		return strings.Count(strings.Join(e.logs(t, id), "\n"), "ticking stdout tick") >= 3
	})
	ip(t, "-n", workerNS, "link", "set", "lkw0", "down")
	time.Sleep(200 * time.Millisecond)
	before := stored(t, e, id)
	time.Sleep(outage - 200*time.Millisecond)
	during := stored(t, e, id)
	ip(t, "-n", workerNS, "link", "set", "lkw0", "up")
	linkUp := time.Now()
	lost := 0
	if during != before {
		lost++
		t.Errorf("%d reports were stored while the link was down: the fault did not land", during-before)
	}
	waitFor(t, 5*time.Minute, w, "a report after the link was up", func() bool { return stored(t, e, id) > during })
	recovery := time.Since(linkUp)
	waitFor(t, 5*time.Minute, w, "the workflow to end", func() bool { return e.state(t, id) != workflow.State_STATE_RUNNING })
	took := time.Since(linkUp)

	trail, msgs := e.events(t, id)
	if !equal(trail, tickingTrail) {
		lost++
		t.Errorf("events %q\nwant   %q\nmessages %q", trail, tickingTrail, msgs)
	}
	if st := e.state(t, id); st != workflow.State_STATE_SUCCESS {
		lost++
		t.Errorf("workflow %v", st)
	}
	wantLines := tickingLines(ticks)
	lines := e.logs(t, id)
	if missing, twice := compareLines(lines, wantLines); missing+twice > 0 {
		lost += missing + twice
		t.Errorf("output lines: %d missing, %d stored twice; stored %q", missing, twice, lines)
	}
	if t.Failed() {
		t.Logf("herd-worker's log:\n%s", w.log.String())
	} else {
		t.Logf("link down at %s, up at %s; herd-worker's warnings:\n%s", linkUp.Add(-outage).Format(time.StampMilli), linkUp.Format(time.StampMilli), w.warnings())
	}
	retries := strings.Count(w.log.String(), `"msg":"herd-server call failed; retrying"`)
	reliability.Record(t, reliability.Row{
		Case: "Network lost between herd-worker and herd-server",
		Done: fmt.Sprintf("the real herd-worker (a private dockerd) in a network namespace of its own, reaching herd-server over a veth pair (10.x, the other end's namespace relaying to the server's loopback port); while the second of three actions printed a line every %v, the worker's end of the veth taken down for %v, then up", tickEvery, outage),
		Volume: fmt.Sprintf("1 workflow × 3 actions, %d output lines; %d action events and %d lines stored; the workflow %s %v after the link was up",
			len(wantLines), len(trail), len(lines), strings.TrimPrefix(e.state(t, id).String(), "STATE_"), took.Round(100*time.Millisecond)),
		Lost:     lost,
		Recovery: recovery,
		Notes:    fmt.Sprintf("recovery: from the link up to the first event or output batch herd-server stored after it; herd-worker retried %d calls (-race build)", retries),
	})
}

// tickingTemplate is a workflow of three actions: "before" and "after"
// print a line each, "ticking" between them prints "tick 1" ... "tick N",
// every apart.
func tickingTemplate(name string, n int, every time.Duration) string {
	return fmt.Sprintf(`version: "0.1"
name: %[1]s
tasks:
  - name: t
    worker: "{{.device_1}}"
    actions:
      - name: before
        image: %[2]s
        command: [echo, before the fault]
      - name: ticking
        image: %[2]s
        command: [tick, "%[3]d", %[4]s]
      - name: after
        image: %[2]s
        command: [echo, after the fault]
`, name, prog, n, every)
}

// tickingLines are the output lines of tickingTemplate's actions as
// env.logs gives them.
func tickingLines(n int) []string {
	lines := []string{"before stdout before the fault"}
	for i := 1; i <= n; i++ {
		lines = append(lines, fmt.Sprintf("ticking stdout tick %d", i))
	}
	return append(lines, "after stdout after the fault")
}

// tickingTrail is the events of tickingTemplate's workflow done once.
var tickingTrail = []string{"before:RUNNING", "before:SUCCESS", "ticking:RUNNING", "ticking:SUCCESS", "after:RUNNING", "after:SUCCESS"}

// workerProc is a herd-worker process the test started.
type workerProc struct {
	cmd  *exec.Cmd
	log  *servertest.Buffer
	done chan struct{} // closed once it has exited
}

// warnings are the lines of the worker's log at WARN or above.
func (w *workerProc) warnings() string {
	var b strings.Builder
	for _, l := range strings.Split(w.log.String(), "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// startWorkerIn runs the herd-worker binary bin (buildWorker) for machine
// 1 inside network namespace ns (nsenter execs it: the pid is the
// worker's; "": the test's own), dialling herd-server at addr with the
// server's CA from a file. It is stopped (SIGTERM, then SIGKILL) when the
// test ends.
func startWorkerIn(t *testing.T, e *env, bin, ns, addr string) *workerProc {
	t.Helper()
	res, err := http.Get(e.s.HTTP + "/cert")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("the server's CA: %d %v", res.StatusCode, err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	if ns != "" {
		cmd = exec.Command("nsenter", "--net=/run/netns/"+ns, "--", bin)
	}
	cmd.Env = append(os.Environ(), "HERD_SERVER="+addr, "HERD_CA_FILE="+caFile, "HERD_TOKEN="+e.s.WorkerToken(hw1),
		"HERD_ID="+hw1, "HERD_DOCKER_HOST="+e.d.Host, "HERD_PULL=missing", "HERD_PRIVILEGED=false", "HERD_DATA_DIR="+t.TempDir(),
		"HERD_METRICS_ADDR=127.0.0.1:0", "HERD_POLL_INTERVAL=200ms", "HERD_STOP_GRACE=3s", "HERD_LOG_LEVEL=debug")
	w := &workerProc{cmd: cmd, log: &servertest.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.log, w.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
		case <-time.After(20 * time.Second):
			w.kill()
		}
	})
	return w
}

// kill ends the worker with SIGKILL, as a crash would, and waits for it.
func (w *workerProc) kill() {
	_ = w.cmd.Process.Kill()
	<-w.done
}

// waitFor polls cond every 50 ms until it holds, failing the test after
// limit with the worker's log.
func waitFor(t *testing.T, limit time.Duration, w *workerProc, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; herd-worker's log:\n%s", limit, what, w.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stored is how many events and output lines herd-server holds for the
// workflow.
func stored(t *testing.T, e *env, id string) int {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	events, err := e.admin.ShowWorkflowEvents(c, &workflow.GetRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err := events.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	logs, err := e.admin.ShowActionLogs(c, &workflow.ActionLogsRequest{WorkflowId: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		l, err := logs.Recv()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		n += len(l.GetLines())
	}
}

// compareLines counts the lines of want missing from got and those got
// holds more than once (want's lines are distinct).
func compareLines(got, want []string) (missing, twice int) {
	seen := map[string]int{}
	for _, l := range got {
		seen[l]++
	}
	for _, l := range want {
		switch n := seen[l]; {
		case n == 0:
			missing++
		case n > 1:
			twice += n - 1
		}
	}
	return missing, twice
}
