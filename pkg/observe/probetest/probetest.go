// Package probetest holds the one test of a service's healthcheck
// subcommand (the container images' health check) that herd-server,
// herd-boots and herd-metadata share.
package probetest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-metal/herd/pkg/observe"
)

// Run runs the service's command with args and the environment lookup.
type Run func(args []string, lookup func(string) (string, bool)) error

// Healthcheck checks that `healthcheck` probes the /healthz of the service
// listening on addrFlag (or its environment variable envName), a wildcard
// host meaning 127.0.0.1, from the same flags and environment the service
// runs with: 200 (ok or degraded) passes, 503 and nothing listening fail.
func Healthcheck(t *testing.T, service, addrFlag, envName string, run Run) {
	t.Helper()
	var sick error
	mux := http.NewServeMux()
	observe.Mount(mux, service, observe.NewRegistry(), func(context.Context) error { return sick })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	none := func(string) (string, bool) { return "", false }

	for _, args := range [][]string{{addrFlag, srv.Listener.Addr().String(), "healthcheck"}, {addrFlag, "0.0.0.0:" + port, "healthcheck"}} {
		if err := run(args, none); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	env := func(k string) (string, bool) { return ":" + port, k == envName }
	if err := run([]string{"healthcheck"}, env); err != nil {
		t.Errorf("address from %s: %v", envName, err)
	}
	sick = errors.New("not ready")
	args := []string{addrFlag, srv.Listener.Addr().String(), "healthcheck"}
	if err := run(args, none); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("unhealthy: %v, want a 503", err)
	}
	// Degraded (serving from memory while herd-server is away) passes: a
	// restart would not bring the server back and would lose the memory.
	sick = observe.Degraded(errors.New("herd-server unreachable"))
	if err := run(args, none); err != nil {
		t.Errorf("degraded: %v, want the check to pass", err)
	}
	srv.Close()
	sick = nil
	if err := run(args, none); err == nil {
		t.Error("nothing listening: no error")
	}
}
