package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
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
