package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnsure(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	f, err := Ensure(dir, []string{"localhost", "10.1.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(f.CA)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	leaf := func() *x509.Certificate {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(pair.Certificate[0])
		return c
	}
	first := leaf()
	for _, h := range []string{"localhost", "10.1.0.1"} {
		if _, err := first.Verify(x509.VerifyOptions{DNSName: h, Roots: pool}); err != nil {
			t.Errorf("verify for %s: %v", h, err)
		}
	}
	if st, _ := os.Stat(f.Key); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}

	// Same hosts: nothing reissued.
	if _, err := Ensure(dir, []string{"localhost"}, now); err != nil {
		t.Fatal(err)
	}
	if !leaf().Equal(first) {
		t.Error("certificate reissued although it still fits")
	}
	// A new host: reissued by the same CA, so trusting clients keep working.
	if _, err := Ensure(dir, []string{"herd.example"}, now); err != nil {
		t.Fatal(err)
	}
	second := leaf()
	if second.Equal(first) {
		t.Fatal("certificate not reissued for a new host")
	}
	if _, err := second.Verify(x509.VerifyOptions{DNSName: "herd.example", Roots: pool}); err != nil {
		t.Errorf("reissued certificate not signed by the original CA: %v", err)
	}
	// Near expiry: reissued.
	if _, err := Ensure(dir, []string{"herd.example"}, now.Add(serverLife)); err != nil {
		t.Fatal(err)
	}
	if leaf().Equal(second) {
		t.Error("certificate near expiry not reissued")
	}
}

func TestCAFingerprint(t *testing.T) {
	dir := t.TempDir()
	f, err := Ensure(dir, []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(f.CA)
	blk, _ := pem.Decode(caPEM)
	// The pin is what `openssl x509 -outform der | sha256sum` prints.
	sum := sha256.Sum256(blk.Bytes)
	got, err := CAFingerprint(f.CA)
	if err != nil || got != hex.EncodeToString(sum[:]) || len(got) != 64 {
		t.Fatalf("CAFingerprint = %q, %v; want %x", got, err, sum)
	}
	serverPEM, _ := os.ReadFile(f.Cert)
	two := filepath.Join(dir, "two.pem")
	os.WriteFile(two, append(append([]byte{}, caPEM...), serverPEM...), 0o600)
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("no pem here"), 0o600)
	for _, tt := range []struct{ file, want string }{
		{f.Cert, "is not a CA"},
		{two, "holds 2 PEM certificates"},
		{junk, "holds 0 PEM certificates"},
		{filepath.Join(dir, "missing.pem"), "no such file"},
	} {
		if _, err := CAFingerprint(tt.file); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.file) {
			t.Errorf("CAFingerprint(%s) = %v, want an error naming the file and %q", tt.file, err, tt.want)
		}
	}
}
