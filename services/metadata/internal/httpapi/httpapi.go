// Package httpapi is herd-metadata's HTTP face: the EC2-style tree and the
// metadata document of the calling machine, and the operator endpoints
// (/healthz, /version, /metrics). Every answer was prepared when the
// machine's record changed; a request is an address lookup, a map lookup
// and a write.
//
// It serves with github.com/valyala/fasthttp rather than net/http: on the
// benchmark's 2-core machine net/http tops out near 0.35× nginx's
// requests/s for these tiny answers, fasthttp near 0.8–1× (figures in
// docs/benchmarks.md). The operator endpoints are pkg/observe's net/http
// handlers behind fasthttpadaptor on the same port: they are rare, and
// one port keeps the configuration, the firewall rules and Prometheus's
// scrape target what every herd service has.
package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/herd-metal/herd/pkg/observe"
	"github.com/herd-metal/herd/services/metadata/internal/clientip"
	"github.com/herd-metal/herd/services/metadata/internal/ec2"
)

// Default limits of the HTTP server (herd-metadata's --http-max-* flags).
// A metadata request is a GET of a short path with a few headers;
// anything near these is not one.
const (
	// MaxHeaderBytes bounds the request line and headers: a larger
	// request gets 431.
	MaxHeaderBytes = 16 << 10
	// MaxBodyBytes bounds a request body (GET and HEAD have none): a
	// larger one gets 413.
	MaxBodyBytes = 4 << 10
)

// Limits are the request size limits NewServer applies; zero fields take
// the defaults.
type Limits struct {
	MaxHeaderBytes, MaxBodyBytes int
}

// DefaultLimits are MaxHeaderBytes and MaxBodyBytes.
var DefaultLimits = Limits{MaxHeaderBytes: MaxHeaderBytes, MaxBodyBytes: MaxBodyBytes}

// Timeouts of the HTTP server.
const (
	ReadTimeout  = 10 * time.Second
	WriteTimeout = 10 * time.Second
	IdleTimeout  = 90 * time.Second
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout = 5 * time.Second
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
	// Notes, when set, takes a note for a machine's workflow timeline
	// when it reads its metadata (at most one per NotePeriod).
	Notes Notes
}

// Notes takes notes on a machine's way to provisioned (pkg/bootnotes);
// Record never blocks.
type Notes interface {
	Record(hwID, message string)
}

// NotePeriod is how often at most a machine's reading is noted: a boot's
// crawl makes one note, not one per path.
const NotePeriod = 10 * time.Minute

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

// Handler answers requests; it holds no per-request state.
type Handler struct {
	lookup   Lookup
	trusted  []netip.Prefix
	notes    Notes
	log      *slog.Logger
	ops      fasthttp.RequestHandler
	routes   map[string]*routeMetrics
	requests *prometheus.CounterVec
}

const (
	textPlain  = ec2.TextPlain
	notFound   = "not found\n"
	notAllowed = "method not allowed\n"
)

var (
	headerNosniff = []byte("X-Content-Type-Options")
	valueNosniff  = []byte("nosniff")
)

var versionPaths = func() []string {
	var out []string
	for _, v := range ec2.Versions {
		out = append(out, "/"+v)
	}
	return out
}()

// New returns the handler; it registers its metrics on c.Registry.
func New(c Config) *Handler {
	h := &Handler{lookup: c.Lookup, trusted: c.Trusted, log: c.Log, notes: c.Notes, routes: map[string]*routeMetrics{}}
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
	ops := http.NewServeMux()
	observe.Mount(ops, "herd-metadata", c.Registry, c.Healthy)
	h.ops = fasthttpadaptor.NewFastHTTPHandler(ops)
	return h
}

// Serve answers the machine that asks, and only it. It is the
// fasthttp.RequestHandler of the server.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	label, code := h.serve(ctx)
	if code == 0 {
		return
	}
	m := h.routes[label]
	switch code {
	case fasthttp.StatusOK:
		m.ok.Inc()
	case fasthttp.StatusNotFound:
		m.notFound.Inc()
	case fasthttp.StatusMethodNotAllowed:
		m.notAllowed.Inc()
	}
	m.latency.Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(ctx *fasthttp.RequestCtx) (label string, code int) {
	path, ok := requestPath(ctx.Request.Header.RequestURI())
	switch {
	case !ok:
		path = "" // answers 404 below (or 405)
	case path == "/healthz", path == "/version", path == "/metrics":
		h.ops(ctx)
		h.requests.WithLabelValues(labelOps, statusText(ctx.Response.StatusCode())).Inc()
		return labelOps, 0 // counted here, with its real status
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		write(ctx, fasthttp.StatusMethodNotAllowed, textPlain, notAllowed)
		return labelUnmatched, fasthttp.StatusMethodNotAllowed
	}
	ip, ok := h.client(ctx)
	var p *ec2.Prepared
	if ok {
		p, ok = h.lookup(ip)
	}
	if !ok {
		if h.log.Enabled(context.Background(), slog.LevelDebug) {
			h.log.Debug("request from an address no machine has", "client", ip, "peer", ctx.RemoteAddr().String(), "path", path)
		}
		write(ctx, fasthttp.StatusNotFound, textPlain, notFound)
		return labelUnknownClient, fasthttp.StatusNotFound
	}
	resp, ok := route(p, path)
	if !ok {
		write(ctx, fasthttp.StatusNotFound, textPlain, notFound)
		return labelUnmatched, fasthttp.StatusNotFound
	}
	write(ctx, fasthttp.StatusOK, resp.ContentType, resp.Body)
	if h.notes != nil && p.NoteDue(time.Now().Unix(), int64(NotePeriod/time.Second)) {
		h.notes.Record(p.ID, readNote(resp.Label, ctx.UserAgent()))
	}
	return resp.Label, fasthttp.StatusOK
}

// cloudInitAgent starts the User-Agent cloud-init sends.
var cloudInitAgent = []byte("Cloud-Init/")

// readNote is the timeline's note of a machine reading its metadata: the
// first path's route label (a fixed set) and whether cloud-init asked;
// nothing else of the request, which the machine wrote.
func readNote(label string, userAgent []byte) string {
	by := ""
	if bytes.HasPrefix(userAgent, cloudInitAgent) {
		by = " by cloud-init"
	}
	return "metadata read" + by + " (first: " + label + ")"
}

// client is the caller's address (see clientip.Client). X-Forwarded-For
// is read only from a trusted peer.
func (h *Handler) client(ctx *fasthttp.RequestCtx) (netip.Addr, bool) {
	peer, ok := peerAddr(ctx.RemoteAddr())
	if !ok {
		return netip.Addr{}, false
	}
	if !clientip.Trusted(peer, h.trusted) {
		return peer, true // the header is not read: no allocation
	}
	var xff []string
	for _, v := range ctx.Request.Header.PeekAll("X-Forwarded-For") {
		xff = append(xff, string(v))
	}
	return clientip.FromPeer(peer, xff, h.trusted)
}

// peerAddr is the address of a connection's peer; IPv4 mapped in IPv6
// comes back as IPv4.
func peerAddr(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return ap.Addr().Unmap().WithZone(""), ap.Addr().IsValid()
	case nil:
		return netip.Addr{}, false
	}
	return clientip.Peer(a.String())
}

// requestPath is the path of a request target, percent-decoded but not
// otherwise cleaned: "//" and ".." stay as sent (and match nothing). An
// absolute-form target ("http://host/path") gives its path. ok is false
// for a target that has no path ("*", "host:port") or does not decode.
// The result may share target's memory: it is valid for the request only,
// and nothing keeps it beyond (the answers are looked up with it).
func requestPath(target []byte) (string, bool) {
	t := target
	if i := bytes.IndexAny(t, "?#"); i >= 0 {
		t = t[:i]
	}
	if len(t) == 0 || t[0] != '/' {
		// Absolute form: scheme "://" authority path.
		i := bytes.Index(t, []byte("://"))
		if i < 0 {
			return "", false
		}
		t = t[i+3:]
		j := bytes.IndexByte(t, '/')
		if j < 0 {
			return "/", true
		}
		t = t[j:]
	}
	if bytes.IndexByte(t, '%') >= 0 { // rare: EC2 clients send plain paths
		p, err := url.PathUnescape(string(t))
		if err != nil {
			return "", false
		}
		return p, true
	}
	return unsafe.String(&t[0], len(t)), true
}

// route finds the answer at path in p: "/", "/metadata", or a path under
// one of the EC2 versions ("/latest/meta-data/hostname").
func route(p *ec2.Prepared, path string) (ec2.Response, bool) {
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
	return ec2.Response{}, false
}

// write sends an answer. fasthttp sets Content-Length from the body and
// leaves the body out of a HEAD answer.
func write(ctx *fasthttp.RequestCtx, code int, contentType, body string) {
	ctx.SetStatusCode(code)
	ctx.Response.Header.SetContentType(contentType)
	ctx.Response.Header.SetCanonical(headerNosniff, valueNosniff)
	ctx.Response.SetBodyString(body)
}

func statusText(code int) string {
	switch code {
	case fasthttp.StatusOK:
		return "200"
	case fasthttp.StatusServiceUnavailable:
		return "503"
	case fasthttp.StatusMethodNotAllowed:
		return "405"
	}
	return "other"
}

// NewServer is the fasthttp server for h, with herd-metadata's limits:
// headers beyond lim.MaxHeaderBytes get 431, a body beyond
// lim.MaxBodyBytes 413, a request that does not parse 400, and the
// connection closes; the server goes on serving the others.
func NewServer(h *Handler, log *slog.Logger, lim Limits) *fasthttp.Server {
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = MaxHeaderBytes
	}
	if lim.MaxBodyBytes <= 0 {
		lim.MaxBodyBytes = MaxBodyBytes
	}
	return &fasthttp.Server{
		Handler:               h.Serve,
		Name:                  "",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		ReadBufferSize:        lim.MaxHeaderBytes,
		MaxRequestBodySize:    lim.MaxBodyBytes,
		ReadTimeout:           ReadTimeout,
		WriteTimeout:          WriteTimeout,
		IdleTimeout:           IdleTimeout,
		CloseOnShutdown:       true,
		ErrorHandler:          requestError,
		Logger:                debugLogger{log},
	}
}

// requestError answers a request that could not be read; the server
// closes the connection after it.
func requestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.As(err, &small):
		ctx.Error("request header too large\n", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("request body too large\n", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &netErr) && netErr.Timeout():
		ctx.Error("request timeout\n", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("malformed request\n", fasthttp.StatusBadRequest)
	}
}

// debugLogger passes fasthttp's messages (bad requests, mostly) to the
// log at debug level: a caller can produce them at will.
type debugLogger struct{ log *slog.Logger }

func (d debugLogger) Printf(format string, args ...any) {
	if d.log.Enabled(context.Background(), slog.LevelDebug) {
		d.log.Debug("http server", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
}

// Serve serves srv on ln until ctx ends, then shuts down gracefully:
// requests under way finish (within ShutdownTimeout), idle connections
// close.
func Serve(ctx context.Context, srv *fasthttp.Server, ln net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := srv.ShutdownWithContext(sctx); err != nil {
		return err
	}
	return <-done
}
