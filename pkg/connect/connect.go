// Package connect dials herd-server the way every herd client does (the
// CLI, the worker): always over TLS, trusting a CA taken from a file, from
// the server's certificate URL (as Tinkerbell v0.6 clients fetch
// TINKERBELL_CERT_URL) or from the system pool, and sending a bearer token
// with every call when one is configured.
package connect

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	"github.com/herd-metal/herd/pkg/certs"
)

// QuickReconnect is a dial option for the services that must see
// herd-server again within a second of its return (herd-boots and
// herd-metadata, whose in-memory inventory follows its Watch): the
// connection is retried every quarter second at most, where gRPC's default
// pace grows to two minutes. Only a handful of such clients exist per
// server, so the attempts cost nothing; herd-worker sets a pace of its own
// (at most 5 s apart, worker/cmd/herd-worker).
var QuickReconnect = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
	MinConnectTimeout: 5 * time.Second,
})

const (
	// MaxCertBytes bounds the CA document read from a file or a URL. A CA
	// bundle is a few KiB; anything near this is not one.
	MaxCertBytes = 1 << 20
	// FetchTimeout bounds fetching the CA from CertURL when ctx has no
	// earlier deadline.
	FetchTimeout = 10 * time.Second
)

// Config says where herd-server is and how to trust and authenticate to it.
type Config struct {
	// Authority is the server's gRPC address, host:port (a gRPC target
	// such as dns:///host:port works too), or several host:port of
	// herd-server replicas, comma-separated (see target).
	Authority string
	// CertURL is fetched for the PEM CA when CAFile is empty, e.g.
	// http://127.0.0.1:42114/cert.
	CertURL string
	// CAFile is a PEM file of the CA certificate(s) to trust. It wins over
	// CertURL; with neither, the system pool is trusted.
	CAFile string
	// Token, when set, is sent as "authorization: Bearer <token>" on every
	// call.
	Token string
	// ServerName overrides the name the server certificate is checked
	// against (default: the host part of Authority).
	ServerName string
	// CASHA256, when set, pins the CA: the hex SHA-256 of its
	// certificate's DER (certs.Fingerprint; herd-boots puts it on the
	// OSIE's kernel line as herd.ca_sha256=). The CA taken from CAFile or
	// CertURL must then hold a certificate with that digest, and only that
	// certificate is trusted: a CA swapped on the way (the URL is often
	// plain HTTP) is refused. It needs CAFile or CertURL.
	CASHA256 string
}

// Dial returns a client connection to c.Authority. It loads or fetches the
// CA now (so a wrong file or URL fails here, naming it); the connection
// itself is made on first use, as with grpc.NewClient. opts are appended
// to herd's own (e.g. keepalive settings, interceptors).
func Dial(ctx context.Context, c Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if c.Authority == "" {
		return nil, errors.New("no server address (authority) configured")
	}
	tc, err := TLSConfig(ctx, c)
	if err != nil {
		return nil, err
	}
	all := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if c.Token != "" {
		all = append(all, grpc.WithPerRPCCredentials(Bearer(c.Token)))
	}
	tgt, replicaOpts, err := target(c.Authority)
	if err != nil {
		return nil, err
	}
	all = append(append(all, replicaOpts...), opts...)
	conn, err := grpc.NewClient(tgt, all...)
	if err != nil {
		return nil, fmt.Errorf("herd-server at %s: %w", c.Authority, err)
	}
	return conn, nil
}

// TLSConfig returns the client TLS configuration for c: the CA from
// c.CAFile, else fetched from c.CertURL, else the system pool (RootCAs
// left nil).
func TLSConfig(ctx context.Context, c Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	var pin string
	if c.CASHA256 != "" {
		var err error
		if pin, err = ParsePin(c.CASHA256); err != nil {
			return nil, err
		}
		if c.CAFile == "" && c.CertURL == "" {
			return nil, errors.New("a CA pin (SHA-256) needs the CA to check it on: set a CA file or a certificate URL (the system pool is not pinned)")
		}
	}
	var b []byte
	var from string
	switch {
	case c.CAFile != "":
		var err error
		if b, err = readCAFile(c.CAFile); err != nil {
			return nil, err
		}
		from = "CA file " + c.CAFile
	case c.CertURL != "":
		var err error
		if b, err = fetchCA(ctx, c.CertURL); err != nil {
			return nil, err
		}
		from = "fetch CA from " + c.CertURL
	default:
		return tc, nil
	}
	pool, err := caPool(b, pin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	tc.RootCAs = pool
	return tc, nil
}

// ParsePin reads a CA pin: 64 hex digits (either case; colons between
// pairs, as openssl's -fingerprint prints them, are taken too). It
// returns the pin in lower case without colons.
func ParsePin(s string) (string, error) {
	p := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if len(p) != 2*sha256.Size {
		return "", fmt.Errorf("CA pin %q: want the 64 hex digits of the CA certificate's SHA-256, got %d digits", s, len(p))
	}
	if _, err := hex.DecodeString(p); err != nil {
		return "", fmt.Errorf("CA pin %q: want the 64 hex digits of the CA certificate's SHA-256: not hex", s)
	}
	return p, nil
}

// caPool is the pool of the PEM certificates in b; with a pin (from
// ParsePin), of the one certificate whose DER has that SHA-256, and an
// error when none has.
func caPool(b []byte, pin string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if pin == "" {
		if !pool.AppendCertsFromPEM(b) {
			return nil, errors.New("holds no PEM certificate")
		}
		return pool, nil
	}
	seen := 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		seen++
		if certs.Fingerprint(blk.Bytes) != pin {
			continue
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the pinned certificate: %w", err)
		}
		pool.AddCert(cert)
		return pool, nil
	}
	if seen == 0 {
		return nil, errors.New("holds no PEM certificate")
	}
	return nil, fmt.Errorf("refused: none of its %d certificate(s) has the pinned SHA-256 %s", seen, pin)
}

func readCAFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	defer f.Close()
	b, err := readBounded(f)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", name, err)
	}
	return b, nil
}

// FetchCA gets the PEM CA certificate(s) herd-server publishes at rawURL
// (its /cert endpoint). The body is bounded by MaxCertBytes and the
// request by FetchTimeout (or ctx's earlier deadline). Errors name the URL.
func FetchCA(ctx context.Context, rawURL string) (*x509.CertPool, error) {
	b, err := fetchCA(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	pool, err := caPool(b, "")
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: the response %w", rawURL, err)
	}
	return pool, nil
}

// fetchCA is FetchCA's body: the response, bounded, not yet parsed.
func fetchCA(ctx context.Context, rawURL string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("certificate URL %q: want an http:// or https:// URL", rawURL)
	}
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w", rawURL, err)
	}
	// A client of its own: no proxy from the environment (the server is
	// usually on the local network) and no shared state.
	client := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: FetchTimeout}).DialContext,
		TLSHandshakeTimeout: FetchTimeout,
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w", rawURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch CA from %s: HTTP status %s", rawURL, resp.Status)
	}
	b, err := readBounded(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fetch CA from %s: %w", rawURL, err)
	}
	return b, nil
}

// unwrapURLError drops *url.Error's "Get \"<url>\": " prefix, since our
// own message already names the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func readBounded(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxCertBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxCertBytes {
		return nil, fmt.Errorf("larger than %d bytes, not a CA certificate", MaxCertBytes)
	}
	return b, nil
}

// Bearer returns per-RPC credentials sending "authorization: Bearer
// <token>". They refuse to travel over a connection without TLS.
func Bearer(token string) credentials.PerRPCCredentials {
	return bearer(token)
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
