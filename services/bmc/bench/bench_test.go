//go:build bench

// Package bench measures BMC jobs end to end: `make bench-bmc` runs it and
// writes its section of docs/benchmarks.md. A real herd-server (race
// detector off) hands status jobs for 100 machines behind 20 real BMCs
// (OpenIPMI's ipmi_sim) to a real herd-bmc process, at several --max-jobs;
// then one BMC with a QEMU VM behind it is powered on and off. It reports
// how long a job takes and how many ran at once; it asserts nothing about
// speed.
package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/machine"
	"github.com/herd-metal/herd/services/bmc/internal/ipmisim"
)

var (
	out      = flag.String("out", "", "markdown file to write the figures into (its bench-bmc section)")
	nBMCs    = flag.Int("bmcs", 20, "ipmi_sim BMCs")
	perBMC   = flag.Int("machines-per-bmc", 5, "machines behind each BMC (a chassis; their jobs share its one-at-a-time limit)")
	rounds   = flag.Int("rounds", 3, "runs of every --max-jobs setting")
	maxJobs  = flag.String("max-jobs", "1,4,16", "herd-bmc --max-jobs settings measured")
	vmCycles = flag.Int("vm-cycles", 5, "power on/off cycles of the VM behind one BMC")
)

const token = "bench-bmc-token"

var herdBMC string // the herd-bmc binary TestMain built

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herd-bmc-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	herdBMC = filepath.Join(dir, "herd-bmc")
	_, here, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", herdBMC, "./cmd/herd-bmc")
	build.Dir = filepath.Join(filepath.Dir(here), "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building herd-bmc:", err)
		os.Exit(1)
	}
	code := servertest.Main(m, false)
	os.RemoveAll(dir)
	os.Exit(code)
}

// startBMC runs the herd-bmc binary against s; the returned func stops it
// by its pid (SIGINT, then waits).
func startBMC(t *testing.T, s *servertest.Server, args ...string) func() {
	t.Helper()
	cmd := exec.Command(herdBMC, append([]string{"--bmc-http-addr", "127.0.0.1:0", "--cert-url", s.HTTP + "/cert",
		"--agent", "bench", "--log-level", "warn"}, args...)...)
	cmd.Env = append(os.Environ(), "HERD_GRPC_AUTHORITY="+s.GRPC, "HERD_TOKEN="+token)
	logs := &servertest.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("herd-bmc: %v\n%s", err, logs)
		}
	}
	t.Cleanup(stop)
	return stop
}

func record(id string, i int, host string, port int) *hardware.Hardware {
	return &hardware.Hardware{
		Id: id,
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8&0xff, i&0xff),
				Ip: &hardware.Hardware_DHCP_IP{Address: fmt.Sprintf("10.2.%d.%d", i>>8&0xff, i&0xff+1), Netmask: "255.255.0.0"}},
		}}},
		Bmc: &hardware.Hardware_BMC{Address: host, Protocol: "ipmi", Port: int32(port), Credential: "sim"},
	}
}

// span is one attempt's time on its BMC.
type span struct{ start, end time.Time }

// maxOverlap is the most spans open at one instant.
func maxOverlap(spans []span) int {
	type edge struct {
		at time.Time
		d  int
	}
	var edges []edge
	for _, s := range spans {
		edges = append(edges, edge{s.start, 1}, edge{s.end, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.d - b.d // an end before a start at the same instant
	})
	n, top := 0, 0
	for _, e := range edges {
		n += e.d
		top = max(top, n)
	}
	return top
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// result is one run of every machine's status job.
type result struct {
	maxJobs          string
	wall             time.Duration
	latency, attempt []time.Duration // job: asked → ended; attempt: on the BMC
	concurrent       int
	failed           int
}

// runJobs asks a status job of every machine at once and waits for all;
// a job ending other than want counts as failed.
func runJobs(t *testing.T, mc machine.MachineServiceClient, ids []string, want machine.JobState) result {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	var jobs []string
	for _, id := range ids {
		j, err := mc.Power(ctx, &machine.PowerRequest{HardwareId: id, Action: "status"})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j.GetId())
	}
	var r result
	var spans []span
	var last time.Time
	for _, id := range jobs {
		stream, err := mc.WatchJob(ctx, &machine.GetJobRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		var end *machine.Job
		for {
			j, err := stream.Recv()
			if err != nil {
				break
			}
			end = j
		}
		if end == nil {
			t.Fatalf("job %s: no state", id)
		}
		if end.GetState() != want {
			r.failed++
			t.Logf("job %s ended %v: %s", id, end.GetState(), end.GetMessage())
			continue
		}
		if len(end.GetAttempts()) == 0 {
			continue // ended by the server's timer, never tried
		}
		done := end.GetUpdatedAt().AsTime()
		if done.After(last) {
			last = done
		}
		r.latency = append(r.latency, done.Sub(end.GetCreatedAt().AsTime()))
		for _, a := range end.GetAttempts() {
			s := span{a.GetStart().AsTime(), a.GetEnd().AsTime()}
			spans = append(spans, s)
			r.attempt = append(r.attempt, s.end.Sub(s.start))
		}
	}
	r.wall = last.Sub(start)
	r.concurrent = maxOverlap(spans)
	return r
}

func TestBenchBMC(t *testing.T) {
	s := servertest.Start(t, "--bmc-token", token, "--bmc-poll-interval", "0")
	admin := s.Dial(servertest.AdminToken)
	mc := machine.NewMachineServiceClient(admin)
	hc := hardware.NewHardwareServiceClient(admin)
	ctx := context.Background()
	if _, err := mc.SetBMCCredential(ctx, &machine.SetBMCCredentialRequest{Name: "sim", Username: ipmisim.User, Password: ipmisim.Password}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var vm *ipmisim.Sim
	for b := range *nBMCs {
		sim := ipmisim.Start(t)
		if b == 0 {
			vm = sim
		}
		for m := range *perBMC {
			i := b**perBMC + m
			id := fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1)
			if _, err := hc.Push(ctx, &hardware.PushRequest{Data: record(id, i, sim.BMC.Host, sim.BMC.Port)}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}

	var results []result
	for round := range *rounds {
		for _, mj := range strings.Split(*maxJobs, ",") {
			stop := startBMC(t, s, "--max-jobs", mj)
			r := runJobs(t, mc, ids, machine.JobState_JOB_STATE_SUCCESS)
			stop()
			r.maxJobs = mj
			results = append(results, r)
			t.Logf("round %d, --max-jobs %s: %d jobs in %v, job p50 %v p99 %v, attempt p50 %v p99 %v, at most %d at once, %d failed",
				round+1, mj, len(r.latency), r.wall, pct(r.latency, .5), pct(r.latency, .99), pct(r.attempt, .5), pct(r.attempt, .99), r.concurrent, r.failed)
		}
	}

	// Slow BMCs: the same fleet behind BMCs that never answer, so each
	// job holds its BMC for the call timeout (1 s, one attempt): here the
	// limits, not herd, set the pace.
	var slowIDs []string
	for b := range *nBMCs {
		mute, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer mute.Close()
		for m := range *perBMC {
			i := 4096 + b**perBMC + m
			id := fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1)
			if _, err := hc.Push(ctx, &hardware.PushRequest{Data: record(id, i, "127.0.0.1", mute.LocalAddr().(*net.UDPAddr).Port)}); err != nil {
				t.Fatal(err)
			}
			slowIDs = append(slowIDs, id)
		}
	}
	var slow []result
	for round := range *rounds {
		stop := startBMC(t, s, "--max-jobs", "16", "--attempts", "1", "--bmc-call-timeout", "1s")
		r := runJobs(t, mc, slowIDs, machine.JobState_JOB_STATE_TIMEOUT)
		stop()
		r.maxJobs = "16"
		slow = append(slow, r)
		t.Logf("slow round %d: %d jobs in %v, at most %d at once, %d not TIMEOUT", round+1, len(r.latency), r.wall, r.concurrent, r.failed)
	}

	// Power on and off of a real VM behind one BMC.
	stop := startBMC(t, s)
	var on, off []time.Duration
	for range *vmCycles {
		for _, action := range []string{"on", "off"} {
			j, err := mc.Power(ctx, &machine.PowerRequest{HardwareId: ids[0], Action: action})
			if err != nil {
				t.Fatal(err)
			}
			stream, err := mc.WatchJob(ctx, &machine.GetJobRequest{Id: j.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			var end *machine.Job
			for {
				x, err := stream.Recv()
				if err != nil {
					break
				}
				end = x
			}
			if end.GetState() != machine.JobState_JOB_STATE_SUCCESS {
				t.Fatalf("power %s ended %v: %s", action, end.GetState(), end.GetMessage())
			}
			d := end.GetUpdatedAt().AsTime().Sub(end.GetCreatedAt().AsTime())
			if action == "on" {
				on = append(on, d)
			} else {
				off = append(off, d)
			}
		}
	}
	stop()
	if vm.QemuPid() != 0 {
		t.Fatal("the VM runs after the last power off")
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## BMC jobs (`make bench-bmc`)\n\n")
	fmt.Fprintf(&b, "Run %s on this machine (%d cores). A real herd-server (no race detector) on a real PostgreSQL hands one power status job for each of %d machines, all asked at once, to a real herd-bmc process; the machines sit behind %d OpenIPMI `ipmi_sim` BMCs on loopback (%d per BMC, so herd-bmc's one-job-per-BMC rule applies). Job: from asked to ended, as herd-server records it (herd-bmc's wait for a job included). Attempt: herd-bmc's IPMI session and command on the BMC. At once: the most attempts open at one instant. %d runs of each setting; every run is listed.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), len(ids), *nBMCs, *perBMC, *rounds)
	fmt.Fprintf(&b, "| --max-jobs | run | jobs | all done in | jobs/s | job p50 | job p99 | attempt p50 | attempt p99 | at once | failed |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	worst := map[string]result{}
	for i, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %.0f | %s | %s | %s | %s | %d | %d |\n", r.maxJobs, i/len(strings.Split(*maxJobs, ","))+1, len(r.latency),
			ms(r.wall), float64(len(r.latency))/r.wall.Seconds(), ms(pct(r.latency, .5)), ms(pct(r.latency, .99)), ms(pct(r.attempt, .5)), ms(pct(r.attempt, .99)), r.concurrent, r.failed)
		if w, ok := worst[r.maxJobs]; !ok || r.wall > w.wall {
			worst[r.maxJobs] = r
		}
	}
	fmt.Fprintf(&b, "\nWorst run (slowest to finish) of each setting:")
	for _, mj := range strings.Split(*maxJobs, ",") {
		w := worst[mj]
		fmt.Fprintf(&b, " --max-jobs %s: %s for %d jobs, at most %d at once;", mj, ms(w.wall), len(w.latency), w.concurrent)
	}
	fmt.Fprintf(&b, "\n\nSlow BMCs: the same %d machines behind %d BMCs that take packets and never answer, `--max-jobs 16 --attempts 1 --bmc-call-timeout 1s`, so every job holds its BMC 1 s and ends TIMEOUT; one job per BMC at a time means at least %d s, and %d jobs of 1 s over 16 slots at least %.1f s.\n\n| run | jobs | all done in | at once | not TIMEOUT |\n| --- | --- | --- | --- | --- |\n",
		len(slowIDs), *nBMCs, *perBMC, len(slowIDs), float64(len(slowIDs))/16)
	for i, r := range slow {
		fmt.Fprintf(&b, "| %d | %d | %s | %d | %d |\n", i+1, len(r.latency), ms(r.wall), r.concurrent, r.failed)
	}
	fmt.Fprintf(&b, "\nA real VM: power on (QEMU started by the BMC's chassis control) and power off through herd, %d times each: on p50 %s (max %s), off p50 %s (max %s), from asked to ended.\n",
		*vmCycles, ms(pct(on, .5)), ms(pct(on, 1)), ms(pct(off, .5)), ms(pct(off, 1)))
	t.Log("\n" + b.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-bmc", b.String()); err != nil {
			t.Fatal(err)
		}
	}
}
