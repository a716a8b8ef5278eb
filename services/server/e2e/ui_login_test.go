package e2e

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-metal/herd/pkg/servertest"
)

// fromAddress is an HTTP client whose connections come from the loopback
// address ip, and which shows redirects instead of following them.
func fromAddress(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestUILoginRateLimit hammers a real herd-server's login with wrong
// tokens from one address until it answers 429 with Retry-After, even to
// the right token; the right token from another address still logs in.
func TestUILoginRateLimit(t *testing.T) {
	s := servertest.Start(t)
	login := func(c *http.Client, token string) (int, string, *http.Response) {
		t.Helper()
		res, err := c.PostForm(s.HTTP+"/ui/login", url.Values{"token": {token}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b), res
	}
	attacker := fromAddress("127.0.0.1")
	refusedAt := 0
	for i := 1; i <= 20 && refusedAt == 0; i++ {
		code, body, res := login(attacker, "wrong-"+strconv.Itoa(i))
		switch code {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			refusedAt = i
			secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
			if err != nil || secs < 1 || !strings.Contains(body, "too many wrong tokens") {
				t.Fatalf("429 with Retry-After %q and page %q, want whole seconds and the reason", res.Header.Get("Retry-After"), body)
			}
		default:
			t.Fatalf("wrong token %d: %d %q", i, code, body)
		}
	}
	if refusedAt == 0 {
		t.Fatal("20 wrong tokens in a row, never a 429")
	}
	t.Logf("refused from wrong token %d on", refusedAt)
	if code, _, res := login(attacker, adminToken); code != http.StatusTooManyRequests || len(res.Cookies()) != 0 {
		t.Fatalf("the right token from the limited address: %d with cookies %v, want 429 and none", code, res.Cookies())
	}
	code, body, res := login(fromAddress("127.0.0.2"), adminToken)
	if code != http.StatusSeeOther || len(res.Cookies()) != 1 {
		t.Fatalf("the right token from another address: %d %q with cookies %v, want a session", code, body, res.Cookies())
	}
}
