//go:build bench

package storm

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The kernel's view of a storm: what TCP and UDP did in each namespace
// (retransmissions, drops, memory pressure), to tell a service that cut
// a client from a kernel that starved one. Every simulated machine's
// sockets live in one kernel, whose TCP memory (tcp_mem) they share with
// the services' sockets, where N real machines would each have their own.
var kernelCounters = []struct{ key, what string }{
	{"Tcp.RetransSegs", "TCP segments retransmitted"},
	{"TcpExt.TCPTimeouts", "TCP retransmission timeouts"},
	{"TcpExt.TCPLossProbes", "TCP tail loss probes sent"},
	{"TcpExt.TCPMemoryPressures", "TCP memory pressure entered"},
	{"TcpExt.TCPRcvQDrop", "TCP segments dropped: receive queue over its memory"},
	{"TcpExt.PruneCalled", "TCP receive queues pruned"},
	{"TcpExt.TCPAbortOnMemory", "TCP connections aborted for memory"},
	{"TcpExt.ListenOverflows", "TCP accept queue overflows"},
	{"Udp.RcvbufErrors", "UDP datagrams dropped: socket receive buffer full"},
}

// counters reads n's /proc/net/snmp and /proc/net/netstat (each network
// namespace has its own) from a thread inside it.
func (n *netNS) counters() (map[string]int64, error) {
	m := map[string]int64{}
	err := n.do(func() error {
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if err := parseProcNet(string(b), m); err != nil {
				return fmt.Errorf("%s in %s: %w", f, n.name, err)
			}
		}
		return nil
	})
	return m, err
}

// parseProcNet adds the counters of a /proc/net/snmp or netstat text to m
// as "Proto.Name": each protocol has a line of names then one of values,
// both starting with "Proto:".
func parseProcNet(text string, m map[string]int64) error {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines)%2 != 0 {
		return fmt.Errorf("%d lines, want pairs of names and values", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		proto, names, ok1 := strings.Cut(lines[i], ":")
		proto2, values, ok2 := strings.Cut(lines[i+1], ":")
		ns, vs := strings.Fields(names), strings.Fields(values)
		if !ok1 || !ok2 || proto != proto2 || len(ns) != len(vs) {
			return fmt.Errorf("line %d: %q then %q: want the names then the values of one protocol", i+1, lines[i], lines[i+1])
		}
		for k, name := range ns {
			v, err := strconv.ParseInt(vs[k], 10, 64)
			if err != nil {
				return fmt.Errorf("%s %s: %w", proto, name, err)
			}
			m[proto+"."+name] = v
		}
	}
	return nil
}

// tcpMemPages is the TCP memory in use now, in pages (the "mem" of
// /proc/net/sockstat's TCP line: all namespaces together).
func tcpMemPages() (int64, error) {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0, err
	}
	return sockstatTCPMem(string(b))
}

func sockstatTCPMem(text string) (int64, error) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "mem" {
				return strconv.ParseInt(f[i+1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/net/sockstat: no TCP mem in %q", text)
}

// tcpMemLimits is /proc/sys/net/ipv4/tcp_mem: the pages below which TCP
// is not pressed, where pressure starts, and the hard limit.
func tcpMemLimits() ([3]int64, error) {
	var lim [3]int64
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_mem")
	if err != nil {
		return lim, err
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return lim, fmt.Errorf("tcp_mem %q: want 3 numbers", b)
	}
	for i := range lim {
		if lim[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			return lim, fmt.Errorf("tcp_mem %q: %w", b, err)
		}
	}
	return lim, nil
}

// peakSampler records the highest TCP memory seen every interval until
// stopped.
type peakSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak int64
}

func samplePeak(interval time.Duration) *peakSampler {
	p := &peakSampler{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if v, err := tcpMemPages(); err == nil {
				p.peak = max(p.peak, v)
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// done stops sampling and returns the peak, in pages.
func (p *peakSampler) done() int64 {
	close(p.stop)
	p.wg.Wait()
	return p.peak
}
