package ui

// The login's rate limit: each source (an IPv4 address, an IPv6 /64) may
// get a few tokens wrong, then one try back every loginEvery; past that
// its logins are answered 429 with Retry-After before any token is
// checked, so guessing the admin token goes no faster than the limit. A
// source's state is one time (GCRA): when its debt is paid off. The table
// is bounded: paid-off sources are dropped, and a full table drops the
// source nearest to paid off.

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// loginBurst wrong tokens may come at once; then one every loginEvery.
	loginBurst = 5
	loginEvery = 12 * time.Second
	// maxLoginSources bounds the table of sources with wrong tries.
	maxLoginSources = 4096
)

// loginAdmit decides whether a source whose debt is paid off at paid may
// try a token at now, and if not, how long it must wait.
func loginAdmit(paid, now time.Time, burst int, every time.Duration) (ok bool, wait time.Duration) {
	if !paid.After(now) {
		return true, 0 // also keeps Sub from saturating on a zero time
	}
	over := paid.Sub(now) - time.Duration(burst-1)*every
	if over <= 0 {
		return true, 0
	}
	return false, over
}

// loginCharge is when a source's debt is paid off after one more wrong
// token at now.
func loginCharge(paid, now time.Time, every time.Duration) time.Time {
	if paid.Before(now) {
		paid = now
	}
	return paid.Add(every)
}

// loginSource is the key of the peer at addr (host:port): the address,
// IPv6 by its /64 (one site's worth).
func loginSource(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// loginLimiter is the bounded table of sources and when each is paid off.
type loginLimiter struct {
	burst int
	every time.Duration
	max   int
	now   func() time.Time

	mu   sync.Mutex
	paid map[string]time.Time
}

func newLoginLimiter(burst int, every time.Duration, max int, now func() time.Time) *loginLimiter {
	return &loginLimiter{burst: burst, every: every, max: max, now: now, paid: map[string]time.Time{}}
}

// admit says whether source may try a token now.
func (l *loginLimiter) admit(source string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return loginAdmit(l.paid[source], now, l.burst, l.every)
}

// charge records a wrong token from source.
func (l *loginLimiter) charge(source string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, known := l.paid[source]; !known && len(l.paid) >= l.max {
		nearest := ""
		for k, p := range l.paid {
			if !p.After(now) {
				delete(l.paid, k)
			} else if nearest == "" || p.Before(l.paid[nearest]) {
				nearest = k
			}
		}
		if len(l.paid) >= l.max {
			delete(l.paid, nearest)
		}
	}
	l.paid[source] = loginCharge(l.paid[source], now, l.every)
}

func (l *loginLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.paid)
}
