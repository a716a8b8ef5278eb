//go:build bench

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/services/boots/internal/netnstest"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
)

// need is the path of command name (looked up in PATH, then /usr/sbin:
// Kea's and dnsmasq's binaries live there and a make run's PATH may lack
// it). Missing: fails under CI=true, skips elsewhere.
func need(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); isExec(p) {
		return p
	}
	realtest.Missing(t, "command "+name+" (scripts/deps.sh services/boots/bench/deps.txt installs it)")
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// buildBoots builds herd-boots (no race detector: this measures it).
func buildBoots(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herd-boots")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/herd-boots")
	cmd.Dir = ".." // the module's root; tests run in their package's directory
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build herd-boots: %v\n%s", err, b)
	}
	return bin
}

// proc is a server the benchmark started: stopped by its own pid (SIGTERM,
// then SIGKILL to its process group) when the benchmark is done with it,
// and at the test's end whatever happened.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logs    *servertest.Buffer
	exit    chan struct{} // closed when it exited; exitErr is set then
	exitErr error
	stopped bool
}

// startProc starts cmd (made by NS.Command: `ip netns exec` execs the
// server itself, so cmd's pid is the server's).
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, logs: &servertest.Buffer{}, exit: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exit)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *proc) alive() bool {
	select {
	case <-p.exit:
		return false
	default:
		return true
	}
}

// stop ends the process: SIGTERM, and SIGKILL to its process group after
// 15 s. A second call does nothing.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if p.stopped {
		return
	}
	p.stopped = true
	if !p.alive() {
		t.Errorf("%s (pid %d) had exited: %v\n%s", p.name, p.cmd.Process.Pid, p.exitErr, p.logs)
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exit
		t.Errorf("%s (pid %d) did not stop within 15 s of SIGTERM; killed its process group", p.name, p.cmd.Process.Pid)
	}
}

// rss is the process's VmRSS in bytes.
func (p *proc) rss(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					return kb * 1024
				}
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	return 0
}

// waitAnswers waits until the server answers one whole DORA exchange
// from the client namespace (a reserved MAC): it has loaded its
// reservations and listens.
func waitAnswers(t *testing.T, p *proc, pd *perfdhcp) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(5 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// -n 1 ends perfdhcp before a slower server's ACK comes back
		// whatever -W says: send at 10/s for 1 s and wait 1 s.
		out, _ := pd.ns.Command(ctx, pd.bin, "-4", "-l", pd.relays[0], "-r", "10", "-p", "1", "-W", "1000000", "-M", pd.macFiles[0], pd.server).CombinedOutput()
		cancel()
		if r, err := parsePerfdhcp(string(out)); err == nil && r.acks > 0 {
			return time.Since(start)
		}
		if !p.alive() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.exitErr, p.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer a DORA within 5 min\n%s", p.name, p.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// bootsProc is herd-boots in the server namespace.
type bootsProc struct {
	*proc
	http   *http.Client // dials inside the server namespace
	synced time.Duration
}

// startBoots runs herd-boots (with extra flags) in reservation mode on hb0 against herd-server
// s (whose ports are forwarded into ns) and waits until /healthz says its
// inventory synced.
func startBoots(t *testing.T, bin string, s *servertest.Server, ns *netnstest.NS, extra ...string) *bootsProc {
	t.Helper()
	cmd := ns.Command(context.Background(), bin, append([]string{"--server", s.GRPC, "--cert-url", s.HTTP + "/cert", "--token", servertest.AdminToken,
		"--public-ip", serverIP, "--dhcp-mode", "reservation", "--dhcp-interface", "hb0", "--http-addr", bootsHTTP,
		"--tftp-addr", "off", "--syslog-addr", "off", "--ipxe-dir", t.TempDir(), "--log-format", "json", "--log-level", *bootsLogLevel}, extra...)...)
	cmd.Env = append(os.Environ(), "HERD_TOKEN=")
	start := time.Now()
	b := &bootsProc{proc: startProc(t, "herd-boots", cmd), http: ns.HTTPClient()}
	deadline := start.Add(10 * time.Minute)
	for {
		if res, err := b.http.Get("http://" + bootsHTTP + "/healthz"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if !b.alive() {
			t.Fatalf("herd-boots exited: %v\n%s", b.exitErr, b.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-boots' inventory not synced within 10 min\n%s", b.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.synced = time.Since(start)
	return b
}

// metric reads one unlabelled gauge from herd-boots' /metrics (-1: absent).
func (b *bootsProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	res, err := b.http.Get("http://" + bootsHTTP + "/metrics")
	if err != nil {
		t.Fatalf("herd-boots /metrics: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// keaConfig is kea-dhcp4's configuration: the reservations of records
// [0, n) in one subnet with no pool (so only reserved MACs get an answer,
// as in herd-boots' reservation mode), the same options herd-boots sends,
// a memfile lease database and a control socket under dir, relayed
// traffic over a UDP socket on hb0, logs at WARN.
func keaConfig(dir string, n int, multiThreaded bool) ([]byte, error) {
	type m = map[string]any
	res := make([]m, n)
	for i := range res {
		res[i] = m{"hw-address": mac(i), "ip-address": ip(i), "hostname": hostname(i)}
	}
	return json.MarshalIndent(m{"Dhcp4": m{
		"interfaces-config":            m{"interfaces": []string{"hb0"}, "dhcp-socket-type": "udp"},
		"control-socket":               m{"socket-type": "unix", "socket-name": filepath.Join(dir, "kea4-ctrl.sock")},
		"lease-database":               m{"type": "memfile", "persist": true, "name": filepath.Join(dir, "kea-leases4.csv"), "lfc-interval": 0},
		"multi-threading":              m{"enable-multi-threading": multiThreaded, "thread-pool-size": 0, "packet-queue-size": 64},
		"host-reservation-identifiers": []string{"hw-address"},
		"valid-lifetime":               int(leaseTime.Seconds()),
		"subnet4": []m{{"id": 1, "subnet": subnet, "reservations-in-subnet": true, "reservations-out-of-pool": true,
			"option-data": []m{
				{"name": "routers", "data": serverIP},
				{"name": "domain-name-servers", "data": dnsIP},
				{"name": "ntp-servers", "data": ntpIP},
				{"name": "domain-name", "data": domain},
			},
			"reservations": res}},
		"loggers": []m{{"name": "kea-dhcp4", "output_options": []m{{"output": "stdout"}}, "severity": "WARN"}},
	}}, "", " ")
}

// startKea runs kea-dhcp4 in ns with its configuration, lock and pid
// files under a temporary directory of its own.
func startKea(t *testing.T, bin string, ns *netnstest.NS, multiThreaded bool) (*proc, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := keaConfig(dir, *nRecords, multiThreaded)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "kea-dhcp4.json")
	if err := os.WriteFile(file, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.Command(context.Background(), bin, "-t", file).CombinedOutput(); err != nil { // hb0 is in ns
		t.Fatalf("kea-dhcp4 -t: %v\n%s", err, out)
	}
	cmd := ns.Command(context.Background(), bin, "-c", file)
	cmd.Env = append(os.Environ(), "KEA_LOCKFILE_DIR="+dir, "KEA_PIDFILE_DIR="+dir)
	name := "kea-dhcp4 (single-threaded)"
	if multiThreaded {
		name = "kea-dhcp4 (multi-threaded)"
	}
	return startProc(t, name, cmd), file
}

// dnsmasqConf is the dhcp-host lines of records [0, n) and the options
// herd-boots sends; the command line holds the rest.
func dnsmasqConf(n int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by services/boots/bench for one run\ndomain=%s\ndhcp-option=option:router,%s\n"+
		"dhcp-option=option:dns-server,%s\ndhcp-option=option:ntp-server,%s\n", domain, serverIP, dnsIP, ntpIP)
	for i := range n {
		fmt.Fprintf(&b, "dhcp-host=%s,%s,%s\n", mac(i), ip(i), hostname(i))
	}
	return []byte(b.String())
}

// dnsmasqArgs is dnsmasq's command line: DHCP only (no DNS), static
// leases only (no pool), its own conf, pid and lease files under dir.
// dhcp-lease-max (default 1,000) is raised above the records: past it
// dnsmasq NAKs ("no leases left").
func dnsmasqArgs(dir, conf string) []string {
	return []string{"--no-daemon", "--conf-file=" + conf, "--port=0", "--user=root", "--interface=hb0", "--bind-interfaces",
		"--dhcp-range=" + subnetBase + ",static," + netmask + "," + strconv.Itoa(int(leaseTime.Seconds())),
		"--dhcp-lease-max=" + strconv.Itoa(2*max(*nLarge, *nRecords)), "--no-ping", "--no-resolv", "--no-hosts", "--quiet-dhcp",
		"--log-facility=-", "--dhcp-leasefile=" + filepath.Join(dir, "dnsmasq.leases"), "--pid-file=" + filepath.Join(dir, "dnsmasq.pid")}
}

func startDnsmasq(t *testing.T, bin string, ns *netnstest.NS) (p *proc, args []string, dir string) {
	t.Helper()
	dir = t.TempDir()
	conf := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(conf, dnsmasqConf(*nRecords), 0o644); err != nil {
		t.Fatal(err)
	}
	args = dnsmasqArgs(dir, conf)
	return startProc(t, "dnsmasq", ns.Command(context.Background(), bin, args...)), args, dir
}

// dnsmasqVersion is "2.90" from "Dnsmasq version 2.90  Copyright (c) ...".
func dnsmasqVersion(bin string) string {
	f := strings.Fields(version(bin, "--version"))
	if len(f) >= 3 && f[1] == "version" {
		return "dnsmasq " + f[2]
	}
	return strings.Join(f, " ")
}

// version is the first line a command prints for args.
func version(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}
