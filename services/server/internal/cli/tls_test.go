package cli

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
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

// TestOverTLS drives the CLI through its real dialling (connect.Dial):
// the CA downloaded from a cert URL, TLS, and the token as a bearer
// credential checked by the server, all configured from the environment.
func TestOverTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herd-server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(certPEM) }))
	t.Cleanup(certs.Close)

	var (
		mu   sync.Mutex
		seen []string
	)
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen = append(seen, strings.Join(md.Get("authorization"), ","))
		mu.Unlock()
		if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer s3cret" {
			return status.Error(codes.Unauthenticated, "bad or missing bearer token")
		}
		return nil
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(
		grpc.Creds(credentials.NewServerTLSFromCert(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	f := newFake()
	hardware.RegisterHardwareServiceServer(s, f)
	template.RegisterTemplateServiceServer(s, f)
	workflow.RegisterWorkflowServiceServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)

	env := map[string]string{"HERD_GRPC_AUTHORITY": lis.Addr().String(), "HERD_CERT_URL": certs.URL + "/cert", "HERD_TOKEN": "s3cret"}
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errb strings.Builder
		cmd := New(strings.NewReader(stdin), &out, &errb, WithLookupEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
		code := Run(t.Context(), cmd, args)
		return code, out.String(), errb.String()
	}

	if code, out, errs := run(machine1, "hardware", "push"); code != 0 || !strings.Contains(out, "pushed") {
		t.Fatalf("push: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, out, errs := run("", "hardware", "list", "-q"); code != 0 || out != "0eba0bf8-3772-4b4a-ab9f-6ebe93b90a94\n" {
		t.Fatalf("list: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	env["HERD_TOKEN"] = "wrong"
	if code, _, errs := run("", "hardware", "list"); code != 1 || errs != "herd: bad or missing bearer token\n" {
		t.Fatalf("wrong token: exit %d, stderr %q", code, errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"Bearer s3cret", "Bearer s3cret", "Bearer wrong"}; strings.Join(seen, "|") != strings.Join(want, "|") {
		t.Fatalf("server saw %q, want %q", seen, want)
	}
}
