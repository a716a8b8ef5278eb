package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/herd-metal/herd/pkg/pgtest"
	"github.com/herd-metal/herd/pkg/servertest"
)

// TestStateDirLock: while one holder has the state directory's lock,
// another open of the lock file cannot take it; once released it can.
func TestStateDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	unlock, err := lockStateDir(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(filepath.Join(dir, stateLockName))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := flock(other, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second lock while held: %v, want EWOULDBLOCK", err)
	}
	unlock()
	if err := flock(other, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("second lock after release: %v", err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestReplicasShareOneHost: two herd-servers started at once on one empty
// state directory and one database, both with --reuse-port on the same two
// ports, both serve; they made one worker key; with one stopped, the port
// still answers. Without --reuse-port the second is refused, and told why.
func TestReplicasShareOneHost(t *testing.T) {
	db := pgtest.NewDatabase(t)
	state := filepath.Join(t.TempDir(), "state")
	grpcAddr, httpAddr := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	env := map[string]string{"HERD_AUTH_TOKEN": "admin-token-for-the-test"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	args := func(extra ...string) []string {
		return append([]string{"--db-url", db, "--state-dir", state, "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
			"--log-format", "json", "--bmc-poll-interval", "0"}, extra...)
	}
	type replica struct {
		cancel context.CancelFunc
		log    *servertest.Buffer
		done   chan struct{} // closed when run returned, err then set
		err    *error
	}
	start := func(extra ...string) replica {
		ctx, cancel := context.WithCancel(context.Background())
		r := replica{cancel: cancel, log: &servertest.Buffer{}, done: make(chan struct{}), err: new(error)}
		go func() { *r.err = run(ctx, args(extra...), lookup, r.log); close(r.done) }()
		t.Cleanup(func() { cancel(); <-r.done })
		return r
	}
	serving := func(name string, r replica) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(r.log.String(), `"msg":"serving"`) {
			select {
			case <-r.done:
				t.Fatalf("%s ended before serving: %v\n%s", name, *r.err, r.log)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not serving within 60 s:\n%s", name, r.log)
			}
		}
	}
	a, b := start("--reuse-port"), start("--reuse-port")
	serving("replica a", a)
	serving("replica b", b)

	// One worker key and no temporary files: the second waited for the
	// first's files instead of writing its own.
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	for _, want := range []string{"worker.key", "bmc.key", "ca.pem"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("state directory %v lacks %s", names, want)
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, ".") && n != stateLockName {
			t.Errorf("state directory holds a leftover %s: %v", n, names)
		}
	}

	// A third without the option cannot bind, and the error says what to do.
	c := start()
	select {
	case <-c.done:
		if err := *c.err; err == nil || !strings.Contains(err.Error(), "--reuse-port") {
			t.Errorf("a replica without --reuse-port: %v, want a bind error naming --reuse-port", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("a replica without --reuse-port is still running:\n%s", c.log)
	}

	a.cancel()
	<-a.done
	if err := *a.err; err != nil {
		t.Fatalf("replica a: %v", err)
	}
	// Every new connection now reaches b.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for i := range 16 {
		res, err := client.Get("http://" + httpAddr + "/healthz")
		if err != nil {
			t.Fatalf("healthz %d after a stopped: %v", i, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("healthz %d after a stopped: %s", i, res.Status)
		}
	}
}
