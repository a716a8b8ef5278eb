package logging

import (
	"sync"
	"time"
)

// Limiter rate-limits log lines per key (a source address, say), so that
// whoever sends a flood of bad requests cannot flood the log with them: at
// most Burst lines per key in each Window, the rest counted and the count
// handed to the next line allowed. Its memory is bounded: it tracks at most
// MaxKeys keys, and when that many are active, new keys share one overflow
// entry.
type Limiter struct {
	window  time.Duration
	burst   int
	maxKeys int

	mu   sync.Mutex
	keys map[string]*limitEntry
	over limitEntry
}

type limitEntry struct {
	start      time.Time
	lines      int
	suppressed int
}

// OverflowKey is the key lines share once MaxKeys keys are tracked.
const OverflowKey = "(other sources)"

// NewLimiter returns a Limiter allowing burst lines per key per window,
// tracking at most maxKeys keys.
func NewLimiter(window time.Duration, burst, maxKeys int) *Limiter {
	return &Limiter{window: window, burst: max(burst, 1), maxKeys: max(maxKeys, 1), keys: map[string]*limitEntry{}}
}

// Allow reports whether a line about key may be logged at now, and how many
// lines about it were held back since the last one allowed (to be said on
// this one).
func (l *Limiter) Allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.keys[key]
	if !found {
		if len(l.keys) >= l.maxKeys {
			l.sweep(now)
		}
		if len(l.keys) >= l.maxKeys {
			e = &l.over
		} else {
			e = &limitEntry{start: now}
			l.keys[key] = e
		}
	}
	if now.Sub(e.start) >= l.window {
		e.start, e.lines = now, 0
	}
	if e.lines >= l.burst {
		e.suppressed++
		return false, 0
	}
	e.lines++
	suppressed, e.suppressed = e.suppressed, 0
	return true, suppressed
}

// sweep forgets keys whose window passed with nothing held back.
func (l *Limiter) sweep(now time.Time) {
	for k, e := range l.keys {
		if now.Sub(e.start) >= l.window && e.suppressed == 0 {
			delete(l.keys, k)
		}
	}
}

// Len is the number of keys tracked (for tests).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
