package connect

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/pkg/certs"
	"github.com/herd-metal/herd/proto/hardware"
)

// selfSigned makes a self-signed server certificate for 127.0.0.1 and
// herd.test, returning it for the server and as PEM for clients.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "herd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"herd.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// echoServer answers ByID with the authorization header it received in
// the record's id ("-" when there was none).
type echoServer struct {
	hardware.UnimplementedHardwareServiceServer
}

func (echoServer) ByID(ctx context.Context, _ *hardware.GetRequest) (*hardware.Hardware, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	got := "-"
	if v := md.Get("authorization"); len(v) > 0 {
		got = v[0]
	}
	return &hardware.Hardware{Id: got}, nil
}

func startGRPC(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	hardware.RegisterHardwareServiceServer(s, echoServer{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestDial(t *testing.T) {
	cert, certPEM := selfSigned(t)
	_, otherPEM := selfSigned(t)
	addr := startGRPC(t, cert)
	port := addr[strings.LastIndex(addr, ":"):]

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherFile, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	certs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cert":
			_, _ = w.Write(certPEM)
		case "/other":
			_, _ = w.Write(otherPEM)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(certs.Close)

	tests := []struct {
		name     string
		cfg      Config
		wantAuth string // the authorization header the server saw
		wantCode codes.Code
	}{
		{name: "CA file, no token", cfg: Config{Authority: addr, CAFile: caFile}, wantAuth: "-"},
		{name: "CA file, token", cfg: Config{Authority: addr, CAFile: caFile, Token: "s3cret"}, wantAuth: "Bearer s3cret"},
		{name: "cert URL", cfg: Config{Authority: addr, CertURL: certs.URL + "/cert", Token: "t"}, wantAuth: "Bearer t"},
		{name: "CA file wins over URL", cfg: Config{Authority: addr, CAFile: caFile, CertURL: certs.URL + "/other"}, wantAuth: "-"},
		{name: "server name override", cfg: Config{Authority: "localhost" + port, CAFile: caFile, ServerName: "herd.test"}, wantAuth: "-"},
		{name: "name not in certificate", cfg: Config{Authority: "localhost" + port, CAFile: caFile}, wantCode: codes.Unavailable},
		{name: "wrong CA", cfg: Config{Authority: addr, CAFile: otherFile}, wantCode: codes.Unavailable},
		{name: "system pool does not trust it", cfg: Config{Authority: addr}, wantCode: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := Dial(ctx, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			hw, err := hardware.NewHardwareServiceClient(conn).ByID(ctx, &hardware.GetRequest{Id: "x"})
			if tt.wantCode != codes.OK {
				if status.Code(err) != tt.wantCode {
					t.Fatalf("err = %v, want code %v", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hw.GetId() != tt.wantAuth {
				t.Fatalf("server saw authorization %q, want %q", hw.GetId(), tt.wantAuth)
			}
		})
	}
}

func TestDialCAErrors(t *testing.T) {
	big := strings.Repeat("x", MaxCertBytes+10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write([]byte(big))
		case "/garbage":
			_, _ = w.Write([]byte("<html>hello</html>"))
		case "/slow":
			<-r.Context().Done()
		default:
			http.Error(w, "nope", http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	empty := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(empty, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		cfg     Config
		timeout time.Duration
		want    []string // substrings of the error
	}{
		{name: "no authority", cfg: Config{CertURL: srv.URL + "/cert"}, want: []string{"authority"}},
		{name: "HTTP 404", cfg: Config{Authority: "x:1", CertURL: srv.URL + "/missing"}, want: []string{srv.URL + "/missing", "404"}},
		{name: "body too large", cfg: Config{Authority: "x:1", CertURL: srv.URL + "/big"}, want: []string{srv.URL + "/big", "larger than"}},
		{name: "not PEM", cfg: Config{Authority: "x:1", CertURL: srv.URL + "/garbage"}, want: []string{srv.URL + "/garbage", "no PEM certificate"}},
		{name: "timeout", cfg: Config{Authority: "x:1", CertURL: srv.URL + "/slow"}, timeout: 200 * time.Millisecond, want: []string{srv.URL + "/slow", "deadline exceeded"}},
		{name: "nothing listening", cfg: Config{Authority: "x:1", CertURL: "http://127.0.0.1:1/cert"}, want: []string{"http://127.0.0.1:1/cert", "refused"}},
		{name: "not an http URL", cfg: Config{Authority: "x:1", CertURL: "ftp://h/cert"}, want: []string{"ftp://h/cert", "http://"}},
		{name: "CA file missing", cfg: Config{Authority: "x:1", CAFile: "/nonexistent/ca.pem"}, want: []string{"/nonexistent/ca.pem"}},
		{name: "CA file not PEM", cfg: Config{Authority: "x:1", CAFile: empty}, want: []string{empty, "no PEM certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			conn, err := Dial(ctx, tt.cfg)
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestBearerNeedsTLS(t *testing.T) {
	if !Bearer("x").RequireTransportSecurity() {
		t.Fatal("bearer credentials would travel in clear text")
	}
}

// TestCAPin: with a pin (herd.ca_sha256 on the OSIE's kernel line), the
// CA fetched from a real HTTP server, or read from a file, is trusted only
// when its SHA-256 is the pin. A CA swapped on the way (the URL is plain
// HTTP) is refused before any call, with an error saying so; the right
// one lets the call through to the real TLS server.
func TestCAPin(t *testing.T) {
	cert, certPEM := selfSigned(t)
	_, otherPEM := selfSigned(t)
	addr := startGRPC(t, cert)
	blk, _ := pem.Decode(certPEM)
	pin := certs.Fingerprint(blk.Bytes)
	otherBlk, _ := pem.Decode(otherPEM)
	otherPin := certs.Fingerprint(otherBlk.Bytes)
	// openssl x509 -fingerprint -sha256 prints upper case with colons.
	var colons []string
	for i := 0; i < len(pin); i += 2 {
		colons = append(colons, strings.ToUpper(pin[i:i+2]))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cert":
			_, _ = w.Write(certPEM)
		case "/swapped": // what a host in the middle would serve
			_, _ = w.Write(otherPEM)
		case "/bundle": // the attacker's CA first, the real one after
			_, _ = w.Write(append(append([]byte{}, otherPEM...), certPEM...))
		}
	}))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings of Dial's error; none: the call works
	}{
		{"right pin", Config{CertURL: srv.URL + "/cert", CASHA256: pin}, nil},
		{"right pin, openssl's form", Config{CertURL: srv.URL + "/cert", CASHA256: strings.Join(colons, ":")}, nil},
		{"right pin, CA file", Config{CAFile: caFile, CASHA256: pin}, nil},
		{"right pin in a bundle: only it is trusted", Config{CertURL: srv.URL + "/bundle", CASHA256: pin}, nil},
		{"no pin: today's behaviour", Config{CertURL: srv.URL + "/cert"}, nil},
		{"swapped CA", Config{CertURL: srv.URL + "/swapped", CASHA256: pin}, []string{srv.URL + "/swapped", "refused", "pinned SHA-256 " + pin}},
		{"pin of another CA", Config{CertURL: srv.URL + "/cert", CASHA256: otherPin}, []string{"refused", otherPin}},
		{"pin of another CA, CA file", Config{CAFile: caFile, CASHA256: otherPin}, []string{caFile, "refused"}},
		{"pin too short", Config{CertURL: srv.URL + "/cert", CASHA256: pin[:63]}, []string{"CA pin", "64 hex digits", "got 63"}},
		{"pin not hex", Config{CertURL: srv.URL + "/cert", CASHA256: strings.Repeat("zz", 32)}, []string{"CA pin", "not hex"}},
		{"pin without a CA source", Config{CASHA256: pin}, []string{"needs the CA", "system pool is not pinned"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tt.cfg.Authority = addr
			conn, err := Dial(ctx, tt.cfg)
			if tt.wantErr != nil {
				if err == nil {
					conn.Close()
					t.Fatal("Dial succeeded")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := hardware.NewHardwareServiceClient(conn).ByID(ctx, &hardware.GetRequest{Id: "x"}); err != nil {
				t.Fatalf("call through the pinned CA: %v", err)
			}
		})
	}
	// The bundle's other certificate is not trusted: a server presenting
	// it is refused though the bundle carried it.
	otherCert, otherPEM2 := selfSigned(t)
	otherAddr := startGRPC(t, otherCert)
	bundle := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(append(append([]byte{}, otherPEM2...), certPEM...))
	}))
	t.Cleanup(bundle.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, Config{Authority: otherAddr, CertURL: bundle.URL, CASHA256: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := hardware.NewHardwareServiceClient(conn).ByID(ctx, &hardware.GetRequest{Id: "x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("server with the bundle's unpinned certificate: %v, want Unavailable (untrusted)", err)
	}
}
