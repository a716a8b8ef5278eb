// Package connect dials herd-server the way every herd client does (the
// CLI, the worker): always over TLS, trusting a CA taken from a file, from
// the server's certificate URL (as Tinkerbell v0.6 clients fetch
// TINKERBELL_CERT_URL) or from the system pool, and sending a bearer token
// with every call when one is configured.
package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// QuickReconnect is a dial option for the services that must see
// herd-server again within a second of its return (herd-boots and
// herd-metadata, whose in-memory inventory follows its Watch): the
// connection is retried every quarter second at most, where gRPC's default
// pace grows to two minutes. Only a handful of such clients exist per
// server, so the attempts cost nothing; machines' workers keep the default.
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
	// such as dns:///host:port works too).
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
	all = append(all, opts...)
	conn, err := grpc.NewClient(c.Authority, all...)
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
	switch {
	case c.CAFile != "":
		pool, err := caFromFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	case c.CertURL != "":
		pool, err := FetchCA(ctx, c.CertURL)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func caFromFile(name string) (*x509.CertPool, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	defer f.Close()
	b, err := readBounded(f)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", name)
	}
	return pool, nil
}

// FetchCA gets the PEM CA certificate(s) herd-server publishes at rawURL
// (its /cert endpoint). The body is bounded by MaxCertBytes and the
// request by FetchTimeout (or ctx's earlier deadline). Errors name the URL.
func FetchCA(ctx context.Context, rawURL string) (*x509.CertPool, error) {
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
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("fetch CA from %s: the response holds no PEM certificate", rawURL)
	}
	return pool, nil
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
