package ui

import (
	"testing"
	"time"
)

func TestExpired(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const idle, lifetime = 2 * time.Hour, 10 * time.Hour
	for _, tc := range []struct {
		name      string
		used, now time.Duration // after creation
		want      bool
	}{
		{"just created", 0, 0, false},
		{"idle under the limit", time.Hour, time.Hour + 119*time.Minute, false},
		{"idle at the limit", time.Hour, 3 * time.Hour, true},
		{"lifetime reached though in use", 10*time.Hour - time.Minute, 10 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &session{created: t0, used: t0.Add(tc.used)}
			if got := expired(s, t0.Add(tc.now), idle, lifetime); got != tc.want {
				t.Fatalf("expired = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSessionsExpireAndStayBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tab := newSessions(3, time.Hour, 24*time.Hour, func() time.Time { return now })
	a, sa := tab.create("token-a")
	if sa.token != "token-a" || sa.csrf == "" || sa.csrf == a {
		t.Fatalf("session %+v id %q: want the token and a CSRF token apart from the id", sa, a)
	}
	now = now.Add(time.Minute)
	b, _ := tab.create("token-b")
	now = now.Add(time.Minute)
	c, _ := tab.create("token-c")
	now = now.Add(time.Minute)
	if _, ok := tab.get(a); !ok { // a is now the most recently used
		t.Fatal("session a lost")
	}
	d, _ := tab.create("token-d")
	if n := tab.len(); n != 3 {
		t.Fatalf("%d sessions, want the bound 3", n)
	}
	if _, ok := tab.get(b); ok {
		t.Fatal("the least recently used session b should have made room")
	}
	for _, id := range []string{a, c, d} {
		if _, ok := tab.get(id); !ok {
			t.Fatalf("session %q lost", id)
		}
	}
	now = now.Add(time.Hour)
	if _, ok := tab.get(a); ok {
		t.Fatal("an idle session outlived its idle timeout")
	}
	if _, ok := tab.get("no-such-id"); ok {
		t.Fatal("an unknown id opened a session")
	}
	tab.delete(c)
	if _, ok := tab.get(c); ok {
		t.Fatal("a deleted session still opens")
	}
}

func TestCSRFValid(t *testing.T) {
	s := session{csrf: "abc"}
	for _, tc := range []struct {
		got  string
		want bool
	}{{"abc", true}, {"", false}, {"abd", false}, {"abcd", false}} {
		if csrfValid(s, tc.got) != tc.want {
			t.Errorf("csrfValid(%q) = %v, want %v", tc.got, !tc.want, tc.want)
		}
	}
	if csrfValid(session{}, "") {
		t.Error("an empty CSRF token matched a session without one")
	}
}

func TestValidToken(t *testing.T) {
	long := make([]byte, maxTokenBytes+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"servertest-admin-token", true},
		{"", false},
		{"two words", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"é-token", false},
		{string(long), false},
	} {
		if err := validToken(tc.token); (err == nil) != tc.ok {
			t.Errorf("validToken(%q) = %v, want ok %v", tc.token, err, tc.ok)
		}
	}
}
