//go:build bench

package bench

import (
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
)

var (
	filesRounds  = flag.Int("files-rounds", 3, "TestBenchFiles: rounds, each running every file and client count on both servers, the first server alternating")
	filesClients = flag.String("files-clients", "1,50,200", "TestBenchFiles: concurrent client counts")
	filesMin     = flag.Int64("files-min-bytes", 2<<30, "TestBenchFiles: bytes one run downloads at least (each client downloads the file at least once)")
)

// benchFile is one of the files both servers serve.
type benchFile struct {
	name string
	size int64
}

var benchFiles = []benchFile{{"vmlinuz", 10 << 20}, {"initramfs", 57 << 20}, {"image.raw", 512 << 20}}

// writeFiles fills dir with benchFiles of random bytes (not sparse: the
// servers read real pages).
func writeFiles(t *testing.T, dir string, files []benchFile) {
	t.Helper()
	for _, f := range files {
		out, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(out, rand.Reader, f.size); err != nil {
			t.Fatal(err)
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// freePort is a loopback address nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// bootsFilesArgs is herd-boots serving dir as /osie/ on addr, DHCP, TFTP
// and syslog off, against herd-server s.
func bootsFilesArgs(s *servertest.Server, dir, addr string, maxConns int) []string {
	return []string{"--server", s.GRPC, "--cert-url", s.HTTP + "/cert", "--token", servertest.AdminToken, "--public-ip", "127.0.0.1",
		"--dhcp-addr", "off", "--tftp-addr", "off", "--syslog-addr", "off", "--http-addr", addr, "--osie-dir", dir,
		"--ipxe-dir", dir, "--http-max-conns-per-source", strconv.Itoa(maxConns), "--log-level", "warn"}
}

// waitHTTP waits until url answers 200 (or p exits).
func waitHTTP(t *testing.T, p *proc, url string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if res, err := http.Get(url); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.alive() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.exitErr, p.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not answering within 2 min\n%s", p.name, url, p.logs)
		}
	}
}

// sendfileReturn is a sendfile call's byte count in strace's log.
var sendfileReturn = regexp.MustCompile(`\)\s+=\s+(\d+)`)

// sendfileBytes sums what the sendfile calls in an strace log returned
// ("... sendfile(7, 9, NULL, 262144) = 262144"), and counts them.
func sendfileBytes(log string) (calls int, bytes int64) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "sendfile") {
			continue
		}
		m := sendfileReturn.FindStringSubmatch(line)
		if m == nil {
			continue // unfinished, or failed (-1)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		calls++
		bytes += n
	}
	return calls, bytes
}

func TestSendfileBytes(t *testing.T) {
	log := "1234  sendfile(9, 10, NULL, 4194304)    = 261632\n" +
		"1235  sendfile(9, 10, NULL, 262144 <unfinished ...>\n" +
		"1235  <... sendfile resumed>) = 262144\n" +
		"1236  sendfile(9, 10, NULL, 262144) = -1 EAGAIN (Resource temporarily unavailable)\n" +
		"1237  write(9, \"x\", 1) = 1\n"
	if calls, n := sendfileBytes(log); calls != 2 || n != 261632+262144 {
		t.Fatalf("sendfileBytes: %d calls, %d bytes; want 2, %d", calls, n, 261632+262144)
	}
}

// TestSendfile: the real herd-boots binary, its write timeout and
// per-source limit on (the wrapping writer and listener of limits.go),
// sends /osie/ downloads with sendfile: strace, attached to all its
// threads, sees sendfile calls carrying all but the first 512 bytes of
// each body (net/http copies those itself before handing the rest to the
// connection), for a whole file and a range.
func TestSendfile(t *testing.T) {
	stracePath := need(t, "strace")
	dir := t.TempDir()
	const size = 4<<20 + 123
	writeFiles(t, dir, []benchFile{{"initramfs", size}})
	s := servertest.Start(t)
	addr := freePort(t)
	b := startProc(t, "herd-boots", exec.Command(buildBoots(t), bootsFilesArgs(s, dir, addr, 32)...))
	waitHTTP(t, b, "http://"+addr+"/healthz")

	logPath := filepath.Join(t.TempDir(), "strace.log")
	st := startProc(t, "strace", exec.Command(stracePath, "-f", "-qq", "-e", "trace=sendfile", "-o", logPath, "-p", strconv.Itoa(b.cmd.Process.Pid)))
	waitTraced(t, b.cmd.Process.Pid, st)

	get := func(rangeHeader string) int64 {
		req, _ := http.NewRequest("GET", "http://"+addr+"/osie/initramfs", nil)
		if rangeHeader != "" {
			req.Header.Set("Range", rangeHeader)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		n, err := io.Copy(io.Discard, res.Body)
		if err != nil || (res.StatusCode != 200 && res.StatusCode != 206) {
			t.Fatalf("GET %q: %s, %d bytes, %v", rangeHeader, res.Status, n, err)
		}
		return n
	}
	whole, part := get(""), get("bytes=1000-3000999")
	if whole != size || part != 3000000 {
		t.Fatalf("downloaded %d and %d bytes, want %d and 3000000", whole, part, size)
	}
	// strace writes its log as calls return; SIGINT detaches it.
	st.cmd.Process.Signal(os.Interrupt)
	<-st.exit
	st.stopped = true
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	calls, sent := sendfileBytes(string(log))
	if want := whole + part - 2*512; sent != want {
		t.Fatalf("sendfile sent %d bytes in %d calls, want %d (the bodies but their first 512 bytes)\nstrace:\n%.4000s", sent, calls, want, log)
	}
	t.Logf("sendfile: %d calls, %d bytes", calls, sent)
}

// waitTraced waits until every thread of pid has a tracer (strace p
// attached to them all).
func waitTraced(t *testing.T, pid int, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		traced := 0
		for _, task := range tasks {
			if b, err := os.ReadFile(task); err == nil && !strings.Contains(string(b), "TracerPid:\t0\n") {
				traced++
			}
		}
		if len(tasks) > 0 && traced == len(tasks) {
			return
		}
		if !p.alive() {
			t.Fatalf("strace exited: %v\n%s", p.exitErr, p.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("strace attached to %d of %d threads of %d within 30 s\n%s", traced, len(tasks), pid, p.logs)
		}
	}
}

// nginxConf serves dir on addr as herd-boots serves /osie/: two workers,
// sendfile, keep-alive, no access log; everything it writes under prefix.
func nginxConf(prefix, dir, addr string) string {
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 100000;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	types { }
	default_type application/octet-stream;
	server {
		listen %[3]s;
		location /osie/ { alias %[2]s/; }
	}
}
`, prefix, dir, addr)
}

// fileRun is one server's run: clients downloading one file over and over
// until the run's downloads are done.
type fileRun struct {
	server    string
	file      benchFile
	clients   int
	downloads int
	elapsed   time.Duration
	times     []time.Duration // per download, sorted
	cpu       time.Duration   // the server's user + system CPU time over the run
	clientCPU time.Duration   // the benchmark process's (the clients')
}

func (r fileRun) mbps() float64 {
	return float64(r.file.size) * float64(r.downloads) / r.elapsed.Seconds() / 1e6
}

// percentile is the p-th percentile of sorted (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// downloadsFor is how many downloads a run makes: at least one per
// client, and at least min bytes in all.
func downloadsFor(size, minBytes int64, clients int) int {
	return max(clients, int((minBytes+size-1)/size))
}

// download runs clients concurrent keep-alive clients fetching url (a
// file of size bytes) until n downloads are done; any error fails t.
func download(t *testing.T, url string, size int64, clients, n int) (time.Duration, []time.Duration) {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Minute}
	var next atomic.Int64
	times := make([]time.Duration, n)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t0 := time.Now()
				got, err := fetch(client, url, buf)
				if err == nil && got != size {
					err = fmt.Errorf("%d bytes, want %d", got, size)
				}
				if err != nil {
					errs <- fmt.Errorf("GET %s: %w", url, err)
					return
				}
				times[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(times)
	return elapsed, times
}

// fetch downloads url, reading its body into buf, and says how many
// bytes the body held.
func fetch(c *http.Client, url string, buf []byte) (int64, error) {
	res, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, errors.New(res.Status)
	}
	var n int64
	for {
		k, err := res.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// groupCPU is the user + system CPU time of pid and its children (nginx's
// master and workers; herd-boots has none).
func groupCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	pids := []string{strconv.Itoa(pid)}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		pids = append(pids, strings.Fields(string(b))...)
	}
	var total time.Duration
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + p + "/stat")
		if err != nil {
			t.Fatalf("cpu of %s: %v", p, err)
		}
		u, s, err := parseProcStat(string(b))
		if err != nil {
			t.Fatalf("/proc/%s/stat: %v", p, err)
		}
		total += u + s
	}
	return total
}

// selfCPU is this process's user + system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fileServer is one server under test.
type fileServer struct {
	name, base string // base: URL of the directory holding the files
	p          *proc
}

func (s fileServer) run(t *testing.T, f benchFile, clients int) fileRun {
	t.Helper()
	n := downloadsFor(f.size, *filesMin, clients)
	cpu0, client0 := groupCPU(t, s.p.cmd.Process.Pid), selfCPU()
	elapsed, times := download(t, s.base+f.name, f.size, clients, n)
	r := fileRun{server: s.name, file: f, clients: clients, downloads: n, elapsed: elapsed, times: times,
		cpu: groupCPU(t, s.p.cmd.Process.Pid) - cpu0, clientCPU: selfCPU() - client0}
	t.Logf("%s %s ×%d: %d downloads in %v, %.0f MB/s, p50 %v p99 %v, CPU %v, clients' CPU %v", s.name, f.name, clients, n, elapsed.Round(time.Millisecond), r.mbps(),
		percentile(times, 50).Round(time.Microsecond), percentile(times, 99).Round(time.Microsecond), r.cpu, r.clientCPU)
	return r
}

func parseClients(v string) ([]int, error) {
	var cs []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("%q: want client counts from 1 to 1000, comma-separated", f)
		}
		cs = append(cs, n)
	}
	return cs, nil
}

// TestBenchFiles: herd-boots' /osie/ and nginx serve the same files over
// loopback to the same Go clients, in rounds alternating which server
// goes first; its section of docs/benchmarks.md is bench-files.
func TestBenchFiles(t *testing.T) {
	nginxPath := need(t, "nginx")
	clientCounts, err := parseClients(*filesClients)
	if err != nil {
		t.Fatalf("-files-clients: %v", err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, benchFiles)
	maxClients := slices.Max(clientCounts)

	s := servertest.Start(t)
	bootsAddr := freePort(t)
	boots := startProc(t, "herd-boots", exec.Command(buildBoots(t), bootsFilesArgs(s, dir, bootsAddr, maxClients+8)...))
	waitHTTP(t, boots, "http://"+bootsAddr+"/healthz")

	prefix := t.TempDir()
	nginxAddr := freePort(t)
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(prefix, dir, nginxAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	nginx := startProc(t, "nginx", exec.Command(nginxPath, "-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log")))
	servers := []fileServer{{"herd-boots", "http://" + bootsAddr + "/osie/", boots}, {"nginx", "http://" + nginxAddr + "/osie/", nginx}}
	waitHTTP(t, nginx, servers[1].base+benchFiles[0].name)
	nginxVersion, _ := exec.Command(nginxPath, "-v").CombinedOutput()

	// Warm the page cache and both servers' first connections.
	for _, srv := range servers {
		for _, f := range benchFiles {
			download(t, srv.base+f.name, f.size, 1, 1)
		}
	}
	type key struct {
		file    string
		clients int
	}
	rounds := map[key][][2]fileRun{} // per round: herd-boots, nginx
	for round := range *filesRounds {
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for _, c := range clientCounts {
			for _, f := range benchFiles {
				var pair [2]fileRun
				for _, i := range order {
					pair[i] = servers[i].run(t, f, c)
				}
				k := key{f.name, c}
				rounds[k] = append(rounds[k], pair)
			}
		}
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "## bench-files\n\n`make bench-files`, %s, %d CPUs, Go %s, %s. "+
		"herd-boots (this commit, `go build`; /osie/ with its default 60 s write timeout per 256 KiB chunk and --http-max-conns-per-source %d) and nginx "+
		"(worker_processes 2, sendfile on, tcp_nopush on, access log off, its config, pid and temp files in a temp dir) serve the same files of random bytes "+
		"from one directory over loopback to the same client: one Go process, each client a goroutine with its own keep-alive connection, "+
		"reading bodies with 1 MiB reads and checking their length; a run ends when its downloads are done "+
		"(each client at least one, %d MiB at least in all), and every error fails the benchmark. "+
		"The files are read once from each server before the rounds (page cache warm). "+
		"%d rounds; in each, every file and client count runs on both servers back to back, herd-boots first in odd rounds, nginx first in even ones. "+
		"MB/s = bytes downloaded / the run's wall time (10^6 bytes); p50/p99 of the time per download, from the request to its body's last byte; "+
		"CPU = the server's user + system time over the run (nginx: master and workers), clients = the Go client process's. "+
		"**The client shares the machine's 2 CPUs with the server** (and other engineers' work), so a figure is the pair's, and the ratio within a round is what counts. "+
		"Target: herd-boots ≥ 0.95× nginx in every round at 200 clients.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(), strings.TrimSpace(string(nginxVersion)), maxClients+8, *filesMin>>20, *filesRounds)
	sb.WriteString("| file | clients | round | downloads | herd-boots MB/s | nginx MB/s | herd / nginx | herd-boots p50 / p99 | nginx p50 / p99 | CPU herd-boots / its clients | CPU nginx / its clients |\n")
	sb.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var worst []string
	for _, c := range clientCounts {
		for _, f := range benchFiles {
			low := 0.0
			for i, pair := range rounds[key{f.name, c}] {
				h, n := pair[0], pair[1]
				ratio := h.mbps() / n.mbps()
				if i == 0 || ratio < low {
					low = ratio
				}
				fmt.Fprintf(&sb, "| %s (%d MiB) | %d | %d | %d | %.0f | %.0f | %.2f× | %s / %s | %s / %s | %.1f / %.1f s | %.1f / %.1f s |\n", f.name, f.size>>20, c, i+1, h.downloads,
					h.mbps(), n.mbps(), ratio, msStr(percentile(h.times, 50)), msStr(percentile(h.times, 99)), msStr(percentile(n.times, 50)), msStr(percentile(n.times, 99)),
					h.cpu.Seconds(), h.clientCPU.Seconds(), n.cpu.Seconds(), n.clientCPU.Seconds())
			}
			worst = append(worst, fmt.Sprintf("%s ×%d: %.2f×", f.name, c, low))
		}
	}
	fmt.Fprintf(&sb, "\nWorst herd / nginx over the rounds: %s.\n", strings.Join(worst, "; "))
	t.Log("\n" + sb.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-files", sb.String()); err != nil {
			t.Fatal(err)
		}
	}
}

func msStr(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms(d)) }

func TestPercentile(t *testing.T) {
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {0, 1}, {10, 1}, {91, 9}} {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile %v: %v, want %v", tt.p, got, tt.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing: want 0")
	}
}

func TestDownloadsFor(t *testing.T) {
	for _, tt := range []struct {
		size, min int64
		clients   int
		want      int
	}{{10 << 20, 2 << 30, 1, 205}, {512 << 20, 2 << 30, 1, 4}, {512 << 20, 2 << 30, 200, 200}, {57 << 20, 2 << 30, 50, 50}, {3, 10, 1, 4}} {
		if got := downloadsFor(tt.size, tt.min, tt.clients); got != tt.want {
			t.Errorf("downloadsFor(%d, %d, %d) = %d, want %d", tt.size, tt.min, tt.clients, got, tt.want)
		}
	}
}
