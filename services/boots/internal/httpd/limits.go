package httpd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// Limits bound what one HTTP client holds of herd-boots: the provisioning
// network is shared with machines that may be hostile, and a connection
// that trickles its request or idles must not be kept open for long.
type Limits struct {
	// ReadHeader is how long a client has to send a request's headers,
	// Read the whole request (a trickled /events body), Idle how long a
	// keep-alive connection may wait for its next request.
	ReadHeader, Read, Idle time.Duration
	// Write is the longest a response may take to write. A download
	// (/ipxe/, /osie/: kernels, initramfs, images of hundreds of MB) may
	// take longer in all, as long as each chunk of it goes out within
	// Write: a reader that stalls is cut, a slow but steady one is not.
	Write time.Duration
	// PerSource bounds the connections one source address holds open at
	// once (0: no bound); behind NAT every machine is one source.
	PerSource int
	// MaxHeaderBytes bounds a request's line and headers (431 beyond;
	// Go's server reads 4 KiB past it before refusing). iPXE and the
	// OSIE send a few hundred bytes.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body (413 beyond): only /events
	// takes one, a short form, which is also never read past 4 KiB.
	MaxBodyBytes int64
}

// DefaultLimits are herd-boots' defaults (its --http-* flags).
var DefaultLimits = Limits{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 60 * time.Second, Idle: 30 * time.Second, PerSource: 32,
	MaxHeaderBytes: 16 << 10, MaxBodyBytes: 4 << 10}

// Server returns an http.Server for h with l's timeouts and size limits.
func (l Limits) Server(h http.Handler) *http.Server {
	if l.MaxBodyBytes > 0 {
		h = limitBody(h, l.MaxBodyBytes)
	}
	return &http.Server{Handler: h, ReadHeaderTimeout: l.ReadHeader, ReadTimeout: l.Read, WriteTimeout: l.Write, IdleTimeout: l.Idle,
		MaxHeaderBytes: l.MaxHeaderBytes, ConnContext: withConn}
}

// connKey holds a request's connection in its context (withConn).
type connKey struct{}

func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// tcpConn is the TCP connection r came on, when it is plain TCP (nil
// over TLS or outside Limits.Server).
func tcpConn(r *http.Request) *net.TCPConn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if cc, ok := c.(*countedConn); ok {
		c = cc.Conn
	}
	tc, _ := c.(*net.TCPConn)
	return tc
}

// notsentLowat bounds the bytes a download leaves queued unsent in its
// socket (TCP_NOTSENT_LOWAT). Left to itself sendfile fills every send
// buffer to its autotuned 4 MiB: 200 downloads then hold 800 MB of
// queued segments, TCP runs into its memory limits, drops and
// retransmits, and the receivers pay (bench-files measured herd-boots at
// 0.6× nginx's rate on the 512 MiB image before this). Only unsent bytes
// count: what is in flight on a long link is not limited.
const notsentLowat = 256 << 10

// tuneDownload readies c for a file body (on) and back (off): TCP_CORK
// while the body goes out, so that the headers leave with the file's
// first bytes and sendfile's chunks do not each end in a short segment
// (Go sets TCP_NODELAY, which pushes every partial one), and
// TCP_NOTSENT_LOWAT (kept for the connection's life).
func tuneDownload(c *net.TCPConn, on bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	corked := 0
	if on {
		corked = 1
	}
	_ = rc.Control(func(fd uintptr) {
		if on {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, notsentLowat)
		}
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, corked)
	})
}

// limitBody answers a request whose declared body is over max with 413
// before anything reads it, and cuts a body growing past max as it is
// read (the handler then answers 400).
func limitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			w.Header().Set("Connection", "close")
			http.Error(w, "request body over "+strconv.FormatInt(max, 10)+" bytes (--http-max-body-bytes)", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		next.ServeHTTP(w, r)
	})
}

// downloadChunk is what a download writes per write deadline.
const downloadChunk = 256 << 10

// download serves next as a download: over plain TCP the connection is
// tuned for a file body (tuneDownload); the write deadline moves on with
// every chunk written (writeTimeout per chunk, when set), and the read
// deadline is lifted (the request is read; the server's background read
// would otherwise cancel a download outlasting Limits.Read).
func download(next http.Handler, writeTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if tc := tcpConn(r); tc != nil && r.Method == http.MethodGet {
			tuneDownload(tc, true)
			defer func() {
				_ = rc.Flush() // the response's last bytes out of its buffer, then uncorked
				tuneDownload(tc, false)
			}()
		}
		if writeTimeout <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		next.ServeHTTP(&progressWriter{ResponseWriter: w, rc: rc, timeout: writeTimeout}, r)
	})
}

// progressWriter sets a write deadline before each chunk it writes.
type progressWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

func (p *progressWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), downloadChunk)
		_ = p.rc.SetWriteDeadline(time.Now().Add(p.timeout))
		m, err := p.ResponseWriter.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}

// ReadFrom keeps the response's own ReadFrom (sendfile from a file) in
// chunks. A source that is an io.LimitedReader (http.ServeContent's) is
// cut into chunks of its reader, keeping one level of LimitedReader over
// the file, as sendfile needs.
func (p *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := p.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{p}, src)
	}
	inner, left := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, left = lr.R, lr.N
		defer func() { lr.N = left }()
	}
	var n int64
	for left != 0 {
		want := int64(downloadChunk)
		if left > 0 {
			want = min(want, left)
		}
		_ = p.rc.SetWriteDeadline(time.Now().Add(p.timeout))
		k, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: want})
		n += k
		if left > 0 {
			left -= k
		}
		if err != nil || k < want {
			return n, err // err, or the source ended
		}
	}
	return n, nil
}

// writerOnly hides ReadFrom, for io.Copy.
type writerOnly struct{ io.Writer }

// LimitListener wraps l so that each source address holds at most max
// connections at once (max <= 0: l itself). A connection beyond that gets
// a 503 and is closed; it is counted in herd_boots_http_connections_refused_total
// and logged (throttled: a line per address per 10 s).
func LimitListener(l net.Listener, max int, log *slog.Logger, reg prometheus.Registerer) net.Listener {
	return NewSourceLimit(max, log, reg).Listener(l, false)
}

// NewSourceLimit is a budget of max connections per source address that
// several listeners share (HTTP and HTTPS: a source holds at most max on
// all of them together); max <= 0: no budget (nil, whose Listener is the
// listener itself).
func NewSourceLimit(max int, log *slog.Logger, reg prometheus.Registerer) *SourceLimit {
	if max <= 0 {
		return nil
	}
	sl := &SourceLimit{max: max, log: log, open: map[netip.Addr]int{},
		quiet:    newThrottle(unknownLogEvery, unknownLogKeys, unknownLogLines),
		refusers: make(chan struct{}, maxRefusers),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_boots_http_connections_refused_total",
			Help: "HTTP and HTTPS connections refused because their source address already held --http-max-conns-per-source."})}
	reg.MustRegister(sl.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herd_boots_http_connections_open",
		Help: "HTTP and HTTPS connections open."}, sl.total))
	return sl
}

// Listener wraps ln (its raw TCP side) in the budget. tlsNext says that
// TLS runs on the connections: a refused one is then closed without the
// plain-text 503, which a TLS client could not read.
func (l *SourceLimit) Listener(ln net.Listener, tlsNext bool) net.Listener {
	if l == nil {
		return ln
	}
	return &limitedListener{Listener: ln, lim: l, silent: tlsNext}
}

// maxRefusers bounds the refused connections being answered at once;
// beyond it they are closed without a word.
const maxRefusers = 64

// refusal is what a connection beyond the limit reads.
const refusalBody = "herd-boots: too many connections from this address; retry later\n"

var refusal = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
	strconv.Itoa(len(refusalBody)) + "\r\nConnection: close\r\nRetry-After: 5\r\n\r\n" + refusalBody

// SourceLimit is the per-source budget its listeners share.
type SourceLimit struct {
	max      int
	log      *slog.Logger
	quiet    *throttle
	refusers chan struct{}
	refused  prometheus.Counter

	mu   sync.Mutex
	open map[netip.Addr]int
	all  int
}

func (l *SourceLimit) total() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return float64(l.all)
}

func sourceOf(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedListener accepts within its SourceLimit.
type limitedListener struct {
	net.Listener
	lim    *SourceLimit
	silent bool // refuse without the 503 (TLS connections)
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if cc, ok := l.lim.admit(c, l.silent); ok {
			return cc, nil
		}
	}
}

// admit counts c against its source, or refuses it (false) when the
// source is at its limit: closed at once when silent, else after a 503.
func (l *SourceLimit) admit(c net.Conn, silent bool) (net.Conn, bool) {
	src := sourceOf(c)
	l.mu.Lock()
	n := l.open[src]
	if n >= l.max {
		l.mu.Unlock()
		l.refuse(c, src, silent)
		return nil, false
	}
	l.open[src] = n + 1
	l.all++
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l, src: src}, true
}

func (l *SourceLimit) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all--
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
}

// refuse answers c with a 503 and closes it, without holding up Accept.
func (l *SourceLimit) refuse(c net.Conn, src netip.Addr, silent bool) {
	l.refused.Inc()
	if ok, held := l.quiet.allow(src.String(), time.Now()); ok {
		attrs := []any{"remote", c.RemoteAddr().String(), "max", l.max}
		if held > 0 {
			attrs = append(attrs, "suppressed", held)
		}
		l.log.Warn("http: too many connections from one address: refused (--http-max-conns-per-source; behind NAT every machine is one address)", attrs...)
	}
	if silent {
		c.Close()
		return
	}
	select {
	case l.refusers <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusers }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c, refusal); err != nil {
			return
		}
		// Close after the client has read the answer (or a second has
		// passed): closing with its request unread would reset the
		// connection and could lose the 503.
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// countedConn gives its source's slot back once, when closed.
type countedConn struct {
	net.Conn
	l    *SourceLimit
	src  netip.Addr
	once sync.Once
}

// ReadFrom keeps the connection's own ReadFrom (sendfile from a file):
// net/http hands a response body to it only when the connection has one.
func (c *countedConn) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{c.Conn}, src)
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}
