//go:build bench

// Package storm is the boot-storm benchmark: `make bench-storm` runs it
// and writes its section of docs/benchmarks.md. N simulated machines,
// goroutines each with its own MAC and address in a network namespace,
// are switched on at once and walk the whole path against the real
// services: DHCP through a relay address to herd-boots (reservation mode,
// in a second namespace), auto.ipxe, the machine script, the kernel and
// initramfs it names, the worker's RPCs to herd-server (throwaway
// PostgreSQL) for a workflow of 5 actions, one of which downloads an OS
// image from herd-boots, and cloud-init's crawl of herd-metadata. It
// reports; it asserts nothing about speed. A machine with an error fails it.
package storm

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

var (
	out       = flag.String("out", "", "markdown file to write the figures into (its bench-storm section)")
	sizes     = flag.String("machines", "100,1000", "comma-separated storm sizes, run one after the other")
	kernel    = flag.String("kernel", "../../bin/osie/vmlinuz", "OSIE kernel to serve (a same-size file of random bytes when absent)")
	initrd    = flag.String("initrd", "../../bin/osie/initramfs.img", "OSIE initramfs to serve (same)")
	imageMiB  = flag.Int("image-mib", 64, "size of the OS image the image action downloads, MiB")
	copySecs  = flag.Duration("tcp-copy", 3*time.Second, "length of each plain TCP copy measuring the veth's limit")
	logLevel  = flag.String("log-level", "warn", "herd-boots' and herd-metadata's --log-level")
	nActions  = 5
	imgAction = 2 // the third action downloads the image
)

// The lab: herd-boots and herd-metadata on hb0 in one namespace, the
// relay (a router with the DHCP relay agent) on hc0 in another, the
// machines' addresses behind it (10.30.0.0/17, routed via the relay).
const (
	serverIP   = "10.30.255.254"
	relayIP    = "10.30.255.253"
	bootsHTTP  = serverIP + ":8080"
	metadataIP = serverIP + ":50061"
	maxMachine = 120 * 250 // 10.30.0.1 - 10.30.119.250: inside 10.30.0.0/17
)

// Default sizes when bin/osie is not built: the OSIE of this commit's day.
const (
	defaultKernelSize = 8247232
	defaultInitrdSize = 61947142
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, false)) }

// round is one storm's figures.
type round struct {
	n        int
	wall     time.Duration // switch-on → last machine done
	results  []machineResult
	errs     []error
	boots    int64 // bytes herd-boots' HTTP served to the machines
	metadata int64
	retries  int64 // DHCP resends
	usage    map[string][2]usage
	pushed   time.Duration
	failed   map[string]int // machines failed, by step and cause
	// kernel is each kernelCounters key's increase over the storm in the
	// machines' namespace [0] and the services' [1]; tcpPeak the most TCP
	// memory in use during it (pages, all namespaces).
	kernel  map[string][2]int64
	tcpPeak int64
}

func TestBenchStorm(t *testing.T) {
	if os.Geteuid() != 0 {
		missing(t, "root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		missing(t, "iproute2's ip (scripts/deps.sh sandbox/deps.txt installs it)")
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			t.Fatalf("-machines %q: want positive counts separated by commas", *sizes)
		}
		ns = append(ns, n)
	}
	total := 0
	for _, n := range ns {
		total += n
	}
	if total > maxMachine {
		t.Fatalf("-machines %q: %d machines in all, at most %d fit 10.30.0.0/17", *sizes, total, maxMachine)
	}

	// Every worker call leaves from 127.0.0.1 here (see the report), one
	// source where real machines are N: the per-source bound is off.
	s := servertest.Start(t, "--log-level", "info", "--max-conns-per-source", "0")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("herd-server's log (its last 8 kB):\n%s", tail(s.Stderr.String(), 8<<10))
		}
	})
	ca := s.CA()
	admin := s.Dial(servertest.AdminToken)
	bootsBin, metadataBin := buildServices(t)
	osieDir, files := osieFiles(t)

	srv, cli := newNS(t, "s"), newNS(t, "m")
	veth(t, srv, "hb0", serverIP+"/24", cli, "hc0", relayIP+"/24")
	srv.ip("route", "add", "10.30.0.0/17", "via", relayIP)
	addrs := make([]string, total)
	for i := range addrs {
		addrs[i] = "addr add " + machineIP(i) + "/32 dev hc0"
	}
	cli.ipBatch(addrs)
	grpcHost := s.GRPC
	httpHost := strings.TrimPrefix(s.HTTP, "http://")
	srv.forward(grpcHost, grpcHost)
	srv.forward(httpHost, httpHost)

	boots := startProc(t, "herd-boots", srv.command(bootsBin, "--server", s.GRPC, "--cert-url", s.HTTP+"/cert", "--token", servertest.ServiceToken,
		"--public-ip", serverIP, "--dhcp-mode", "reservation", "--dhcp-interface", "hb0", "--http-addr", bootsHTTP,
		"--tftp-addr", "off", "--syslog-addr", "off", "--ipxe-dir", t.TempDir(), "--osie-dir", osieDir, "--ipxe-params", "off",
		"--metadata-url", "http://"+metadataIP, "--log-format", "json", "--log-level", *logLevel))
	boots.cmd.Env = append(os.Environ(), "HERD_TOKEN=")
	metadata := startProc(t, "herd-metadata", srv.command(metadataBin, "--metadata-addr", metadataIP, "--server", s.GRPC,
		"--cert-url", s.HTTP+"/cert", "--token", servertest.ServiceToken, "--log-format", "json", "--log-level", *logLevel))
	probe := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return cli.dialFrom(ctx, net.ParseIP(relayIP), addr)
		}}}
	waitHealthy(t, probe, boots, "http://"+bootsHTTP+"/healthz")
	waitHealthy(t, probe, metadata, "http://"+metadataIP+"/healthz")
	serverProc, err := serverPid(s.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{"herd-server": serverProc, "herd-boots": boots.pid, "herd-metadata": metadata.pid, "machines (this test process)": os.Getpid()}

	tpl, err := template.NewTemplateServiceClient(admin).CreateTemplate(context.Background(),
		&template.WorkflowTemplate{Name: "storm", Data: stormTemplate("http://" + bootsHTTP + "/osie/" + files[2].name)})
	if err != nil {
		t.Fatal(err)
	}
	hc, wc := hardware.NewHardwareServiceClient(admin), workflow.NewWorkflowServiceClient(admin)
	rel, err := newRelay(cli, relayIP, serverIP)
	if err != nil {
		t.Fatal(err)
	}
	defer rel.close()

	copyFile := filepath.Join(osieDir, files[2].name)
	limits := [2]linkLimit{tcpLimit(t, srv, cli, copyFile)}
	var rounds []round
	from := 0
	for _, n := range ns {
		r := round{n: n, usage: map[string][2]usage{}, failed: map[string]int{}}
		r.pushed = servertest.PushHardware(t, hc, from, from+n, record)
		createWorkflows(t, wc, tpl.GetId(), from, from+n)
		waitInventory(t, probe, cli, from+n, from, n)

		w := &walk{ns: cli, relay: rel, grpcAddr: s.GRPC, ca: ca, actions: nActions}
		before := readAll(t, pids)
		kBefore := readCounters(t, cli, srv)
		sampler := samplePeak(100 * time.Millisecond)
		r.results = make([]machineResult, n)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		var wg sync.WaitGroup
		for k := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.results[k] = w.run(ctx, newMachine(from+k))
			}()
		}
		wg.Wait()
		r.wall = time.Since(start)
		cancel()
		r.tcpPeak = sampler.done()
		after := readAll(t, pids)
		kAfter := readCounters(t, cli, srv)
		r.kernel = map[string][2]int64{}
		for _, c := range kernelCounters {
			r.kernel[c.key] = [2]int64{kAfter[0][c.key] - kBefore[0][c.key], kAfter[1][c.key] - kBefore[1][c.key]}
		}
		for name := range pids {
			r.usage[name] = [2]usage{before[name], after[name]}
		}
		r.boots, r.metadata, r.retries = w.bootsBytes.Load(), w.metadataBytes.Load(), w.dhcpRetries.Load()
		for _, res := range r.results {
			if res.err != nil {
				r.errs = append(r.errs, res.err)
				r.failed[stepNames[res.failedAt]+": "+cause(res.err)]++
			}
		}
		r.errs = append(r.errs, checkWorkflows(wc, r.results)...)
		t.Logf("N=%d: %d machines in %.1f s, %d errors", n, n, r.wall.Seconds(), len(r.errs))
		for what, count := range r.failed {
			t.Logf("N=%d: %d machines failed at %s", n, count, what)
		}
		for i, err := range r.errs {
			if i == 20 {
				t.Errorf("… and %d more errors", len(r.errs)-20)
				break
			}
			t.Error(err)
		}
		rounds = append(rounds, r)
		from += n
	}
	for name, p := range map[string]*proc{"herd-boots": boots, "herd-metadata": metadata} {
		if !p.alive() {
			t.Errorf("%s exited during the storm: %v\n%.4000s", name, p.err, p.logs)
		}
	}
	limits[1] = tcpLimit(t, srv, cli, copyFile)
	for _, r := range rounds {
		if len(r.errs) > 0 {
			t.Logf("herd-boots' log (its last 8 kB):\n%s", tail(boots.logs.String(), 8<<10))
			break
		}
	}
	tcpMem, err := tcpMemLimits()
	if err != nil {
		t.Fatal(err)
	}
	report := writeReport(files, limits, rounds, pids, tcpMem)
	t.Log("\n" + report)
	if t.Failed() {
		t.Fatal("machines failed: the figures are not written")
	}
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-storm", report); err != nil {
			t.Fatal(err)
		}
	}
}

// missing fails under CI=true and skips elsewhere.
func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("bench-storm needs %s", what)
	}
	t.Skipf("bench-storm needs %s", what)
}

// record is machine i's hardware record: its reservation behind the relay,
// netboot and workflow allowed, a hostname herd-metadata serves.
func record(i int) *hardware.Hardware {
	m := newMachine(i)
	return &hardware.Hardware{
		Id:       m.hwID,
		Metadata: fmt.Sprintf(`{"instance":{"id":%q,"hostname":%q}}`, m.hwID, m.hostname()),
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: m.mac.String(), Hostname: m.hostname(), Arch: "x86_64",
				Ip: &hardware.Hardware_DHCP_IP{Address: m.ip.String(), Netmask: "255.255.0.0", Gateway: relayIP}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}},
	}
}

// stormTemplate is one task of nActions actions; action imgAction names
// the OS image in IMG_URL, as image2disk takes it.
func stormTemplate(imageURL string) string {
	var b strings.Builder
	b.WriteString("version: \"0.1\"\nname: storm\nglobal_timeout: 3600\ntasks:\n  - name: provision\n    worker: \"{{.device_1}}\"\n    actions:\n")
	for i := range nActions {
		fmt.Fprintf(&b, "      - name: step-%d\n        image: registry.local/noop:v1\n        timeout: 1800\n", i)
		if i == imgAction {
			fmt.Fprintf(&b, "        environment:\n          IMG_URL: %s\n", imageURL)
		}
	}
	return b.String()
}

func createWorkflows(t *testing.T, wc workflow.WorkflowServiceClient, tplID string, from, to int) {
	t.Helper()
	var g errgroup.Group
	g.SetLimit(16)
	for i := from; i < to; i++ {
		g.Go(func() error {
			_, err := wc.CreateWorkflow(context.Background(), &workflow.CreateRequest{Template: tplID,
				Hardware: `{"device_1":"` + newMachine(i).mac.String() + `"}`})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// checkWorkflows asks herd-server whether each machine's workflow ended in
// SUCCESS at its last action.
func checkWorkflows(wc workflow.WorkflowServiceClient, results []machineResult) []error {
	var mu sync.Mutex
	var errs []error
	var g errgroup.Group
	g.SetLimit(16)
	for _, r := range results {
		if r.workflowID == "" {
			continue
		}
		g.Go(func() error {
			c, err := wc.GetWorkflowContext(context.Background(), &workflow.GetRequest{Id: r.workflowID})
			if err == nil && (c.GetCurrentActionState() != workflow.State_STATE_SUCCESS || c.GetCurrentActionIndex() != int64(nActions-1)) {
				err = fmt.Errorf("at action %d in %s, want SUCCESS of action %d", c.GetCurrentActionIndex(), c.GetCurrentActionState(), nActions-1)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("workflow %s: %w", r.workflowID, err))
				mu.Unlock()
			}
			return nil
		})
	}
	g.Wait()
	return errs
}

// served is a file the machines download.
type served struct {
	name, what string
	size       int64
}

// osieFiles puts the kernel, initramfs (the real ones when built, else
// same-size files) and the OS image in a directory served as /osie/.
func osieFiles(t *testing.T) (string, [3]served) {
	t.Helper()
	dir := t.TempDir()
	put := func(name, what, src string, size int64) served {
		dst := filepath.Join(dir, name)
		if b, err := os.ReadFile(src); err == nil {
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return served{name, what + " (" + src + ")", int64(len(b))}
		}
		f, err := os.Create(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := io.CopyN(f, rand.Reader, size); err != nil {
			t.Fatal(err)
		}
		return served{name, what + " (random bytes)", size}
	}
	return dir, [3]served{
		put("vmlinuz-x86_64", "kernel", *kernel, defaultKernelSize),
		put("initramfs-x86_64", "initramfs", *initrd, defaultInitrdSize),
		put("os.img", "OS image", "", int64(*imageMiB)<<20),
	}
}

func waitHealthy(t *testing.T, c *http.Client, p *proc, url string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if res, err := c.Get(url); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if !p.alive() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy at %s within 2 min\n%s", p.name, url, p.logs)
		}
	}
}

// waitInventory waits until herd-boots holds all total records and
// herd-metadata answers each new machine, from its own address, with its
// hostname.
func waitInventory(t *testing.T, c *http.Client, ns *netNS, total, from, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for gauge(c, "http://"+bootsHTTP+"/metrics", "herd_boots_inventory_machines") < float64(total) {
		if time.Now().After(deadline) {
			t.Fatalf("herd-boots holds %v machines, want %d", gauge(c, "http://"+bootsHTTP+"/metrics", "herd_boots_inventory_machines"), total)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var g errgroup.Group
	g.SetLimit(32)
	for i := from; i < from+n; i++ {
		g.Go(func() error {
			m := newMachine(i)
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
				DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return ns.dialFrom(ctx, m.ip, addr) }}}
			var counted atomic.Int64
			for {
				b, _, err := fetch(context.Background(), hc, "http://"+metadataIP+"/2009-04-04/meta-data/hostname", &counted, false, false)
				if err == nil && string(b) == m.hostname() {
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("herd-metadata does not answer machine %d (%s) with its hostname: %q, %v", i, m.ip, b, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func gauge(c *http.Client, url, name string) float64 {
	res, err := c.Get(url)
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return -1
}

// readCounters is the kernel's counters in each namespace.
func readCounters(t *testing.T, nss ...*netNS) []map[string]int64 {
	t.Helper()
	ms := make([]map[string]int64, len(nss))
	for i, n := range nss {
		m, err := n.counters()
		if err != nil {
			t.Fatal(err)
		}
		ms[i] = m
	}
	return ms
}

func readAll(t *testing.T, pids map[string]int) map[string]usage {
	t.Helper()
	m := map[string]usage{}
	for name, pid := range pids {
		u, err := readUsage(pid)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m[name] = u
	}
	return m
}

// linkLimit is the plain TCP copy's rate across the same veth.
type linkLimit struct {
	streams []int
	rate    []float64 // bytes/s
}

// tcpLimit is the link's limit the way herd-boots sends: the OS image
// file sent with sendfile (io.Copy from an *os.File to a TCP connection)
// from the services' namespace to a machine address, over 1, 8 and 64
// connections at once, the receiver reading into 1 MiB buffers with a
// machine's receive buffer (machineRcvBuf).
func tcpLimit(t *testing.T, srv, cli *netNS, file string) linkLimit {
	t.Helper()
	sink := machineIP(0) + ":9099"
	l, err := cli.listen("tcp", sink, true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go serve(l, func(c net.Conn) {
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
	var lim linkLimit
	for _, streams := range []int{1, 8, 64} {
		var total atomic.Int64
		var g errgroup.Group
		start := time.Now()
		for range streams {
			g.Go(func() error {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				c, err := srv.dialFrom(context.Background(), net.ParseIP(serverIP), sink)
				if err != nil {
					return err
				}
				defer c.Close()
				for time.Since(start) < *copySecs {
					if _, err := f.Seek(0, io.SeekStart); err != nil {
						return err
					}
					n, err := io.Copy(c, f)
					total.Add(n)
					if err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatalf("TCP copy: %v", err)
		}
		lim.streams = append(lim.streams, streams)
		lim.rate = append(lim.rate, float64(total.Load())/time.Since(start).Seconds())
	}
	return lim
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }
