// Package certs creates the private CA and server certificate a herd
// server uses when the operator configured none, so TLS is on from the
// first start. Clients fetch the CA from the server's /cert URL, as
// Tinkerbell v0.6 clients do.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the PEM files in a state directory.
type Files struct {
	CA, Cert, Key string
}

// InDir names the files certs keeps in dir.
func InDir(dir string) Files {
	return Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem")}
}

const (
	caLife     = 10 * 365 * 24 * time.Hour
	serverLife = 2 * 365 * 24 * time.Hour
	// Reissue a server certificate this long before it expires.
	renewBefore = 30 * 24 * time.Hour
)

// Ensure makes sure dir holds a CA and a server certificate valid now for
// every name in hosts (DNS names or IP addresses). It keeps what is there
// when it still fits, reissues the server certificate from the same CA when
// a host is missing or expiry is near, and creates the CA only once, so
// clients that trusted it keep working.
func Ensure(dir string, hosts []string, now time.Time) (Files, error) {
	f := InDir(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return f, fmt.Errorf("state directory: %w", err)
	}
	caKeyFile := filepath.Join(dir, "ca-key.pem")
	ca, caKey, err := loadPair(f.CA, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		ca, caKey, err = newCA(f.CA, caKeyFile, now)
	}
	if err != nil {
		return f, fmt.Errorf("CA in %s: %w", dir, err)
	}
	if cert, _, err := loadPair(f.Cert, f.Key); err == nil && fits(cert, ca, hosts, now) {
		return f, nil
	}
	if err := newServer(f, ca, caKey, hosts, now); err != nil {
		return f, fmt.Errorf("server certificate in %s: %w", dir, err)
	}
	return f, nil
}

func fits(cert, ca *x509.Certificate, hosts []string, now time.Time) bool {
	if cert.CheckSignatureFrom(ca) != nil || now.Add(renewBefore).After(cert.NotAfter) {
		return false
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func newCA(certFile, keyFile string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "herd CA", Organization: []string{"herd"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLife),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(certFile, keyFile, der, key); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func newServer(f Files, ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "herd-server", Organization: []string{"herd"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writePair(f.Cert, f.Key, der, key)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writePair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		if _, statErr := os.Stat(certFile); errors.Is(statErr, os.ErrNotExist) {
			return nil, nil, os.ErrNotExist
		}
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not an ECDSA key", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	return cert, key, err
}

// LocalHosts are the names a server certificate should cover by default:
// localhost, the host name and every address of the machine.
func LocalHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
			hosts = append(hosts, n.IP.String())
		}
	}
	return hosts
}

// Fingerprint is the pin of a certificate: the hex SHA-256 of its DER
// bytes, as herd-boots puts it on the OSIE's kernel line
// (herd.ca_sha256=) and the worker checks the CA it fetches against.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// CAFingerprint reads a PEM file that holds exactly one CA certificate
// and returns its Fingerprint. Anything else (no certificate, several, a
// certificate that is not a CA) is an error naming the file: a pin of the
// wrong certificate would make every worker refuse its server.
func CAFingerprint(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var ders [][]byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			ders = append(ders, blk.Bytes)
		}
	}
	if len(ders) != 1 {
		return "", fmt.Errorf("%s: holds %d PEM certificates, want exactly one (the CA)", file, len(ders))
	}
	cert, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if !cert.IsCA {
		return "", fmt.Errorf("%s: the certificate (subject %q) is not a CA", file, cert.Subject.String())
	}
	return Fingerprint(ders[0]), nil
}
