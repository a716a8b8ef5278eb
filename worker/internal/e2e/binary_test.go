package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
)

// TestBinaryStopsOnSIGTERM runs the herd-worker binary as the OSIE would;
// SIGTERM in the middle of an action stops its container, reports the
// action FAILED and leaves nothing behind. /healthz and /metrics answer.
func TestBinaryStopsOnSIGTERM(t *testing.T) {
	e := setup(t)
	id := e.workflow(t, "sleepy", `version: "0.1"
name: sleepy
tasks:
  - name: t
    worker: "{{.device_1}}"
    actions:
      - name: sleepy
        image: `+prog+`
        command: [sleep, 1h]
`)
	bin := buildWorker(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "HERD_SERVER="+e.s.GRPC, "HERD_CERT_URL="+e.s.HTTP+"/cert", "HERD_TOKEN="+e.s.WorkerToken(hw1),
		"HERD_ID="+hw1, "HERD_DOCKER_HOST="+e.d.Host, "HERD_PULL=missing", "HERD_PRIVILEGED=false", "HERD_DATA_DIR="+t.TempDir(),
		"HERD_METRICS_ADDR=127.0.0.1:0", "HERD_POLL_INTERVAL=200ms", "HERD_STOP_GRACE=3s", "HERD_LOG_LEVEL=debug")
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()
	var logs servertest.Buffer
	metrics := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var ev struct{ Msg, Metrics string }
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Msg == "serving" {
				metrics <- ev.Metrics
			}
		}
	}()
	var addr string
	select {
	case addr = <-metrics:
	case <-time.After(30 * time.Second):
		t.Fatalf("herd-worker did not serve its metrics:\n%s", logs.String())
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || (path == "/metrics" && !strings.Contains(string(b), "herd_worker_")) {
			t.Errorf("%s: %d %s", path, res.StatusCode, b)
		}
	}
	// Wait for the action's container to run.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ids, _ := e.d.Containers(ctx(t))
		if trail, _ := e.events(t, id); len(ids) == 1 && len(trail) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the action did not start:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let the program install its signal handler
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("herd-worker exited with %v:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("herd-worker did not stop within 30s of SIGTERM:\n%s", logs.String())
	}
	trail, msgs := e.events(t, id)
	if !equal(trail, []string{"sleepy:RUNNING", "sleepy:FAILED"}) || !strings.Contains(msgs["sleepy:FAILED"], "worker was stopped") {
		t.Errorf("events %q, messages %q", trail, msgs)
	}
	e.noContainers(t)
}

// buildWorker builds the herd-worker binary (-race) into the test's
// temporary directory and returns its path.
func buildWorker(t *testing.T) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	bin := filepath.Join(t.TempDir(), "herd-worker")
	build := exec.Command("go", "build", "-race", "-o", bin, "./cmd/herd-worker")
	build.Dir = filepath.Join(filepath.Dir(here), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
