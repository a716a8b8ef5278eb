package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/herd-metal/herd/pkg/certs"
)

// registryAuth is who may pull from and push to the sandbox's registry.
type registryAuth struct{ user, password string }

// registryConfig is Debian's docker-registry's configuration: TLS with
// the pair in tlsDir, htpasswd auth, storage under dir.
func registryConfig(dir string, f certs.Files, htpasswd string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
auth:
  htpasswd:
    realm: herd-sandbox
    path: %s
http:
  addr: %s
  secret: herd-sandbox
  tls:
    certificate: %s
    key: %s
`, filepath.Join(dir, "storage"), htpasswd, registry, f.Cert, f.Key)
}

// startRegistry runs the action image registry with TLS and htpasswd, so
// nobody else on the bridge can replace image2disk, and waits until it
// refuses an anonymous request.
func (sb *sandbox) startRegistry(ctx context.Context) (registryAuth, error) {
	dir := filepath.Join(sb.dir, "registry")
	pw, err := randomToken()
	if err != nil {
		return registryAuth{}, err
	}
	auth := registryAuth{user: "herd", password: pw}
	hash, err := bcrypt.GenerateFromPassword([]byte(auth.password), bcrypt.DefaultCost)
	if err != nil {
		return auth, err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(auth.user+":"+string(hash)+"\n"), 0o600); err != nil {
		return auth, err
	}
	f, err := certs.Ensure(filepath.Join(dir, "tls"), []string{hostIP}, time.Now())
	if err != nil {
		return auth, err
	}
	confFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confFile, []byte(registryConfig(dir, f, htpasswd)), 0o644); err != nil {
		return auth, err
	}
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return auth, fmt.Errorf("docker-registry (Debian package docker-registry; make deps): %w", err)
	}
	p, err := sb.startProc(spec{name: "registry", netns: nsName, order: 30, args: []string{bin, "serve", confFile}})
	if err != nil {
		return auth, err
	}
	return auth, waitRegistry(ctx, f.CA, p)
}

// waitRegistry waits until the registry answers /v2/ over TLS (its
// certificate checked against ca) and refuses a request without
// credentials; a 200 there would mean anyone may push.
func waitRegistry(ctx context.Context, ca string, p *proc) error {
	pem, err := os.ReadFile(ca)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", ca)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dialInNetns, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+registry+"/v2/", nil)
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
			switch res.StatusCode {
			case http.StatusUnauthorized:
				return nil
			case http.StatusOK:
				return errors.New("the registry serves /v2/ without credentials: anyone on the bridge could push")
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		if p.exited() {
			return fmt.Errorf("registry exited (%v)", p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry https://%s/v2/ not ready within 30 s: %v", registry, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
