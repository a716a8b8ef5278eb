// Package registrytest runs Debian's docker-registry (the CNCF
// distribution registry) privately for tests: its own config file and
// storage under a temp dir, optionally TLS with a test CA and inside a
// network namespace the test created. It stops the registry by pid.
package registrytest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/herd-metal/herd/pkg/certs"
)

// Options say how the registry runs.
type Options struct {
	// IP to listen on (default 127.0.0.1, on a free port). Docker treats
	// loopback registries as insecure (TLS unchecked, HTTP allowed); a
	// registry whose CA matters listens on a 10.x address in a namespace.
	IP string
	// NetNS, when set, is the named network namespace it runs in (port
	// 5000 there).
	NetNS string
	// TLS: serve HTTPS with a certificate for IP from a fresh test CA
	// (Registry.CA).
	TLS bool
	// User and Password, when User is set, make the registry demand them
	// (HTTP basic auth from an htpasswd file). Docker sends credentials
	// only over TLS, or to loopback or insecure registries.
	User, Password string
}

// Registry is one running registry.
type Registry struct {
	// Addr is host:port, the registry's name in image references.
	Addr string
	// CA is the PEM file of the CA that signed its certificate (TLS only).
	CA  string
	log *bytes.Buffer
	mu  *sync.Mutex
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (b lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Log is what the registry wrote.
func (r *Registry) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.String()
}

// need fails the test under CI=true, else skips it, when a part is missing.
func need(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	t.Skipf("%v (run make deps; under CI=true this fails)", err)
}

// Start runs a registry for the test and stops it when the test ends.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	need(t, err)
	dir := t.TempDir()
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	port := 5000
	if o.NetNS == "" {
		ln, err := net.Listen("tcp", net.JoinHostPort(o.IP, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	r := &Registry{Addr: net.JoinHostPort(o.IP, fmt.Sprint(port)), log: &bytes.Buffer{}, mu: &sync.Mutex{}}
	tlsConf := ""
	if o.TLS {
		f, err := certs.Ensure(filepath.Join(dir, "pki"), []string{o.IP}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		r.CA = f.CA
		tlsConf = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", f.Cert, f.Key)
	}
	authConf := ""
	if o.User != "" {
		// The registry accepts only bcrypt lines in its htpasswd file.
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		authConf = fmt.Sprintf("auth:\n  htpasswd:\n    realm: herd-test\n    path: %s\n", htpasswd)
	}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: herd-test
%s%s`, filepath.Join(dir, "storage"), r.Addr, tlsConf, authConf)
	confFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{bin, "serve", confFile}
	if o.NetNS != "" {
		args = append([]string{"nsenter", "--net=/run/netns/" + o.NetNS, "--"}, args...) // execs: the pid stays the registry's
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lockedBuffer{r.mu, r.log}, lockedBuffer{r.mu, r.log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// It may run where the test cannot connect (a namespace): its log says
	// when it listens.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(r.Log(), "listening on") {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("docker-registry exited: %v\n%s", err, r.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not listen within 30s:\n%s", r.Log())
		}
	}
	return r
}

// NetNS creates a network namespace with its loopback up and ip (a 10.x
// address: only inside namespaces the test made) on it, and deletes it
// when the test ends. It returns the namespace's name.
func NetNS(t testing.TB, ip string) string {
	t.Helper()
	_, err := exec.LookPath("ip")
	need(t, err)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "herdreg" + hex.EncodeToString(b)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	run("-n", name, "link", "set", "lo", "up")
	run("-n", name, "addr", "add", ip+"/32", "dev", "lo")
	return name
}
