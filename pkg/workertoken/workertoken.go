// Package workertoken is the per-machine credential of a worker:
//
//	<hardware id>.<generation>.<expiry>.<HMAC-SHA256(key, all three)>
//
// herd-server signs and checks it with a key only it holds; boots hands it
// to the machine on the kernel command line; the worker sends it as a
// bearer token, and it opens only that machine's own workflows.
//
// The generation is the hardware record's credential generation, new for
// every record the server creates: deleting a record and pushing the same
// id again leaves every credential of the old record dead. The expiry (Unix
// seconds) ends a credential by itself. Credentials issued in the same
// quarter of their lifetime are identical (see Expiry), so every watcher of
// one server gets the same credential for a machine.
package workertoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Claims are what a credential says.
type Claims struct {
	HardwareID string
	Generation int64
	Expires    time.Time
}

// Errors of Verify.
var (
	// ErrInvalid: not a credential this key signed.
	ErrInvalid = errors.New("not a valid worker credential")
	// ErrExpired: signed, but past its expiry.
	ErrExpired = errors.New("worker credential expired")
)

// MinLifetime is the shortest lifetime Expiry accepts.
const MinLifetime = 4 * time.Second

// Expiry returns, for a credential issued at now with the given lifetime,
// its expiry and the time a fresher one is issued. Time is cut into steps
// of a quarter lifetime (whole seconds); a credential issued during a step
// expires one lifetime after the step began, so it has between three
// quarters of the lifetime and all of it left when issued, and holders that
// take the fresh one at renew always keep at least three quarters.
func Expiry(now time.Time, lifetime time.Duration) (expires, renew time.Time) {
	step := (max(lifetime, MinLifetime) / 4).Truncate(time.Second)
	start := now.Truncate(step)
	return start.Add(4 * step), start.Add(step)
}

// Sign returns the credential saying c.
func Sign(key []byte, c Claims) string {
	body := c.HardwareID + "." + strconv.FormatInt(c.Generation, 10) + "." + strconv.FormatInt(c.Expires.Unix(), 10)
	return body + "." + mac(key, body)
}

// Verify returns what a credential says if key signed it: ErrInvalid when
// it did not (or the text is no credential), ErrExpired with the claims
// when it did but the expiry is not after now.
func Verify(key []byte, token string, now time.Time) (Claims, error) {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return Claims{}, ErrInvalid
	}
	body, sig := token[:i], token[i+1:]
	if !hmac.Equal([]byte(sig), []byte(mac(key, body))) {
		return Claims{}, ErrInvalid
	}
	parts := strings.Split(body, ".")
	if len(parts) != 3 || parts[0] == "" {
		return Claims{}, ErrInvalid
	}
	gen, err1 := strconv.ParseInt(parts[1], 10, 64)
	exp, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return Claims{}, ErrInvalid
	}
	c := Claims{HardwareID: parts[0], Generation: gen, Expires: time.Unix(exp, 0)}
	if !now.Before(c.Expires) {
		return c, ErrExpired
	}
	return c, nil
}

func mac(key []byte, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("herd-worker/v2:" + body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
