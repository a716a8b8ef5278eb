// Package keyring seals the secrets herd-server keeps in PostgreSQL (BMC
// passwords) with AES-256-GCM under keys kept out of the database: a
// database dump or backup alone gives no secret away.
//
// The key file holds one key per line, "ID BASE64-32-BYTES"; the first
// line's key seals, every line's key opens. Rotation is: put a new key on
// the first line, keep the old one below it, restart herd-server (it
// reseals what the old key sealed), then drop the old line.
package keyring

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// KeyBytes is the length of every key: AES-256.
const KeyBytes = 32

// ErrUnknownKey: a sealed secret names a key the keyring does not hold.
var ErrUnknownKey = errors.New("sealed with a key that is not in the key file")

var keyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// Keyring seals with its current key and opens with any of its keys.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// Current is the id of the key that seals.
func (k *Keyring) Current() string { return k.current }

// Seal encrypts plain for the record named by context (the sealed value
// opens only for that same context, so a row's secret cannot be moved
// onto another row). It returns the id of the key used.
func (k *Keyring) Seal(context string, plain []byte) (string, []byte, error) {
	a := k.aeads[k.current]
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, err
	}
	return k.current, a.Seal(nonce, nonce, plain, aad(k.current, context)), nil
}

// Open decrypts what Seal returned for the same context.
func (k *Keyring) Open(id, context string, sealed []byte) ([]byte, error) {
	a, ok := k.aeads[id]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", id, ErrUnknownKey)
	}
	if len(sealed) < a.NonceSize()+a.Overhead() {
		return nil, fmt.Errorf("sealed secret is %d bytes, too short to be one", len(sealed))
	}
	n := a.NonceSize()
	plain, err := a.Open(nil, sealed[:n], sealed[n:], aad(id, context))
	if err != nil {
		return nil, fmt.Errorf("sealed secret does not open with key %q: damaged, or moved from another record", id)
	}
	return plain, nil
}

func aad(id, context string) []byte { return []byte("herd/" + id + "/" + context) }

// Parse reads a key file's content; name is used in its errors.
func Parse(name string, data []byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("%s line %d: want \"ID BASE64-KEY\", got %d fields", name, n, len(f))
		}
		if !keyID.MatchString(f[0]) {
			return nil, fmt.Errorf("%s line %d: key id %q: 1 to 32 letters, digits, '.', '_' or '-'", name, n, clip(f[0]))
		}
		if _, dup := k.aeads[f[0]]; dup {
			return nil, fmt.Errorf("%s line %d: key id %q is used twice", name, n, f[0])
		}
		raw, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil || len(raw) != KeyBytes {
			return nil, fmt.Errorf("%s line %d: key %q is not %d bytes in standard base64", name, n, f[0], KeyBytes)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, err
		}
		a, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.aeads[f[0]] = a
		if k.current == "" {
			k.current = f[0]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if k.current == "" {
		return nil, fmt.Errorf("%s: no key in it (want lines \"ID BASE64-KEY\")", name)
	}
	return k, nil
}

// Load reads the key file at path. With create set, a missing file is
// made with one new key (mode 0600); an operator's own file must exist.
func Load(path string, create bool) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		if data, err = newFile(path); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("bmc key file: %w", err)
	}
	return Parse(path, data)
}

// NewLine returns a key file line with a new random key.
func NewLine() (string, error) {
	raw := make([]byte, KeyBytes)
	id := make([]byte, 4)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	return "k" + hex.EncodeToString(id) + " " + base64.StdEncoding.EncodeToString(raw), nil
}

func newFile(path string) ([]byte, error) {
	line, err := NewLine()
	if err != nil {
		return nil, err
	}
	data := []byte("# herd-server's keys for BMC credentials: the first line seals, every line opens.\n" +
		"# Rotation: docs/security.md. Losing this file loses the stored BMC passwords.\n" + line + "\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// Written aside and linked into place: two servers starting on one
	// state directory end up with the same single key, never a half file.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".bmc-key-*")
	if err != nil {
		return nil, fmt.Errorf("bmc key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("bmc key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("bmc key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path)
	} else if err != nil {
		return nil, fmt.Errorf("bmc key file: %w", err)
	}
	return data, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
