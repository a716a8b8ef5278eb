package transport

import (
	"net"
	"net/netip"
	"sync"
)

// sourceLimit is a listener that lets each source address hold at most max
// connections open at once: one more is accepted and closed at once, so a
// host on the provisioning network cannot take every file descriptor the
// server has. Its memory is one counter per address with connections open.
type sourceLimit struct {
	net.Listener
	max     int
	refused func(src netip.Addr)

	mu   sync.Mutex
	open map[netip.Addr]int
}

// limitSources wraps l; max <= 0 means no limit (l itself). refused is told
// of each connection closed for its source's count.
func limitSources(l net.Listener, max int, refused func(src netip.Addr)) net.Listener {
	if max <= 0 {
		return l
	}
	return &sourceLimit{Listener: l, max: max, refused: refused, open: map[netip.Addr]int{}}
}

func (l *sourceLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		l.mu.Lock()
		n := l.open[src]
		if n >= l.max {
			l.mu.Unlock()
			c.Close()
			l.refused(src)
			continue
		}
		l.open[src] = n + 1
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *sourceLimit) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[src] <= 1 {
		delete(l.open, src)
	} else {
		l.open[src]--
	}
}

// sourceOf is the address a connection comes from (IPv4-mapped IPv6 as
// IPv4; the zero Addr for other kinds of address, which then share one
// count).
func sourceOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// countedConn gives its slot back once, on its first Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
