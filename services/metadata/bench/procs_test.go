//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
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
)

// need finds a tool the benchmark drives. Under CI=true a missing tool
// fails the benchmark; elsewhere it skips it.
func need(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} { // nginx lives in sbin, often off a user's PATH
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found: `make bench-metadata` installs it (services/metadata/bench/deps.txt)", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// buildMetadata builds herd-metadata (without the race detector: this
// measures speed) into a temporary directory.
func buildMetadata(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "herd-metadata"), "./cmd/herd-metadata")
	cmd.Dir = ".." // the module's root; tests run in their package's directory
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build herd-metadata: %v\n%s", err, b)
	}
	return filepath.Join(dir, "herd-metadata")
}

// proc is a process the benchmark started, stopped by its pid (and its
// process group: nginx's workers are its master's children).
type proc struct {
	name    string
	cmd     *exec.Cmd
	exit    chan struct{} // closed when it exited; exitErr is set then
	exitErr error
	logs    *servertest.Buffer
	stopped bool
}

// startProc starts cmd; its stderr goes to stderr (closed when the
// process ends, if it is a Closer), or else with its stdout to p.logs.
func startProc(t *testing.T, name string, cmd *exec.Cmd, stderr io.Writer) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, exit: make(chan struct{}), logs: &servertest.Buffer{}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if stderr == nil {
		stderr = p.logs
	}
	cmd.Stdout, cmd.Stderr = p.logs, stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.exitErr = cmd.Wait()
		if c, ok := stderr.(io.Closer); ok {
			c.Close()
		}
		close(p.exit)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the process with SIGTERM, then SIGKILL to its process group
// after 15 s. Stopping a stopped process does nothing.
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
		if p.exitErr != nil {
			t.Errorf("%s (pid %d) did not stop cleanly: %v\n%s", p.name, p.cmd.Process.Pid, p.exitErr, p.logs)
		}
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exit
		t.Errorf("%s (pid %d) did not stop within 15 s of SIGTERM; killed its process group", p.name, p.cmd.Process.Pid)
	}
}

// alive says whether the process still runs.
func (p *proc) alive() bool {
	select {
	case <-p.exit:
		return false
	default:
		return true
	}
}

// metadataProc is one herd-metadata process.
type metadataProc struct {
	*proc
	base   string        // http://127.0.0.1:port
	synced time.Duration // from start to /healthz ok (inventory loaded)
}

// startMetadata runs herd-metadata against s and waits until its
// inventory is loaded (/healthz answers 200).
func startMetadata(t *testing.T, bin string, s *servertest.Server) *metadataProc {
	t.Helper()
	cmd := exec.Command(bin, "--metadata-addr", "127.0.0.1:0", "--server", s.GRPC, "--cert-url", s.HTTP+"/cert",
		"--token", servertest.AdminToken, "--log-format", "json", "--log-level", "info")
	pr, pw := io.Pipe()
	start := time.Now()
	p := &metadataProc{proc: startProc(t, "herd-metadata", cmd, pw)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(append([]byte{}, line...), '\n'))
			var ev struct{ Msg, HTTP string }
			if bytes.Contains(line, []byte(`"herd-metadata serving"`)) && json.Unmarshal(line, &ev) == nil {
				addr <- ev.HTTP
			}
		}
	}()
	select {
	case a := <-addr:
		p.base = "http://" + a
	case <-p.exit:
		t.Fatalf("herd-metadata exited: %v\n%s", p.exitErr, p.logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("herd-metadata did not listen within 60 s\n%s", p.logs)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if res, err := http.Get(p.base + "/healthz"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if !p.alive() {
			t.Fatalf("herd-metadata exited: %v\n%s", p.exitErr, p.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("herd-metadata's inventory not loaded within 10 min\n%s", p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.synced = time.Since(start)
	return p
}

// get fetches path as 127.0.0.1 and fails unless it answers 200.
func (p *metadataProc) get(t *testing.T, path string) []byte {
	t.Helper()
	return mustGet(t, p.base+path)
}

func mustGet(t *testing.T, url string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q (%v)", url, res.StatusCode, b, err)
	}
	return b
}

// rss is the process's VmRSS in bytes.
func (p *metadataProc) rss(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "123456 kB"
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					return kb * 1024
				}
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
	return 0
}

// metric reads one unlabelled gauge from /metrics; 0 when it is absent.
func (p *metadataProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(string(p.get(t, "/metrics")), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
				return v
			}
		}
	}
	t.Logf("herd-metadata's /metrics has no %s", name)
	return 0
}

// nginxProc is a private nginx: its own prefix, configuration, pid file
// and logs under a temporary directory, serving files on 127.0.0.1.
type nginxProc struct {
	*proc
	base, version, dir string
}

// startNginx serves bodies (path → bytes) as static files with workers
// worker processes and waits until it answers each with its bytes.
func startNginx(t *testing.T, bin string, workers int, bodies map[string][]byte) *nginxProc {
	t.Helper()
	// Not t.TempDir: nginx's workers run as nobody when the master is
	// root, and must read the files.
	dir, err := os.MkdirTemp("", "herd-bench-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // registered first: runs after nginx stopped
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil { // nginx makes its temp paths, not their parent
		t.Fatal(err)
	}
	for path, body := range bodies {
		file := filepath.Join(dir, "www", filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(nginxConf(dir, port, workers)), 0o644); err != nil {
		t.Fatal(err)
	}
	ver, _ := exec.Command(bin, "-v").CombinedOutput() // "nginx version: nginx/1.22.1"
	n := &nginxProc{dir: dir, base: fmt.Sprintf("http://127.0.0.1:%d", port),
		version: strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(ver)), "nginx version: "))}
	n.proc = startProc(t, "nginx", exec.Command(bin, "-p", dir+"/", "-c", filepath.Join(dir, "nginx.conf"),
		"-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"), nil)
	deadline := time.Now().Add(15 * time.Second)
	for path, body := range bodies {
		for {
			if !n.alive() {
				errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				t.Fatalf("nginx exited: %v\n%s\n%s", n.exitErr, n.logs, errLog)
			}
			got, code, err := fetch(n.base + path)
			if err == nil && code == http.StatusOK && bytes.Equal(got, body) {
				break
			}
			if time.Now().After(deadline) {
				errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				t.Fatalf("nginx does not serve %s's bytes: %d %q (%v)\n%s", path, code, got, err, errLog)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return n
}

// nginxConf is a lean static-file configuration: no access log, files
// and their metadata cached, keep-alive connections kept as long as Go's
// server keeps them, the Content-Types herd-metadata sends.
func nginxConf(dir string, port, workers int) string {
	return fmt.Sprintf(`# written by services/metadata/bench for one run
worker_processes %[3]d;
user nobody nogroup;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	server_tokens off;
	etag off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_requests 1000000;
	keepalive_timeout 90s;
	open_file_cache max=64 inactive=60s;
	open_file_cache_valid 60s;
	client_body_temp_path %[1]s/tmp/body;
	proxy_temp_path %[1]s/tmp/proxy;
	fastcgi_temp_path %[1]s/tmp/fastcgi;
	uwsgi_temp_path %[1]s/tmp/uwsgi;
	scgi_temp_path %[1]s/tmp/scgi;
	types {}
	default_type "text/plain; charset=utf-8";
	server {
		listen 127.0.0.1:%[2]d;
		root %[1]s/www;
		location = /metadata { default_type application/json; }
	}
}
`, dir, port, workers)
}

func fetch(url string) ([]byte, int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return b, res.StatusCode, err
}

// freePort is a TCP port free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// runWrk runs wrk once against url and parses its report; a run with
// non-2xx answers or socket errors is not a measurement and fails.
func runWrk(t *testing.T, bin string, args []string, url string) wrkResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), *duration+time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append(args, url)...).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	res, err := parseWrk(string(out))
	if err != nil {
		t.Fatalf("wrk %s: %v\n%s", url, err, out)
	}
	if res.non2xx > 0 {
		t.Fatalf("wrk %s: %d answers were not 2xx (is 127.0.0.1 the caller's record?)\n%s", url, res.non2xx, out)
	}
	return res
}
