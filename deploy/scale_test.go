package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The scale test's network: a namespace of its own, where the private
// dockerd runs, so the stack's host networking is that namespace's.
const (
	scaleIface  = "herds0"
	scaleHostIP = "10.78.0.1"
	scaleTag    = "scaletest"
)

// TestComposeScaleHerdServer brings the stack up with `docker-compose up
// --scale herd-server=2` against a private dockerd in a network namespace
// of its own: both replicas bind the same ports (HERD_REUSE_PORT) and
// answer calls, the kernel spreading them; `docker kill` of one leaves the
// API answering and herd-boots healthy; the other killed after the first
// is back, herd-boots' Watch stream (which was on it, the only one left)
// opens again on the first, and a record pushed then reaches herd-boots;
// herd-metadata and herd-bmc keep running on the one address and are
// healthy again after each kill.
func TestComposeScaleHerdServer(t *testing.T) {
	if os.Geteuid() != 0 {
		missing(t, "root (a network namespace and a private dockerd)")
	}
	for _, c := range []string{"dockerd", "docker", "docker-compose", "ip", "nsenter", "unshare", "curl", "make", "go", "mmdebstrap"} {
		command(t, c)
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ns := newScaleNetns(t)
	host := startPrivateDockerd(t, ns, filepath.Join(dir, "docker"))
	dockerEnv := append(cleanEnv(), "DOCKER_HOST="+host, "DOCKER_CONFIG="+filepath.Join(dir, "docker-config"), "DOCKER_BUILDKIT=0", "COMPOSE_DOCKER_CLI_BUILD=0")

	images := exec.Command("make", "-C", repo, "images", "IMAGES=herd-server herd-boots herd-metadata herd-bmc postgres", "IMAGE_TAG="+scaleTag)
	images.Env = dockerEnv
	if out, err := images.CombinedOutput(); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}

	state := filepath.Join(dir, "state")
	writeScaleState(t, state)
	gen := exec.Command("ip", "netns", "exec", ns, "./generate-envrc.sh", scaleIface)
	gen.Env = append(cleanEnv(), "HERD_STATE_DIR="+state, "HERD_VERSION="+scaleTag)
	envrcText, err := gen.Output()
	if err != nil {
		t.Fatalf("generate-envrc.sh: %v: %s", err, stderrOf(err))
	}
	settings := sourced(t, string(envrcText))
	if settings["HERD_HOST_IP"] != scaleHostIP {
		t.Fatalf("generate-envrc.sh %s: HERD_HOST_IP %q, want %s", scaleIface, settings["HERD_HOST_IP"], scaleHostIP)
	}
	emptyEnv := filepath.Join(dir, "empty.env")
	if err := os.WriteFile(emptyEnv, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// compose runs docker-compose with the envrc sourced, as the operator's
	// shell would, and never a .env left in deploy/.
	compose := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{"-c", `eval "$1"; shift; exec docker-compose --env-file "$0" -p herdscale -f docker-compose.yml "$@"`,
			emptyEnv, string(envrcText)}, args...)...)
		cmd.Env = dockerEnv
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("docker-compose %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	docker := func(args ...string) (string, error) {
		cmd := exec.Command("docker", args...)
		cmd.Env = dockerEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	inNS := func(args ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).Output()
		if err != nil {
			return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, stderrOf(err))
		}
		return string(out), nil
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose("", "logs", "--no-color", "--tail", "60")
			t.Logf("the stack's logs:\n%s", out)
		}
		if out, err := compose("", "down", "-v"); err != nil {
			t.Logf("down: %v %s", err, out)
		}
	})

	if _, err := compose("", "up", "-d", "--scale", "herd-server=2", "db", "herd-server", "herd-boots", "herd-metadata", "herd-bmc"); err != nil {
		t.Fatal(err)
	}
	out, err := compose("", "ps", "-q", "herd-server")
	if err != nil {
		t.Fatal(err)
	}
	replicas := strings.Fields(out)
	if len(replicas) != 2 {
		t.Fatalf("docker-compose ps -q herd-server: %q, want two containers", out)
	}
	clients := map[string]string{}
	for _, svc := range []string{"herd-boots", "herd-metadata", "herd-bmc"} {
		out, err := compose("", "ps", "-q", svc)
		if err != nil {
			t.Fatal(err)
		}
		clients[svc] = strings.TrimSpace(out)
	}

	// until waits for ok to hold, up to two minutes, saying what it saw.
	until := func(what string, ok func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			done, last := ok()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 2 minutes; last: %s", what, last)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	healthy := func(id string) func() (bool, string) {
		return func() (bool, string) {
			out, err := docker("inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
			return err == nil && strings.TrimSpace(out) == "running healthy", strings.TrimSpace(out) + fmt.Sprint(err)
		}
	}
	// herd-boots' and herd-metadata's /healthz is ok only while their
	// inventory is in sync through a Watch stream (degraded without one).
	inSync := func(port string) func() (bool, string) {
		return func() (bool, string) {
			out, err := inNS("curl", "-s", "--max-time", "5", "http://"+scaleHostIP+":"+port+"/healthz")
			var h struct{ Status string }
			return err == nil && json.Unmarshal([]byte(out), &h) == nil && h.Status == "ok", out + fmt.Sprint(err)
		}
	}
	bootsOK, metadataOK := inSync(settings["HERD_BOOTS_HTTP_PORT"]), inSync(settings["HERD_METADATA_PORT"])
	for i, id := range replicas {
		until(fmt.Sprintf("herd-server replica %d healthy", i+1), healthy(id))
	}
	for svc, id := range clients {
		until(svc+" healthy", healthy(id))
	}
	until("herd-boots /healthz ok", bootsOK)
	until("herd-metadata /healthz ok", metadataOK)

	// Both replicas serve: each logs that it listens on the same ports,
	// and of 32 calls on connections of their own both get some (the
	// kernel picks by a hash of the source port: odds 2^-31 otherwise).
	for i, id := range replicas {
		out, err := docker("logs", id)
		if err != nil {
			t.Fatal(err)
		}
		want := `"grpc":"` + scaleHostIP + ":" + settings["HERD_GRPC_PORT"] + `","http":"` + scaleHostIP + ":" + settings["HERD_HTTP_PORT"] + `"`
		if !strings.Contains(out, `"msg":"serving"`) || !strings.Contains(out, want) {
			t.Fatalf("replica %d does not log serving on %s:\n%s", i+1, want, out)
		}
	}
	listURL := "http://" + scaleHostIP + ":" + settings["HERD_HTTP_PORT"] + "/v1/templates"
	for range 32 {
		if _, err := inNS("curl", "-sf", "--max-time", "10", "-H", "Authorization: Bearer "+settings["HERD_AUTH_TOKEN"], listURL); err != nil {
			t.Fatalf("GET %s: %v", listURL, err)
		}
	}
	listCalls := regexp.MustCompile(`"msg":"call"[^\n]*ListTemplates`)
	for i, id := range replicas {
		out, err := docker("logs", id)
		if err != nil {
			t.Fatal(err)
		}
		n := len(listCalls.FindAllString(out, -1))
		if n == 0 {
			t.Errorf("replica %d answered none of 32 calls: the port is not shared", i+1)
		}
		t.Logf("replica %d (%.12s) answered %d of the 32 calls", i+1, id, n)
	}

	cli := func(stdin string, args ...string) (string, error) {
		return compose(stdin, append([]string{"run", "--rm", "-T", "herd"}, args...)...)
	}
	if out, err := cli("", "hardware", "list"); err != nil {
		t.Fatalf("herd hardware list with both replicas: %v\n%s", err, out)
	}

	// One replica killed: the other answers, herd-boots is ok.
	if _, err := docker("kill", replicas[0]); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("", "hardware", "list"); err != nil {
		t.Fatalf("herd hardware list with replica 1 killed: %v\n%s", err, out)
	}
	until("herd-boots /healthz ok with replica 1 killed", bootsOK)
	until("herd-metadata /healthz ok with replica 1 killed", metadataOK)
	t.Log("replica 1 killed: the CLI answered, herd-boots and herd-metadata ok")

	// Replica 1 back, replica 2 killed: herd-boots' stream was on replica
	// 2 (the only one left), so it must open it again on replica 1.
	if _, err := docker("start", replicas[0]); err != nil {
		t.Fatal(err)
	}
	until("herd-server replica 1 healthy again", healthy(replicas[0]))
	if _, err := docker("kill", replicas[1]); err != nil {
		t.Fatal(err)
	}
	machine := `{"id":"5ca1e000-0000-4000-8000-000000000001","network":{"interfaces":[{"dhcp":{"mac":"02:00:0a:4e:00:0b","arch":"x86_64",` +
		`"ip":{"address":"10.78.0.11","netmask":"255.255.255.0","gateway":"10.78.0.1"}},"netboot":{"allow_pxe":true,"allow_workflow":true}}]}}`
	if out, err := cli(machine, "hardware", "push"); err != nil || !strings.Contains(out, "pushed") {
		t.Fatalf("herd hardware push with replica 2 killed: %v\n%s", err, out)
	}
	metricsURL := "http://" + scaleHostIP + ":" + settings["HERD_BOOTS_HTTP_PORT"] + "/metrics"
	until("the record pushed after the kill reaches herd-boots", func() (bool, string) {
		out, err := inNS("curl", "-s", "--max-time", "5", metricsURL)
		m := regexp.MustCompile(`(?m)^herd_boots_inventory_machines (\S+)$`).FindStringSubmatch(out)
		return err == nil && m != nil && m[1] == "1", fmt.Sprint(m, err)
	})
	until("herd-boots /healthz ok with replica 2 killed", bootsOK)
	until("herd-metadata /healthz ok with replica 2 killed", metadataOK)
	t.Log("replica 1 back, replica 2 killed: the push answered, herd-boots got the record, herd-boots and herd-metadata ok")
	// herd-bmc asks for jobs with long calls and kept running throughout.
	for svc, id := range clients {
		out, err := docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", id)
		if err != nil || strings.TrimSpace(out) != "running 0" {
			t.Errorf("%s: %q %v, want running and never restarted: it reconnects by itself", svc, out, err)
		}
	}
	until("herd-bmc healthy", healthy(clients["herd-bmc"]))
}

// newScaleNetns makes a network namespace with loopback and a veth pair,
// one end holding scaleHostIP, removed at the end.
func newScaleNetns(t *testing.T) string {
	t.Helper()
	ns := "herd-scale-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", scaleIface, "type", "veth", "peer", "name", scaleIface + "p"},
		{"addr", "add", scaleHostIP + "/24", "dev", scaleIface},
		{"link", "set", scaleIface, "up"},
		{"link", "set", scaleIface + "p", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %v: %v %s", ns, args, err, out)
		}
	}
	return ns
}

// startPrivateDockerd runs a dockerd of the test's own in ns, with its
// data under dir, stopped (by its pid) at the end; it returns its address.
func startPrivateDockerd(t *testing.T, ns, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	host := "unix://" + sock
	log, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	// nsenter, not ip netns exec: that one mounts a /sys of its own, which
	// hides the cgroups dockerd needs. nsenter and unshare exec in turn:
	// the process is dockerd's.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "unshare", "--mount", "--propagation", "private", "--",
		"dockerd", "--iptables=false", "--bridge=none", "--storage-driver=overlay2",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"-H", host, "--pidfile", filepath.Join(dir, "docker.pid"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		log.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for exec.Command("docker", "-H", host, "version").Run() != nil {
		select {
		case <-exited:
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("the private dockerd exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("the private dockerd did not answer within 60 s:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return host
}

// writeScaleState lays out the state directory setup.sh would make, with
// what the test's services need: a CA and a server certificate for
// scaleHostIP (herd-server, uid 65532, reads the key), herd-server's own
// directory for it to write, an empty webroot.
func writeScaleState(t *testing.T, state string) {
	t.Helper()
	certs := filepath.Join(state, "certs")
	for _, d := range []string{certs, filepath.Join(state, "server"), filepath.Join(state, "webroot", "ipxe"), filepath.Join(state, "webroot", "osie")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(state, "server"), 65532, 65532); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(state, "server"), 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herd scale test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "herd " + scaleHostIP},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(scaleHostIP), net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"ca.pem":         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"server.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"server-key.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	} {
		if err := os.WriteFile(filepath.Join(certs, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key600 := filepath.Join(certs, "server-key.pem")
	if err := os.Chown(key600, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key600, 0o600); err != nil {
		t.Fatal(err)
	}
}
