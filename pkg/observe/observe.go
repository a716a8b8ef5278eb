// Package observe mounts the endpoints every herd service serves for its
// operators: /metrics (Prometheus), /healthz and /version.
package observe

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herd-metal/herd/pkg/version"
)

// NewRegistry is a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// DegradedError is what a health function returns when the service still
// does its job but with less than it should have: herd-boots and
// herd-metadata answering from their last known inventory while
// herd-server is unreachable. /healthz answers it with 200 and status
// "degraded", so an orchestrator does not restart a service that a restart
// would only leave with nothing to answer from.
type DegradedError struct{ Err error }

func (e *DegradedError) Error() string { return "degraded: " + e.Err.Error() }
func (e *DegradedError) Unwrap() error { return e.Err }

// Degraded marks err as a degraded (still serving) state for /healthz.
func Degraded(err error) error { return &DegradedError{Err: err} }

// Mount registers /metrics, /healthz and /version on mux. healthy reports
// whether the service can do its job (e.g. its database answers); nil means
// always healthy. /healthz answers 200 {"status":"ok"}, 200
// {"status":"degraded","error":...} when healthy returns a DegradedError,
// and 503 {"status":"unhealthy","error":...} for any other error.
func Mount(mux *http.ServeMux, service string, reg *prometheus.Registry, healthy func(context.Context) error) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code := map[string]string{"status": "ok"}, http.StatusOK
		if healthy != nil {
			var d *DegradedError
			if err := healthy(ctx); errors.As(err, &d) {
				status = map[string]string{"status": "degraded", "error": err.Error()}
			} else if err != nil {
				status, code = map[string]string{"status": "unhealthy", "error": err.Error()}, http.StatusServiceUnavailable
			}
		}
		writeJSON(w, code, status)
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"service": service, "version": version.Version, "commit": version.Commit})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
