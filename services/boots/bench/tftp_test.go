//go:build bench

package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/services/boots/internal/realtest"
	"github.com/herd-metal/herd/services/boots/internal/tftp"
)

var (
	tftpRounds  = flag.Int("tftp-rounds", 3, "TestBenchTFTP: rounds, each running every series, file and client count on both servers, the first server alternating")
	tftpClients = flag.String("tftp-clients", "1,50,200", "TestBenchTFTP: concurrent client counts")
	tftpMin     = flag.Int64("tftp-min-bytes", 32<<20, "TestBenchTFTP: bytes one run transfers at least (each client reads the file at least once)")
	tftpBlksize = flag.Int("tftp-blksize", 1468, "TestBenchTFTP: blksize every client asks")
	tftpWindow  = flag.Int("tftp-windowsize", 16, "TestBenchTFTP: windowsize the clients of the second series ask (RFC 7440)")
)

// tftpFiles are what PXE firmware fetches over TFTP, from Debian's ipxe.
var tftpFiles = []string{"undionly.kpxe", "ipxe.efi"}

// tftpServer is one server under test.
type tftpServer struct {
	name string
	addr *net.UDPAddr
	p    *proc
}

// tftpRun is one server's run: clients reading one file over and over
// until the run's transfers are done.
type tftpRun struct {
	transfers int
	bytes     int64
	elapsed   time.Duration
	times     []time.Duration // per transfer, sorted
	granted   tftp.Fetched    // of the first transfer
}

func (r tftpRun) rate() float64 { return float64(r.transfers) / r.elapsed.Seconds() }
func (r tftpRun) mbps() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }

// run reads file with n transfers over clients goroutines, checking each
// transfer's SHA-256; any error fails the benchmark.
func (s tftpServer) run(t *testing.T, c tftp.Client, file string, want []byte, clients int) tftpRun {
	t.Helper()
	// Four transfers per client at least: a run of one wave measures its
	// start more than its pace.
	n := max(downloadsFor(int64(len(want)), *tftpMin, clients), 4*clients)
	sum := sha256.Sum256(want)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var mu sync.Mutex
	r := tftpRun{transfers: n}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			for range next {
				h.Reset()
				t0 := time.Now()
				got, err := c.Get(ctx, s.addr, file, h)
				d := time.Since(t0)
				mu.Lock()
				if err == nil && !bytes.Equal(h.Sum(nil), sum[:]) {
					err = fmt.Errorf("%s: content differs (%d bytes)", file, got.Bytes)
				}
				if err != nil {
					errs = append(errs, err)
				}
				if len(r.times) == 0 {
					r.granted = got
				}
				r.times = append(r.times, d)
				r.bytes += got.Bytes
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	if len(errs) > 0 {
		t.Fatalf("%s, %s, %d clients: %d of %d transfers failed, the first: %v", s.name, file, clients, len(errs), n, errs[0])
	}
	if !s.p.alive() {
		t.Fatalf("%s exited: %v\n%s", s.name, s.p.exitErr, s.p.logs)
	}
	slices.Sort(r.times)
	return r
}

// udpPort is a free UDP address on 127.0.0.1.
func udpPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// waitTFTP waits until s serves file (or its process exits).
func waitTFTP(t *testing.T, s tftpServer, file string) {
	t.Helper()
	c := tftp.Client{Blksize: *tftpBlksize, Timeout: 200 * time.Millisecond, Retries: 1}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var b bytes.Buffer
		if _, err := c.Get(context.Background(), s.addr, file, &b); err == nil {
			return
		}
		if !s.p.alive() {
			t.Fatalf("%s exited: %v\n%s", s.name, s.p.exitErr, s.p.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not served within 2 min\n%s", s.name, file, s.p.logs)
		}
	}
}

// TestBenchTFTP: herd-boots' TFTP and tftpd-hpa serve Debian's iPXE
// binaries over loopback to the same Go clients, in rounds alternating
// which server goes first; its section of docs/benchmarks.md is
// bench-tftp.
func TestBenchTFTP(t *testing.T) {
	tftpdPath := need(t, "in.tftpd")
	clientCounts, err := parseClients(*tftpClients)
	if err != nil {
		t.Fatalf("-tftp-clients: %v", err)
	}
	if *tftpBlksize < 512 || *tftpBlksize > 65464 || *tftpWindow < 2 || *tftpWindow > 65535 {
		t.Fatalf("-tftp-blksize %d, -tftp-windowsize %d: want 512..65464 and 2..65535", *tftpBlksize, *tftpWindow)
	}
	// One directory for both servers: tftpd-hpa chroots into it and serves
	// as nobody, so it and its files are world-readable.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	contents := map[string][]byte{}
	for _, f := range tftpFiles {
		src := filepath.Join("/usr/lib/ipxe", f)
		realtest.File(t, src) // services/boots/deps.txt: ipxe
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
		contents[f] = b
	}

	s := servertest.Start(t)
	bootsTFTP := udpPort(t)
	bootsArgs := []string{"--server", s.GRPC, "--cert-url", s.HTTP + "/cert", "--token", servertest.AdminToken, "--public-ip", "127.0.0.1",
		"--dhcp-addr", "off", "--syslog-addr", "off", "--http-addr", freePort(t), "--tftp-addr", bootsTFTP, "--ipxe-dir", dir, "--log-level", "warn"}
	boots := startProc(t, "herd-boots", exec.Command(buildBoots(t), bootsArgs...))
	hpaTFTP := udpPort(t)
	hpaArgs := []string{"-L", "-s", dir, "-a", hpaTFTP}
	hpa := startProc(t, "tftpd-hpa", exec.Command(tftpdPath, hpaArgs...))
	resolve := func(a string) *net.UDPAddr {
		ua, err := net.ResolveUDPAddr("udp4", a)
		if err != nil {
			t.Fatal(err)
		}
		return ua
	}
	servers := []tftpServer{{"herd-boots", resolve(bootsTFTP), boots}, {"tftpd-hpa", resolve(hpaTFTP), hpa}}
	for _, srv := range servers {
		for _, f := range tftpFiles {
			waitTFTP(t, srv, f) // and the page cache is warm
		}
	}
	hpaVersion, _ := exec.Command(tftpdPath, "-V").CombinedOutput()

	series := []struct {
		name   string
		client tftp.Client
	}{
		{fmt.Sprintf("blksize %d", *tftpBlksize), tftp.Client{Blksize: *tftpBlksize}},
		{fmt.Sprintf("blksize %d, windowsize %d", *tftpBlksize, *tftpWindow), tftp.Client{Blksize: *tftpBlksize, Windowsize: *tftpWindow}},
	}
	type key struct {
		series, clients int
		file            string
	}
	rounds := map[key][][2]tftpRun{} // per round: herd-boots, tftpd-hpa
	for round := range *tftpRounds {
		order := []int{0, 1}
		if round%2 == 1 {
			order = []int{1, 0}
		}
		for si, se := range series {
			for _, c := range clientCounts {
				for _, f := range tftpFiles {
					var pair [2]tftpRun
					for _, i := range order {
						pair[i] = servers[i].run(t, se.client, f, contents[f], c)
						t.Logf("round %d, %s, %s, %d clients: %s %.0f transfers/s", round+1, se.name, f, c, servers[i].name, pair[i].rate())
					}
					k := key{si, c, f}
					rounds[k] = append(rounds[k], pair)
				}
			}
		}
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "## bench-tftp\n\n`make bench-tftp`, %s, %d CPUs, Go %s, %s. "+
		"herd-boots (this commit, `go build`, --log-level warn) and tftpd-hpa (`in.tftpd %s`: a private process, forking a child per transfer, chrooted, as nobody) "+
		"serve the same files (Debian's ipxe package: undionly.kpxe %d bytes, ipxe.efi %d bytes) from one directory over loopback to the same client: "+
		"one Go process (services/boots/internal/tftp's Client), each client a goroutine reading the file over and over with a new socket per transfer, "+
		"checking each transfer's SHA-256; a run ends when its transfers are done (4 per client at least, %d MiB at least in all), and every error fails the benchmark. "+
		"Two series: the clients ask blksize %d (as PXE firmware asks its MTU's worth), then blksize %d and windowsize %d (RFC 7440), which herd-boots grants and tftpd-hpa, "+
		"which does not know the option, ignores (its transfers stay in lock step: one ACK per block). "+
		"%d rounds; in each, every series, client count and file runs on both servers back to back, herd-boots first in odd rounds, tftpd-hpa first in even ones. "+
		"Transfers/s and MB/s (10^6 bytes) over the run's wall time; p50/p99 of the time per transfer, from the request to the last ACK sent. "+
		"**The client shares the machine's %d CPUs with the server** (and other engineers' work), so a figure is the pair's, and the ratio within a round is what counts. "+
		"Target: herd-boots ≥ 1× tftpd-hpa in every round.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(), strings.TrimSpace(strings.SplitN(string(hpaVersion), "\n", 2)[0]),
		strings.ReplaceAll(strings.Join(hpaArgs, " "), dir, "DIR"), len(contents[tftpFiles[0]]), len(contents[tftpFiles[1]]), *tftpMin>>20,
		*tftpBlksize, *tftpBlksize, *tftpWindow, *tftpRounds, runtime.NumCPU())
	var summary []string
	for si, se := range series {
		fmt.Fprintf(&sb, "### %s\n\n", se.name)
		sb.WriteString("| file | clients | round | transfers | granted: herd-boots / tftpd-hpa | herd-boots transfers/s | tftpd-hpa transfers/s | herd / tftpd-hpa | herd-boots MB/s | tftpd-hpa MB/s | herd-boots p50 / p99 | tftpd-hpa p50 / p99 |\n")
		sb.WriteString("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		worst, worstAt := 0.0, ""
		for _, c := range clientCounts {
			for _, f := range tftpFiles {
				for ri, pair := range rounds[key{si, c, f}] {
					h, p := pair[0], pair[1]
					ratio := h.rate() / p.rate()
					if worstAt == "" || ratio < worst {
						worst, worstAt = ratio, fmt.Sprintf("%s, %d clients, round %d", f, c, ri+1)
					}
					fmt.Fprintf(&sb, "| %s | %d | %d | %d | %s / %s | %.0f | %.0f | **%.2f×** | %.1f | %.1f | %.1f / %.1f ms | %.1f / %.1f ms |\n",
						f, c, ri+1, h.transfers, grantedStr(h.granted), grantedStr(p.granted), h.rate(), p.rate(), ratio, h.mbps(), p.mbps(),
						ms(percentile(h.times, 50)), ms(percentile(h.times, 99)), ms(percentile(p.times, 50)), ms(percentile(p.times, 99)))
				}
			}
		}
		fmt.Fprintf(&sb, "\nWorst herd-boots / tftpd-hpa over the rounds with %s: **%.2f×** (%s).\n\n", se.name, worst, worstAt)
		summary = append(summary, fmt.Sprintf("%s %.2f×", se.name, worst))
	}
	fmt.Fprintf(&sb, "Worst ratio per series (target ≥ 1×): %s.\n", strings.Join(summary, "; "))
	t.Log("\n" + sb.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-tftp", sb.String()); err != nil {
			t.Fatal(err)
		}
	}
}

// grantedStr is what the server granted a transfer: "1468" (lock step) or
// "1468 × 16" (blksize × windowsize).
func grantedStr(f tftp.Fetched) string {
	if f.Windowsize > 1 {
		return fmt.Sprintf("%d × %d", f.Blksize, f.Windowsize)
	}
	return fmt.Sprint(f.Blksize)
}
