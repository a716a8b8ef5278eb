// Package syslog receives the syslog of booting machines (iPXE's and the
// OSIE's) on UDP and logs each message with the machine's identity.
//
// Anyone on the provisioning network can send it datagrams, with any
// source address they can forge: each source is rate-limited, only
// messages from an address a machine owns are logged at info (tagged with
// that machine, which a forged source address can still claim: UDP has no
// better proof), and the rest are counted and logged at debug.
package syslog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-metal/herd/pkg/inventory"
)

// Message is one parsed syslog line.
type Message struct {
	Facility, Severity int
	Hostname, App      string
	Text               string
	RFC5424            bool
}

var months = map[string]bool{"Jan": true, "Feb": true, "Mar": true, "Apr": true, "May": true, "Jun": true,
	"Jul": true, "Aug": true, "Sep": true, "Oct": true, "Nov": true, "Dec": true}

// Parse reads an RFC 5424 or RFC 3164 message, tolerating what iPXE sends
// ("<PRI>ipxe: text", no timestamp or host). ok is false for a datagram
// without a valid <PRI>.
func Parse(b []byte) (Message, bool) {
	s := strings.TrimRight(string(b), "\r\n\x00")
	if len(s) < 3 || s[0] != '<' {
		return Message{}, false
	}
	end := strings.IndexByte(s, '>')
	if end < 2 || end > 4 {
		return Message{}, false
	}
	pri, ok := parsePRI(s[1:end])
	if !ok {
		return Message{}, false
	}
	m := Message{Facility: pri / 8, Severity: pri % 8}
	s = s[end+1:]
	if strings.HasPrefix(s, "1 ") { // RFC 5424: VERSION TS HOST APP PROCID MSGID SD MSG
		f := strings.SplitN(s, " ", 7)
		if len(f) >= 6 {
			m.RFC5424 = true
			m.Hostname, m.App = nilvalue(f[2]), nilvalue(f[3])
			if len(f) == 7 {
				m.Text = skipSD(f[6])
			}
			return m, true
		}
	}
	// RFC 3164: "Mmm dd hh:mm:ss HOST TAG: text", each part optional.
	if len(s) >= 16 && months[s[:3]] && s[15] == ' ' {
		s = s[16:]
		if h, rest, ok := strings.Cut(s, " "); ok && !strings.HasSuffix(h, ":") {
			m.Hostname, s = h, rest
		}
	}
	if tag, rest, ok := strings.Cut(s, ": "); ok && !strings.ContainsAny(tag, " ") {
		m.App, s = tag, rest
		if i := strings.IndexByte(m.App, '['); i > 0 {
			m.App = m.App[:i]
		}
	}
	m.Text = s
	return m, true
}

// parsePRI reads PRIVAL strictly: one to three ASCII digits and nothing
// else (no sign, no blank: strconv.Atoi took "-1" and "+1"), at most 191,
// facility 23 severity 7 (RFC 5424 6.2.1: PRIVAL = 1*3DIGIT, 0..191; RFC
// 3164 4.1.1).
func parsePRI(s string) (int, bool) {
	if len(s) < 1 || len(s) > 3 {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, v <= 191
}

func nilvalue(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// skipSD drops RFC 5424 structured data ("-" or "[...]...") before MSG.
func skipSD(s string) string {
	if strings.HasPrefix(s, "- ") {
		return strings.TrimPrefix(s[2:], "\ufeff")
	}
	if s == "-" {
		return ""
	}
	depth := 0
	for i, r := range s {
		switch r {
		case '[':
			depth++
		case ']':
			depth--
			if depth == 0 && (i+1 == len(s) || s[i+1] == ' ') {
				if i+1 < len(s) && s[i+1] != '[' {
					return strings.TrimPrefix(strings.TrimPrefix(s[i+1:], " "), "\ufeff")
				}
			}
		}
	}
	return s
}

// Machines finds a sender's hardware (pkg/inventory).
type Machines interface {
	ByIP(ip netip.Addr) (inventory.Machine, bool)
	ByMAC(mac net.HardwareAddr) (inventory.Machine, bool)
}

// Leases names the MAC that took an address from another DHCP server
// (proxy mode, internal/leases); nil when boots hands out the addresses.
type Leases interface {
	MAC(ip netip.Addr) (net.HardwareAddr, bool)
}

// Config bounds what one sender costs.
type Config struct {
	// Rate is the datagrams per second one source address may send on
	// average, Burst how many at once; beyond them datagrams are counted
	// and dropped. Rate 0 sets no limit.
	Rate  float64
	Burst int
	// Sources bounds the source addresses tracked for that (0:
	// DefaultSources); sources beyond it share one allowance.
	Sources int
	// Leases, when set, names senders at addresses learned in proxy mode.
	Leases Leases
}

// DefaultSources is Config.Sources' default.
const DefaultSources = 4096

// Outcomes: herd_boots_syslog_messages_total's label values.
const (
	OutcomeKnown       = "known"        // from an address a machine owns: logged at info
	OutcomeUnknown     = "unknown"      // from any other address: logged at debug
	OutcomeUnparsed    = "unparsed"     // no valid <PRI>: dropped
	OutcomeRateLimited = "rate_limited" // over its source's rate: dropped
)

// Serve receives on conn until ctx ends.
func Serve(ctx context.Context, conn net.PacketConn, cfg Config, ms Machines, log *slog.Logger, reg prometheus.Registerer) error {
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_syslog_messages_total",
		Help: "Syslog datagrams received, by outcome: known (from a machine's address, logged), unknown (from another address, logged at debug), " +
			"unparsed (no valid <PRI>) or rate_limited (over --syslog-rate for its source, dropped)."}, []string{"outcome"})
	if reg != nil {
		reg.MustRegister(msgs)
	}
	count := map[string]prometheus.Counter{}
	for _, o := range []string{OutcomeKnown, OutcomeUnknown, OutcomeUnparsed, OutcomeRateLimited} {
		count[o] = msgs.WithLabelValues(o)
	}
	lim := newLimiter(cfg.Rate, cfg.Burst, cfg.Sources)
	go func() { <-ctx.Done(); conn.SetReadDeadline(time.Unix(1, 0)) }()
	buf := make([]byte, 8192)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("syslog: %w", err)
		}
		var ip netip.Addr
		if ua, ok := addr.(*net.UDPAddr); ok {
			ip, _ = netip.AddrFromSlice(ua.IP)
			ip = ip.Unmap()
		}
		if !lim.allow(ip, time.Now()) {
			count[OutcomeRateLimited].Inc()
			continue
		}
		m, ok := Parse(buf[:n])
		if !ok {
			count[OutcomeUnparsed].Inc()
			continue
		}
		attrs := []any{"app", m.App, "host", m.Hostname, "severity", m.Severity, "remote", addr.String()}
		hwID, mac, known := sender(ms, cfg.Leases, ip)
		if !known {
			count[OutcomeUnknown].Inc()
			if log.Enabled(ctx, slog.LevelDebug) {
				log.Debug("syslog from an address no hardware owns: "+m.Text, attrs...)
			}
			continue
		}
		count[OutcomeKnown].Inc()
		log.Info("machine syslog: "+m.Text, append(attrs, "hardware_id", hwID, "mac", mac)...)
	}
}

// sender is the machine whose address ip is: its reservation, or in
// proxy mode the address its MAC took.
func sender(ms Machines, leases Leases, ip netip.Addr) (hwID, mac string, ok bool) {
	if !ip.IsValid() {
		return "", "", false
	}
	if m, ok := ms.ByIP(ip); ok {
		for _, i := range m.Hardware().GetNetwork().GetInterfaces() {
			if i.GetDhcp().GetIp().GetAddress() == ip.String() {
				mac = i.GetDhcp().GetMac()
			}
		}
		return m.ID, mac, true
	}
	if leases == nil {
		return "", "", false
	}
	if hw, ok := leases.MAC(ip); ok {
		if m, ok := ms.ByMAC(hw); ok {
			return m.ID, hw.String(), true
		}
	}
	return "", "", false
}

// limiter is a token bucket per source address: rate tokens a second, at
// most burst held, one per datagram. It remembers at most max sources:
// when full it forgets those whose bucket has refilled (at most once a
// second), and new sources beyond that share one bucket. Serve's one
// reader uses it: no lock.
type limiter struct {
	rate, burst float64
	max         int
	buckets     map[netip.Addr]*bucket
	overflow    bucket
	lastSweep   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst, max int) *limiter {
	if max <= 0 {
		max = DefaultSources
	}
	return &limiter{rate: rate, burst: float64(max1(burst)), max: max, buckets: map[netip.Addr]*bucket{}}
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// allow takes a token from src's bucket at now.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= l.max && now.Sub(l.lastSweep) >= time.Second {
			l.lastSweep = now
			full := time.Duration(l.burst / l.rate * float64(time.Second))
			for k, v := range l.buckets {
				if now.Sub(v.last) >= full {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) < l.max {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[src] = b
		} else {
			b = &l.overflow
			if b.last.IsZero() {
				b.tokens, b.last = l.burst, now
			}
		}
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
