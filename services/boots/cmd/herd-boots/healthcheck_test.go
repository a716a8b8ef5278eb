package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/herd-metal/herd/pkg/observe"
)

// healthcheck probes the /healthz of the herd-boots listening on --http-addr
// (the container image's health check), from the same flags and
// environment the service runs with, and needs nothing else.
func TestHealthcheck(t *testing.T) {
	var sick error
	mux := http.NewServeMux()
	observe.Mount(mux, "herd-boots", observe.NewRegistry(), func(context.Context) error { return sick })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	none := func(string) (string, bool) { return "", false }

	for _, args := range [][]string{{"--http-addr", srv.Listener.Addr().String(), "healthcheck"}, {"--http-addr", "0.0.0.0:" + port, "healthcheck"}} {
		if err := run(context.Background(), args, none, io.Discard); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	env := func(k string) (string, bool) { return ":" + port, k == "HERD_HTTP_ADDR" }
	if err := run(context.Background(), []string{"healthcheck"}, env, io.Discard); err != nil {
		t.Errorf("address from HERD_HTTP_ADDR: %v", err)
	}
	sick = errors.New("hardware inventory not synced")
	args := []string{"--http-addr", srv.Listener.Addr().String(), "healthcheck"}
	if err := run(context.Background(), args, none, io.Discard); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("unhealthy: %v, want a 503", err)
	}
	srv.Close()
	sick = nil
	if err := run(context.Background(), args, none, io.Discard); err == nil {
		t.Error("nothing listening: no error")
	}
}
