package observe

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbeURL(t *testing.T) {
	for _, tt := range []struct{ addr, want, err string }{
		{":80", "http://127.0.0.1:80/healthz", ""},
		{"0.0.0.0:42114", "http://127.0.0.1:42114/healthz", ""},
		{"[::]:50061", "http://127.0.0.1:50061/healthz", ""},
		{"10.0.5.1:80", "http://10.0.5.1:80/healthz", ""},
		{"[fd00::1]:80", "http://[fd00::1]:80/healthz", ""},
		{"localhost:8080", "http://localhost:8080/healthz", ""},
		{"10.0.5.1", "", "missing port"},
		{"10.0.5.1:", "", "has no port"},
	} {
		got, err := ProbeURL(tt.addr)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ProbeURL(%q) = %q, %v; want error %q", tt.addr, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ProbeURL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

func TestProbe(t *testing.T) {
	var sick error
	mux := http.NewServeMux()
	Mount(mux, "herd-test", NewRegistry(), func(context.Context) error { return sick })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	ctx := context.Background()

	// The service's own listen address, as its flag holds it: a wildcard
	// host is probed on loopback.
	for _, addr := range []string{srv.Listener.Addr().String(), ":" + port, "0.0.0.0:" + port} {
		if err := Probe(ctx, addr); err != nil {
			t.Errorf("healthy, probing %s: %v", addr, err)
		}
	}
	sick = errors.New("database: connection refused")
	if err := Probe(ctx, ":"+port); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unhealthy: %v, want the 503 and the service's reason", err)
	}
	sick = nil

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if err := Probe(ctx, closed); err == nil {
		t.Errorf("probing %s where nothing listens: no error", closed)
	}
	if err := Probe(ctx, "no-port"); err == nil {
		t.Error("a listen address without a port: no error")
	}
}
