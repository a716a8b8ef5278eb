package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// The browser holds an opaque session id; the operator's token stays in
// this process's memory. Chosen over a sealed token in the cookie because
// logging out (or a full table) really ends a session, a stolen cookie
// dies with the process, and no sealing key has to be made, kept and
// rotated; the price is that a restart of herd-server logs everyone out.

// session is one logged-in browser.
type session struct {
	token string // the operator's bearer token, sent with every API call
	csrf  string // must come with every change (non-GET request)
	// created bounds the session's life; used its idle time.
	created, used time.Time
}

// sessions is the bounded, expiring table of sessions by id.
type sessions struct {
	max            int
	idle, lifetime time.Duration
	now            func() time.Time

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(max int, idle, lifetime time.Duration, now func() time.Time) *sessions {
	return &sessions{max: max, idle: idle, lifetime: lifetime, now: now, byID: map[string]*session{}}
}

// expired decides whether s has ended at now.
func expired(s *session, now time.Time, idle, lifetime time.Duration) bool {
	return now.Sub(s.used) >= idle || now.Sub(s.created) >= lifetime
}

// create starts a session for token and returns its id. A full table
// first drops its expired sessions, then the least recently used one.
func (t *sessions) create(token string) (string, session) {
	id, csrf := randomID(), randomID()
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byID) >= t.max {
		var oldest string
		for k, s := range t.byID {
			if expired(s, now, t.idle, t.lifetime) {
				delete(t.byID, k)
			} else if oldest == "" || s.used.Before(t.byID[oldest].used) {
				oldest = k
			}
		}
		if len(t.byID) >= t.max {
			delete(t.byID, oldest)
		}
	}
	s := &session{token: token, csrf: csrf, created: now, used: now}
	t.byID[id] = s
	return id, *s
}

// get returns the live session id names and marks it used.
func (t *sessions) get(id string) (session, bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.byID[id]
	if !ok {
		return session{}, false
	}
	if expired(s, now, t.idle, t.lifetime) {
		delete(t.byID, id)
		return session{}, false
	}
	s.used = now
	return *s, true
}

func (t *sessions) delete(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byID, id)
}

func (t *sessions) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// randomID is 256 random bits, URL-safe.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// csrfValid reports whether got is the session's CSRF token.
func csrfValid(s session, got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}
