package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/certs"
	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

const bootsHTTPS = "https://10.77.0.1:8443"

// TestHTTPS (issue 14, "Also"): a real herd-boots serves the boot path
// over HTTPS with a certificate made by pkg/certs, to a real Go TLS client
// and to curl; iPXE that says in option 175 it has HTTPS is handed the
// HTTPS script URL, other iPXE the HTTP one; the script carries the pin of
// herd-server's CA, which a worker's connect code accepts on the CA
// herd-server serves, and refuses on another. Plain HTTP keeps working.
func TestHTTPS(t *testing.T) {
	t.Parallel()
	curl := realtest.Command(t, "curl")
	realtest.Command(t, "busybox")
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x40}
	dir := t.TempDir()
	// boots' own certificate, from a CA of its own (as an operator might),
	// while the worker pins herd-server's CA.
	tf, err := certs.Ensure(filepath.Join(dir, "boots"), []string{bootsIP}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	osie := filepath.Join(dir, "osie")
	os.MkdirAll(osie, 0o755)
	kernel := strings.Repeat("kernel bytes ", 100000) // 1.3 MB: several chunks of a download
	os.WriteFile(filepath.Join(osie, "vmlinuz-x86_64"), []byte(kernel), 0o644)

	// The lab starts herd-server first: its CA is in its state directory.
	serverCA := ""
	l := newLabWith(t, mac, func(s *servertest.Server) []string {
		serverCA = filepath.Join(s.StateDir, "ca.pem")
		return []string{"--https-addr", bootsIP + ":8443", "--tls-cert", tf.Cert, "--tls-key", tf.Key,
			"--ipxe-https-url", bootsHTTPS, "--worker-ca-cert", serverCA, "--osie-dir", osie, "--http-read-header-timeout", "1s"}
	})
	l.push(t, hwKnown, mac, "10.77.0.10", true, "")
	l.waitMachines(t, 1)

	// DHCP from real packets: udhcpc as iPXE (user class "iPXE"), with
	// option 175 as iPXE sends it, with and without the HTTPS feature.
	for _, tt := range []struct{ name, opt175, want string }{
		{"iPXE with HTTPS", "130101140101150101170101180101210101240101", bootsHTTPS + "/auto.ipxe"},
		{"iPXE without HTTPS", "130101150101170101180101210101240101", bootsURL + "/auto.ipxe"},
	} {
		vars := l.udhcpc(t, "-x", "0x4d:69505845", "-x", "0xaf:"+tt.opt175)
		if vars["boot_file"] != tt.want {
			t.Errorf("%s: boot file %q, want %q (all: %v)", tt.name, vars["boot_file"], tt.want, vars)
		}
	}
	l.cli.IP("addr", "replace", "10.77.0.10/24", "dev", "hc0")

	bootsCA := x509.NewCertPool()
	caPEM, _ := os.ReadFile(tf.CA)
	bootsCA.AppendCertsFromPEM(caPEM)
	c := l.httpsFrom("10.77.0.10", bootsCA)
	get := func(c *http.Client, url string) string {
		t.Helper()
		res, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
		}
		if strings.HasPrefix(url, "https://") && (res.TLS == nil || res.ProtoMajor != 1) {
			t.Fatalf("GET %s: not HTTP/1.1 over TLS (%s, tls %v)", url, res.Proto, res.TLS != nil)
		}
		return string(b)
	}
	if auto := get(c, bootsHTTPS+"/auto.ipxe"); !strings.Contains(auto, "chain --autofree "+bootsHTTPS+"/machines/") {
		t.Errorf("auto.ipxe over HTTPS does not chain over HTTPS:\n%s", auto)
	}
	script := get(c, bootsHTTPS+"/machines/52-54-00-aa-00-40/boot.ipxe")
	for _, want := range []string{"kernel --name vmlinuz " + bootsHTTPS + "/osie/vmlinuz-x86_64 ", "initrd --name initrd " + bootsHTTPS + "/osie/",
		bootsHTTPS + "/events", "herd.token=" + l.server.WorkerToken(hwKnown)} {
		if !strings.Contains(script, want) {
			t.Errorf("the machine script over HTTPS lacks %q:\n%s", want, script)
		}
	}
	if got := get(c, bootsHTTPS+"/osie/vmlinuz-x86_64"); got != kernel {
		t.Errorf("kernel over HTTPS: %d bytes, want %d", len(got), len(kernel))
	}
	// Plain HTTP: the same machine, HTTP URLs.
	plain := get(l.httpFrom("10.77.0.10"), bootsURL+"/machines/52-54-00-aa-00-40/boot.ipxe")
	if !strings.Contains(plain, "kernel --name vmlinuz "+bootsURL+"/osie/") || strings.Contains(plain, "https://") {
		t.Errorf("the machine script over HTTP:\n%s", plain)
	}

	// The pin on the kernel line is herd-server's CA's, and the worker's
	// connect code takes that CA from herd-server's /cert with it.
	m := regexp.MustCompile(`herd\.ca_sha256=(\S+) .*`).FindStringSubmatch(script)
	want, err := certs.CAFingerprint(serverCA)
	if err != nil {
		t.Fatal(err)
	}
	if m == nil || m[1] != want || !strings.Contains(plain, "herd.ca_sha256="+want+" ") {
		t.Fatalf("kernel line pin %v, want herd.ca_sha256=%s on both", m, want)
	}
	certURL := regexp.MustCompile(`grpc_cert_url=(\S+)`).FindStringSubmatch(script)[1]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := connect.Dial(ctx, connect.Config{Authority: l.server.GRPC, CertURL: certURL, CASHA256: m[1], Token: servertest.AdminToken})
	if err != nil {
		t.Fatalf("dial herd-server with the pinned CA: %v", err)
	}
	defer conn.Close()
	if _, err := hardware.NewHardwareServiceClient(conn).ByID(ctx, &hardware.GetRequest{Id: hwKnown}); err != nil {
		t.Fatalf("call through the pinned CA: %v", err)
	}
	bootsPin, _ := certs.CAFingerprint(tf.CA)
	if _, err := connect.Dial(ctx, connect.Config{Authority: l.server.GRPC, CertURL: certURL, CASHA256: bootsPin}); err == nil ||
		!strings.Contains(err.Error(), "refused") {
		t.Fatalf("herd-server's CA under another pin: %v, want refused", err)
	}

	// curl (Debian's, OpenSSL): verifies boots' certificate with its CA,
	// and refuses it without.
	cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer ccancel()
	out, err := l.cli.Command(cctx, curl, "-sS", "--fail", "--cacert", tf.CA, bootsHTTPS+"/auto.ipxe").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "chain --autofree "+bootsHTTPS) {
		t.Errorf("curl --cacert: %v\n%s", err, out)
	}
	out, err = l.cli.Command(cctx, curl, "-sS", "--fail", bootsHTTPS+"/auto.ipxe").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 60 {
		t.Errorf("curl without boots' CA: %v (want exit 60, certificate not trusted)\n%s", err, out)
	}

	// The HTTP limits hold on HTTPS: a connection that never completes its
	// TLS handshake is closed at --http-read-header-timeout (1s here).
	var raw net.Conn
	if err := l.cli.Do(func() (e error) { raw, e = net.Dial("tcp", bootsIP+":8443"); return }); err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a silent connection to HTTPS: %v, want it closed by herd-boots (EOF)", err)
	}
}

// httpsFrom is httpFrom over TLS, trusting roots.
func (l *lab) httpsFrom(ip string, roots *x509.CertPool) *http.Client {
	c := l.httpFrom(ip)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return c
}

// TestHTTPSSettings: HTTPS settings that cannot work stop herd-boots at
// start, with an error naming the flag; a real herd-boots process given a
// certificate path that does not exist exits 1 saying so.
func TestHTTPSSettings(t *testing.T) {
	tests := []struct {
		name                  string
		addr, cert, key, ipxe string
		wantErr               string
	}{
		{"off", "off", "", "", "", ""},
		{"on without a certificate", ":8443", "", "", "", "--https-addr needs --tls-cert and --tls-key"},
		{"on", ":8443", "c.pem", "k.pem", "", ""},
		{"on, iPXE opted in", ":8443", "c.pem", "k.pem", "https://10.0.5.1:8443", ""},
		{"no key", ":8443", "c.pem", "", "", "--https-addr needs --tls-cert and --tls-key"},
		{"no certificate", ":8443", "", "k.pem", "", "--https-addr needs --tls-cert and --tls-key"},
		{"certificate without the listener", "off", "c.pem", "k.pem", "", "are for --https-addr"},
		{"iPXE URL without the listener", "off", "", "", "https://10.0.5.1", "--ipxe-https-url needs --https-addr"},
		{"iPXE URL over http", ":8443", "c.pem", "k.pem", "http://10.0.5.1", "want https://HOST"},
		{"iPXE URL without a host", ":8443", "c.pem", "k.pem", "https:///x", "want https://HOST"},
		{"iPXE URL with a query", ":8443", "c.pem", "k.pem", "https://10.0.5.1/?a=1", "want https://HOST"},
		{"iPXE URL with a $", ":8443", "c.pem", "k.pem", "https://10.0.5.1/${x}", "holds a $"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkHTTPS(tt.addr, tt.cert, tt.key, tt.ipxe)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
	env := map[string]string{"HERD_HTTPS_ADDR": ":8443", "HERD_TLS_CERT": "/c.pem", "HERD_TLS_KEY": "/k.pem",
		"HERD_IPXE_HTTPS_URL": "https://10.0.5.1:8443", "HERD_WORKER_CA_CERT": "/ca.pem"}
	s, err := parse([]string{"--public-ip", "10.0.5.1"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.httpsAddr != ":8443" || s.tlsCert != "/c.pem" || s.tlsKey != "/k.pem" || s.ipxeHTTPSURL != "https://10.0.5.1:8443" || s.workerCACert != "/ca.pem" {
		t.Fatalf("HTTPS settings from the environment: %+v", s)
	}

	dir := t.TempDir()
	tf, err := certs.Ensure(dir, []string{"10.0.5.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"--server", "127.0.0.1:1", "--token", "t", "--public-ip", "10.0.5.1", "--dhcp-addr", "off", "--tftp-addr", "off",
		"--syslog-addr", "off", "--http-addr", "127.0.0.1:0"}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"certificate missing", []string{"--https-addr", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "missing.pem"), "--tls-key", tf.Key},
			"herd-boots: --tls-cert " + filepath.Join(dir, "missing.pem") + ", --tls-key " + tf.Key + ": open " + filepath.Join(dir, "missing.pem") + ": no such file or directory"},
		{"key of another certificate", []string{"--https-addr", "127.0.0.1:0", "--tls-cert", tf.CA, "--tls-key", tf.Key}, "private key does not match public key"},
		{"worker CA that is not a CA", []string{"--worker-ca-cert", tf.Cert}, "herd-boots: --worker-ca-cert: " + tf.Cert + ": the certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bootsBin, append(base, tt.args...)...)
			cmd.Env = append(os.Environ(), "HERD_TOKEN=")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), tt.want) {
				t.Fatalf("herd-boots: %v, want exit 1 saying %q:\n%s", err, tt.want, out)
			}
		})
	}
}

func TestDefaultRoot(t *testing.T) {
	public := net.IPv4(10, 0, 5, 1)
	for _, tt := range []struct{ scheme, listen, want string }{
		{"http", ":80", "http://10.0.5.1"},
		{"http", "10.0.5.1:8080", "http://10.0.5.1:8080"},
		{"https", ":443", "https://10.0.5.1"},
		{"https", ":8443", "https://10.0.5.1:8443"},
		{"https", ":80", "https://10.0.5.1:80"},
	} {
		if got, err := defaultRoot(tt.scheme, public, tt.listen); err != nil || got != tt.want {
			t.Errorf("defaultRoot(%s, %s) = %q, %v; want %q", tt.scheme, tt.listen, got, err, tt.want)
		}
	}
	if _, err := defaultRoot("https", public, "8443"); err == nil {
		t.Error("a listen address without a port: no error")
	}
}
