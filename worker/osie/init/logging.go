package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Syslog framing (RFC 5424 over UDP, RFC 5426). The facility is daemon.
const (
	syslogFacility = 3
	appName        = "herd-osie"
	maxBacklog     = 512
	maxDatagram    = 2048
)

// SyslogSeverity maps a slog level to a syslog severity (RFC 5424 6.2.1).
func SyslogSeverity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // err
	case l >= slog.LevelWarn:
		return 4 // warning
	case l >= slog.LevelInfo:
		return 6 // informational
	default:
		return 7 // debug
	}
}

// FormatSyslog frames one log line as an RFC 5424 message:
// "<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG".
func FormatSyslog(t time.Time, sev int, hostname string, procID int, msg string) []byte {
	if hostname == "" {
		hostname = "-"
	}
	msg = strings.TrimRight(msg, "\n")
	b := fmt.Appendf(nil, "<%d>1 %s %s %s %d - - %s",
		syslogFacility*8+sev, t.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		strings.ReplaceAll(hostname, " ", "_"), appName, procID, msg)
	if len(b) > maxDatagram {
		b = b[:maxDatagram]
	}
	return b
}

// syslogSink sends rendered lines to a UDP peer; until it has one (the
// network is not up yet) it keeps the last maxBacklog lines and sends them
// when SetConn is called, so the receiver sees the boot from its start.
type syslogSink struct {
	mu       sync.Mutex
	conn     io.Writer
	backlog  [][]byte
	hostname string
	dropped  int
}

func (s *syslogSink) send(t time.Time, sev int, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := FormatSyslog(t, sev, s.hostname, 1, line)
	if s.conn == nil {
		if len(s.backlog) >= maxBacklog {
			s.backlog = s.backlog[1:]
			s.dropped++
		}
		s.backlog = append(s.backlog, msg)
		return
	}
	_, _ = s.conn.Write(msg) // UDP: a lost line is not worth stopping for
}

// SetConn starts sending to w (nil: keep buffering); it flushes the backlog.
func (s *syslogSink) SetConn(w io.Writer, hostname string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn, s.hostname = w, hostname
	if w == nil {
		return
	}
	for _, m := range s.backlog {
		_, _ = w.Write(m)
	}
	s.backlog = nil
}

// Discard stops buffering for good (no syslog host configured).
func (s *syslogSink) Discard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn, s.backlog = io.Discard, nil
}

// handler renders each record once as logfmt text, prefixed by the time
// since boot, and writes it to the console and to the syslog sink.
type handler struct {
	mu      *sync.Mutex
	buf     *bytes.Buffer
	text    slog.Handler
	console io.Writer
	sink    *syslogSink
	uptime  func() time.Duration
	level   slog.Leveler
}

func newHandler(console io.Writer, sink *syslogSink, uptime func() time.Duration, level slog.Leveler) *handler {
	buf := &bytes.Buffer{}
	return &handler{
		mu: &sync.Mutex{}, buf: buf, console: console, sink: sink, uptime: uptime, level: level,
		text: slog.NewTextHandler(buf, &slog.HandlerOptions{
			Level: level,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && a.Key == slog.TimeKey {
					return slog.Attr{} // the uptime prefix and syslog's timestamp say it
				}
				return a
			},
		}),
	}
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	if err := h.text.Handle(ctx, r); err != nil {
		return err
	}
	line := strings.TrimRight(h.buf.String(), "\n")
	up := h.uptime()
	// The uptime is the kernel's clock: "[   12.345678]" like printk.
	stamped := fmt.Sprintf("[%12.6f] herd-init: %s uptime=%.3fs\n", up.Seconds(), line, up.Seconds())
	_, _ = io.WriteString(h.console, stamped)
	h.sink.send(r.Time, SyslogSeverity(r.Level), fmt.Sprintf("%s uptime=%.3fs", line, up.Seconds()))
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.text = h.text.WithAttrs(as)
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	c := *h
	c.text = h.text.WithGroup(name)
	return &c
}

// lineWriter turns a child process's output into log lines.
type lineWriter struct {
	log   *slog.Logger
	mu    sync.Mutex
	buf   []byte
	level slog.Level
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimRight(string(w.buf[:i]), "\r"); line != "" {
			w.log.Log(context.Background(), ChildLevel(line, w.level), line)
		}
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 8192 { // a line with no end: log what there is
		w.log.Log(context.Background(), w.level, string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

// ChildLevel is the level a child's output line is logged at: the level
// it names itself (logrus/slog "level=warning", "level=error"...) when that
// is above base, else base; so dockerd's chatter stays at debug while its
// warnings and errors reach the console and syslog.
func ChildLevel(line string, base slog.Level) slog.Level {
	i := strings.Index(line, "level=")
	if i < 0 {
		return base
	}
	v := strings.Trim(strings.ToLower(line[i+len("level="):]), `"`)
	var l slog.Level
	switch {
	case strings.HasPrefix(v, "warn"):
		l = slog.LevelWarn
	case strings.HasPrefix(v, "error"), strings.HasPrefix(v, "fatal"), strings.HasPrefix(v, "panic"):
		l = slog.LevelError
	default:
		return base
	}
	return max(l, base)
}
