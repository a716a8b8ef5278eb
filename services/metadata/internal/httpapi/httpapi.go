// Package httpapi is herd-metadata's HTTP face: the EC2-style tree and the
// metadata document of the calling machine, and the operator endpoints
// (/healthz, /version, /metrics). Every answer was prepared when the
// machine's record changed; a request is an address parse, a map lookup
// and a write.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/services/metadata/internal/clientip"
	"github.com/herd-metal/herd/services/metadata/internal/ec2"
)

// Limits of the HTTP server. A metadata request is a GET of a short path
// with a few headers; anything near these is not one.
const (
	MaxHeaderBytes    = 16 << 10
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 90 * time.Second
)

// Lookup finds the prepared answers of the machine with an address.
type Lookup func(netip.Addr) (*ec2.Prepared, bool)

// Config is what the handler needs.
type Config struct {
	Lookup Lookup
	// Trusted are the proxies whose X-Forwarded-For is believed.
	Trusted []netip.Prefix
	// Registry gets the request metrics; /metrics serves it.
	Registry *prometheus.Registry
	// Healthy backs /healthz (nil: always healthy).
	Healthy func(context.Context) error
	Log     *slog.Logger
}

// Route labels of the requests that reach no machine's data.
const (
	labelUnknownClient = "unknown-client"
	labelUnmatched     = "unmatched"
	labelOps           = "ops"
)

type routeMetrics struct {
	ok, notFound, notAllowed prometheus.Counter
	latency                  prometheus.Observer
}

// Handler serves one request at a time per goroutine; it holds no
// per-request state.
type Handler struct {
	lookup   Lookup
	trusted  []netip.Prefix
	log      *slog.Logger
	ops      *http.ServeMux
	routes   map[string]*routeMetrics
	requests *prometheus.CounterVec
}

var (
	notFoundBody = []byte("not found\n")
	notFoundLen  = []string{"10"}
	textPlain    = []string{"text/plain; charset=utf-8"}
	allowed      = []string{"GET, HEAD"}
	notAllowed   = []byte("method not allowed\n")
	notAllowLen  = []string{"19"}
	nosniff      = []string{"nosniff"}
	versionPaths = func() []string {
		var out []string
		for _, v := range ec2.Versions {
			out = append(out, "/"+v)
		}
		return out
	}()
)

// New returns the handler; it registers its metrics on c.Registry.
func New(c Config) *Handler {
	h := &Handler{lookup: c.Lookup, trusted: c.Trusted, log: c.Log, ops: http.NewServeMux(), routes: map[string]*routeMetrics{}}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herd_metadata_requests_total",
		Help: "Metadata requests by route (a fixed set of labels) and HTTP status code.",
	}, []string{"route", "code"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "herd_metadata_request_duration_seconds",
		Help:    "Time to answer a metadata request, by route.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
	}, []string{"route"})
	c.Registry.MustRegister(h.requests, latency)
	for _, l := range append(ec2.Labels(), labelUnknownClient, labelUnmatched, labelOps) {
		h.routes[l] = &routeMetrics{
			ok:         h.requests.WithLabelValues(l, "200"),
			notFound:   h.requests.WithLabelValues(l, "404"),
			notAllowed: h.requests.WithLabelValues(l, "405"),
			latency:    latency.WithLabelValues(l),
		}
	}
	observe.Mount(h.ops, "herd-metadata", c.Registry, c.Healthy)
	return h
}

// ServeHTTP answers the machine that asks, and only it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	label, code := h.serve(w, r)
	m := h.routes[label]
	switch code {
	case http.StatusOK:
		m.ok.Inc()
	case http.StatusNotFound:
		m.notFound.Inc()
	case http.StatusMethodNotAllowed:
		m.notAllowed.Inc()
	}
	m.latency.Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (label string, code int) {
	path := r.URL.Path
	switch path {
	case "/healthz", "/version", "/metrics":
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ops.ServeHTTP(rec, r)
		h.requests.WithLabelValues(labelOps, statusText(rec.code)).Inc()
		return labelOps, 0 // counted here, with its real status
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header()["Allow"] = allowed
		write(w, r, http.StatusMethodNotAllowed, textPlain, notAllowLen, notAllowed)
		return labelUnmatched, http.StatusMethodNotAllowed
	}
	ip, ok := clientip.Client(r.RemoteAddr, r.Header["X-Forwarded-For"], h.trusted)
	var p *ec2.Prepared
	if ok {
		p, ok = h.lookup(ip)
	}
	if !ok {
		if h.log.Enabled(r.Context(), slog.LevelDebug) {
			h.log.Debug("request from an address no machine has", "client", ip, "peer", r.RemoteAddr, "path", path)
		}
		notFound(w, r)
		return labelUnknownClient, http.StatusNotFound
	}
	resp, ok := route(p, path)
	if !ok {
		notFound(w, r)
		return labelUnmatched, http.StatusNotFound
	}
	write(w, r, http.StatusOK, resp.ContentType, resp.ContentLength, resp.Body)
	return resp.Label, http.StatusOK
}

// route finds the answer at path in p: "/", "/metadata", or a path under
// one of the EC2 versions ("/latest/meta-data/hostname").
func route(p *ec2.Prepared, path string) (*ec2.Response, bool) {
	switch path {
	case "/":
		return p.Root(), true
	case "/metadata":
		return p.Metadata(), true
	}
	for _, v := range versionPaths {
		rest, ok := strings.CutPrefix(path, v)
		if !ok || (rest != "" && rest[0] != '/') {
			continue
		}
		rest = strings.TrimPrefix(rest, "/")
		dir := strings.HasSuffix(rest, "/")
		return p.Lookup(strings.TrimSuffix(rest, "/"), dir)
	}
	return nil, false
}

// write sends a prepared answer. The header value slices are shared,
// read-only: nothing downstream modifies them.
func write(w http.ResponseWriter, r *http.Request, code int, ct, length []string, body []byte) {
	hdr := w.Header()
	hdr["Content-Type"] = ct
	hdr["Content-Length"] = length
	hdr["X-Content-Type-Options"] = nosniff
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func notFound(w http.ResponseWriter, r *http.Request) {
	write(w, r, http.StatusNotFound, textPlain, notFoundLen, notFoundBody)
}

func statusText(code int) string {
	switch code {
	case http.StatusOK:
		return "200"
	case http.StatusServiceUnavailable:
		return "503"
	case http.StatusMethodNotAllowed:
		return "405"
	}
	return "other"
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// NewServer is the http.Server for h, with herd-metadata's limits.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// Serve serves srv on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
