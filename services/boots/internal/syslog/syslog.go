// Package syslog receives the syslog of booting machines (iPXE's and the
// OSIE's) on UDP and logs each message with the machine's identity.
package syslog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
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
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri > 191 {
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

// Machines finds a sender's hardware by address (pkg/inventory).
type Machines interface {
	ByIP(ip netip.Addr) (inventory.Machine, bool)
}

// Serve receives on conn until ctx ends.
func Serve(ctx context.Context, conn net.PacketConn, ms Machines, log *slog.Logger, reg prometheus.Registerer) error {
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_boots_syslog_messages_total",
		Help: "Syslog datagrams received, by whether they parsed and came from a known machine."}, []string{"outcome"})
	if reg != nil {
		reg.MustRegister(msgs)
	}
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
		m, ok := Parse(buf[:n])
		if !ok {
			msgs.WithLabelValues("unparsed").Inc()
			continue
		}
		attrs := []any{"app", m.App, "host", m.Hostname, "severity", m.Severity, "remote", addr.String()}
		if ua, ok := addr.(*net.UDPAddr); ok {
			ip, _ := netip.AddrFromSlice(ua.IP)
			if mach, ok := ms.ByIP(ip.Unmap()); ok {
				msgs.WithLabelValues("known").Inc()
				mac := ""
				for _, i := range mach.Hardware.GetNetwork().GetInterfaces() {
					if i.GetDhcp().GetIp().GetAddress() == ip.Unmap().String() {
						mac = i.GetDhcp().GetMac()
					}
				}
				attrs = append(attrs, "hardware_id", mach.Hardware.GetId(), "mac", mac)
			} else {
				msgs.WithLabelValues("unknown").Inc()
			}
		}
		log.Info("machine syslog: "+m.Text, attrs...)
	}
}
