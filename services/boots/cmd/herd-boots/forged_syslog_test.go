package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metrics is herd-boots' /metrics page.
func (l *lab) metrics(t *testing.T) string {
	t.Helper()
	res, err := l.srv.HTTPClient().Get(bootsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// metric reads one sample of the page (0 when absent).
func metric(page, sample string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// udpFrom is a UDP socket in the client namespace sending from ip.
func (l *lab) udpFrom(t *testing.T, ip, to string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := l.cli.Do(func() error {
		var err error
		c, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSyslogSenders (issue 14, finding 6): herd-boots' syslog receiver
// with --syslog-rate 1 --syslog-burst 5. A machine flooding 30 datagrams
// gets about its burst logged and the rest counted as rate_limited, while
// another machine's 3 all get through at info, tagged with its hardware; a
// host no hardware owns is counted as unknown and logged at debug only;
// "<-1>x" is no message (unparsed), not severity -1.
func TestSyslogSenders(t *testing.T) {
	t.Parallel() // each lab has its own namespaces
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x06}
	other := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x07}
	l := newLab(t, mac, "--syslog-rate", "1", "--syslog-burst", "5")
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.push(t, hwLate, other, "10.77.0.11", true, "")
	l.waitMachines(t, 2)
	for _, a := range []string{"10.77.0.10", "10.77.0.11", attackerIP} {
		l.cli.IP("addr", "add", a+"/24", "dev", "hc0")
	}
	syslogAddr := bootsIP + ":514"
	flooder, quiet, attacker := l.udpFrom(t, "10.77.0.10", syslogAddr), l.udpFrom(t, "10.77.0.11", syslogAddr), l.udpFrom(t, attackerIP, syslogAddr)
	for i := range 30 {
		fmt.Fprintf(flooder, "<14>herd-worker: flood %d", i)
	}
	for i := range 3 {
		fmt.Fprintf(quiet, "<14>osie: quiet %d", i)
		fmt.Fprintf(attacker, "<14>herd-worker: forged %d", i)
	}
	io.WriteString(quiet, "<-1>x")
	const total = 30 + 3 + 3 + 1

	var page string
	outcome := func(o string) float64 {
		return metric(page, `herd_boots_syslog_messages_total{outcome="`+o+`"}`)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		page = l.metrics(t)
		if outcome("known")+outcome("unknown")+outcome("unparsed")+outcome("rate_limited") == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("boots counted %v known, %v unknown, %v unparsed, %v rate_limited of %d datagrams",
				outcome("known"), outcome("unknown"), outcome("unparsed"), outcome("rate_limited"), total)
		}
	}
	logs := l.waitLog("quiet 2", "forged 2")
	flooded := strings.Count(logs, `msg="machine syslog: flood`)
	if limited := outcome("rate_limited"); limited < 30-5-5 || flooded > 10 || flooded < 5 || float64(flooded)+limited != 30 {
		t.Errorf("flood of 30: %d logged, %v rate_limited; want the burst of 5 (and a few refilled) logged, the rest limited", flooded, limited)
	}
	for i := range 3 {
		line := lineWith(logs, fmt.Sprintf(`msg="machine syslog: quiet %d"`, i))
		if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "hardware_id="+hwLate) || !strings.Contains(line, "mac="+other.String()) {
			t.Errorf("the other machine's message %d: %q", i, line)
		}
	}
	if outcome("unknown") != 3 || strings.Contains(logs, `msg="machine syslog: forged`) {
		t.Errorf("the unknown sender: %v counted, logged as a machine: %v", outcome("unknown"), strings.Contains(logs, `msg="machine syslog: forged`))
	}
	if line := lineWith(logs, "forged 0"); !strings.Contains(line, "level=DEBUG") || strings.Contains(line, "hardware_id") {
		t.Errorf("the unknown sender's line: %q, want it at debug without a hardware", line)
	}
	if outcome("unparsed") != 1 || strings.Contains(logs, "severity=-1") {
		t.Errorf("<-1>x: %v unparsed; logged with severity -1: %v", outcome("unparsed"), strings.Contains(logs, "severity=-1"))
	}
}

// waitLog waits until herd-boots' log (which comes through a pipe) holds
// every one of want, or 10 s pass, and returns it.
func (l *lab) waitLog(want ...string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs := l.log.String()
		all := true
		for _, w := range want {
			all = all && strings.Contains(logs, w)
		}
		if all || time.Now().After(deadline) {
			return logs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lineWith(logs, s string) string {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}
