// Package workertoken is the per-machine credential of a worker:
// "<hardware id>.<HMAC-SHA256(key, hardware id)>". herd-server signs and
// checks it with a key only it holds and keeps no list; boots hands it to
// the machine on the kernel command line; the worker sends it as a bearer
// token, and it opens only that machine's own workflows.
package workertoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// Sign returns the credential of hardware id hwID.
func Sign(key []byte, hwID string) string {
	return hwID + "." + mac(key, hwID)
}

// Verify returns the hardware id a credential speaks for, if key signed it.
func Verify(key []byte, token string) (string, bool) {
	hwID, sig, ok := strings.Cut(token, ".")
	if !ok || hwID == "" || !hmac.Equal([]byte(sig), []byte(mac(key, hwID))) {
		return "", false
	}
	return hwID, true
}

func mac(key []byte, hwID string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("herd-worker:" + hwID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
