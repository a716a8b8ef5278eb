//go:build bench

package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-metal/herd/services/boots/internal/netnstest"
)

// parseSNMP reads one protocol's counters from /proc/net/snmp, where each
// protocol has a line of names and a line of values, both starting with
// "Proto:".
func parseSNMP(text, proto string) (map[string]int64, error) {
	var rows [][]string
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, proto+":"); ok {
			rows = append(rows, strings.Fields(rest))
		}
	}
	if len(rows) != 2 || len(rows[0]) != len(rows[1]) {
		return nil, fmt.Errorf("/proc/net/snmp: want a line of %s counter names and one of values, got %d lines", proto, len(rows))
	}
	m := make(map[string]int64, len(rows[0]))
	for i, name := range rows[0] {
		v, err := strconv.ParseInt(rows[1][i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/net/snmp: %s %s: %w", proto, name, err)
		}
		m[name] = v
	}
	return m, nil
}

// rcvbufErrors is the UDP datagrams the kernel dropped in ns so far
// because a socket's receive queue was full. /proc/net/snmp is per
// network namespace, and each namespace of the lab holds one DHCP socket.
func rcvbufErrors(t *testing.T, ns *netnstest.NS) int64 {
	t.Helper()
	out, err := ns.Command(context.Background(), "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatalf("reading /proc/net/snmp in the namespace: %v", err)
	}
	m, err := parseSNMP(string(out), "Udp")
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m["RcvbufErrors"]
	if !ok {
		t.Fatal("/proc/net/snmp has no Udp RcvbufErrors counter")
	}
	return v
}

func TestParseSNMP(t *testing.T) {
	const snmp = `Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 4242
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 319158 0 544 319702 544 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 7 0 0 0 0
`
	for _, tc := range []struct {
		name, text, proto string
		key               string
		want              int64
		err               bool
	}{
		{"udp", snmp, "Udp", "RcvbufErrors", 544, false},
		{"not UdpLite's", snmp, "UdpLite", "RcvbufErrors", 7, false},
		{"ip", snmp, "Ip", "InReceives", 4242, false},
		{"missing protocol", snmp, "Tcp", "", 0, true},
		{"values missing", "Udp: InDatagrams RcvbufErrors\n", "Udp", "", 0, true},
		{"short values", "Udp: InDatagrams RcvbufErrors\nUdp: 1\n", "Udp", "", 0, true},
		{"not a number", "Udp: InDatagrams RcvbufErrors\nUdp: 1 x\n", "Udp", "", 0, true},
	} {
		m, err := parseSNMP(tc.text, tc.proto)
		if tc.err {
			if err == nil {
				t.Errorf("%s: parseSNMP = %v, want an error", tc.name, m)
			}
			continue
		}
		if err != nil || m[tc.key] != tc.want {
			t.Errorf("%s: parseSNMP()[%s] = %d, %v; want %d", tc.name, tc.key, m[tc.key], err, tc.want)
		}
	}
}
