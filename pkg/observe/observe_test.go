package observe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMount(t *testing.T) {
	var sick error
	mux := http.NewServeMux()
	Mount(mux, "herd-test", NewRegistry(), func(context.Context) error { return sick })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path string) (int, string) {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("healthy: %d %s", code, body)
	}
	sick = errors.New("database: connection refused")
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("unhealthy: %d %s", code, body)
	}
	sick = fmt.Errorf("inventory: %w", Degraded(errors.New("herd-server unreachable since 2026-12-02T22:00:00Z")))
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"status":"degraded"`) ||
		!strings.Contains(body, "degraded: herd-server unreachable since 2026-12-02T22:00:00Z") {
		t.Errorf("degraded: %d %s, want 200 naming the cause", code, body)
	}
	if code, body := get("/version"); code != 200 || !strings.Contains(body, `"service":"herd-test"`) {
		t.Errorf("version: %d %s", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics: %d %.200s", code, body)
	}
}
