//go:build bench

// Package bench measures herd-server under the load of a fleet: `make
// bench-server` runs it and writes docs/benchmarks.md. It is a benchmark,
// not a test: it asserts nothing about speed, it reports.
package bench

import (
	"context"
	"crypto/x509"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"golang.org/x/sync/errgroup"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
)

var (
	out        = flag.String("out", "", "markdown file to write the figures into (its bench-server section)")
	nHardware  = flag.Int("hardware", 10000, "hardware records")
	perPhase   = flag.Int("workers", 1000, "simulated workers per phase, each running its own workflow on its own machine")
	nActions   = flag.Int("actions", 10, "actions per workflow")
	pacedRates = flag.String("paced-rates", "2000,1000", "comma-separated report rates the paced phases offer, one phase (and worker group) each")
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, false)) }

func mac(i int) string {
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)
}
func hwID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }

func record(i int) *hardware.Hardware {
	return &hardware.Hardware{
		Id:       hwID(i),
		Metadata: fmt.Sprintf(`{"instance":{"hostname":"node-%d"}}`, i),
		Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
			Dhcp: &hardware.Hardware_DHCP{Mac: mac(i), Hostname: fmt.Sprintf("node-%d", i), Arch: "x86_64",
				Ip: &hardware.Hardware_DHCP_IP{Address: fmt.Sprintf("10.%d.%d.%d", 10+i>>16&0xff, i>>8&0xff, i&0xff), Netmask: "255.0.0.0"}},
			Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true},
		}}},
	}
}

func templateYAML(actions int) string {
	var b strings.Builder
	b.WriteString("version: \"0.1\"\nname: bench\nglobal_timeout: 3600\ntasks:\n  - name: provision\n    worker: \"{{.device_1}}\"\n    actions:\n")
	for i := 0; i < actions; i++ {
		fmt.Fprintf(&b, "      - name: step-%d\n        image: registry.local/noop:v1\n        timeout: 600\n", i)
	}
	return b.String()
}

// parallel runs fn(i) for i in [0,n) on k goroutines and returns the time.
func parallel(n, k int, fn func(i int) error) (time.Duration, error) {
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(k)
	for i := 0; i < n; i++ {
		g.Go(func() error { return fn(i) })
	}
	err := g.Wait()
	return time.Since(start), err
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

func TestBenchServer(t *testing.T) {
	ctx := context.Background()
	// info, not less: servertest learns the ports from the "serving" line.
	s := servertest.Start(t, "--log-level", "info")
	admin := s.Dial(servertest.AdminToken)
	hc, tc, wc := hardware.NewHardwareServiceClient(admin), template.NewTemplateServiceClient(admin), workflow.NewWorkflowServiceClient(admin)

	pushTime, err := parallel(*nHardware, 32, func(i int) error {
		_, err := hc.Push(ctx, &hardware.PushRequest{Data: record(i)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := tc.CreateTemplate(ctx, &template.WorkflowTemplate{Name: "bench", Data: templateYAML(*nActions)})
	if err != nil {
		t.Fatal(err)
	}
	var rates []float64
	for _, f := range strings.Split(*pacedRates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 {
			t.Fatalf("-paced-rates: %q is not a positive number", f)
		}
		rates = append(rates, r)
	}
	nWorkflows := *perPhase * (1 + len(rates))
	if nWorkflows > *nHardware {
		t.Fatalf("%d workflows need as many machines; -hardware is %d", nWorkflows, *nHardware)
	}
	ids := make([]string, nWorkflows)
	createTime, err := parallel(nWorkflows, 32, func(i int) error {
		r, err := wc.CreateWorkflow(ctx, &workflow.CreateRequest{Template: tpl.GetId(), Hardware: `{"device_1":"` + mac(i) + `"}`})
		ids[i] = r.GetId()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	db, err := sql.Open("postgres", s.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var fsync string
	if err := db.QueryRow("SHOW fsync").Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		t.Fatalf("pg_stat_statements (needed to count statements): %v", err)
	}

	// Saturation: every worker reports as fast as the server answers; that
	// gives the throughput. Closed-loop latency there is bounded below by
	// Little's law (workers / throughput), so latency is measured in paced
	// phases: other workers together offer a fixed rate (the target, 2,000
	// reports/s, then lower), each spreading its reports evenly, which is
	// what a fleet at that rate sees.
	ca := s.CA()
	satWorkers := connectWorkers(t, s, ca, 0, *perPhase)
	if _, err := db.Exec("SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatal(err)
	}
	satLat, satElapsed := runWorkers(t, satWorkers, 0)
	var statements int64
	if err := db.QueryRow(`SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&statements); err != nil {
		t.Fatal(err)
	}
	type paced struct {
		rate    float64
		period  time.Duration
		lat     []time.Duration
		elapsed time.Duration
	}
	var phases []paced
	for i, rate := range rates {
		workers := connectWorkers(t, s, ca, (i+1)**perPhase, (i+2)**perPhase)
		period := time.Duration(float64(len(workers)) / rate * float64(time.Second))
		lat, elapsed := runWorkers(t, workers, period)
		phases = append(phases, paced{rate, period, lat, elapsed})
	}
	for _, id := range append(ids[:5:5], ids[len(ids)-5:]...) {
		wf, err := wc.GetWorkflow(ctx, &workflow.GetRequest{Id: id})
		if err != nil || wf.GetState() != workflow.State_STATE_SUCCESS {
			t.Fatalf("workflow %s ended %v (%v), want SUCCESS", id, wf.GetState(), err)
		}
	}

	satReports := len(satLat)
	actions := satReports / 2
	rows := [][2]string{
		{"hardware records pushed (32 concurrent clients)", fmt.Sprintf("%d in %.1f s = %.0f/s", *nHardware, pushTime.Seconds(), float64(*nHardware)/pushTime.Seconds())},
		{"workflows created (32 concurrent clients)", fmt.Sprintf("%d in %.1f s = %.0f/s", nWorkflows, createTime.Seconds(), float64(nWorkflows)/createTime.Seconds())},
		{"workers, each with its own TLS connection and worker credential", fmt.Sprintf("%d per phase, %d no-op actions per workflow", *perPhase, *nActions)},
		{"saturation: reports (RUNNING + SUCCESS per action), as fast as answered", fmt.Sprintf("%d in %.2f s", satReports, satElapsed.Seconds())},
		{"**saturation: action reports per second**", fmt.Sprintf("**%.0f**", float64(satReports)/satElapsed.Seconds())},
		{"saturation: report latency p50 / p99 (closed loop: ≥ workers ÷ throughput)", fmt.Sprintf("%.1f ms / %.1f ms", ms(percentile(satLat, .50)), ms(percentile(satLat, .99)))},
	}
	for _, p := range phases {
		rows = append(rows,
			[2]string{fmt.Sprintf("paced at %.0f reports/s offered: achieved", p.rate), fmt.Sprintf("%d reports in %.2f s = %.0f/s (each worker one report per %v)", len(p.lat), p.elapsed.Seconds(), float64(len(p.lat))/p.elapsed.Seconds(), p.period)},
			[2]string{fmt.Sprintf("**paced at %.0f reports/s: latency p50 / p99 / max**", p.rate), fmt.Sprintf("**%.1f ms / %.1f ms** / %.1f ms", ms(percentile(p.lat, .50)), ms(percentile(p.lat, .99)), ms(p.lat[len(p.lat)-1]))})
	}
	rows = append(rows,
		[2]string{"Postgres statements per action (pg_stat_statements over the saturation phase, all statements of the database)", fmt.Sprintf("%.1f (%.1f per report)", float64(statements)/float64(actions), float64(statements)/float64(satReports))},
		[2]string{"PostgreSQL fsync", fsync})
	var b strings.Builder
	fmt.Fprintf(&b, "## bench-server\n\n`make bench-server`, %s, %d CPUs, Go %s, PostgreSQL throwaway cluster (pkg/pgtest), herd-server as a separate process. Targets: ≥ 2,000 action reports/s, p99 < 100 ms, fsync on. The figures of one run; the machine is shared and noisy.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version())
	b.WriteString("| measure | value |\n| --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s |\n", r[0], r[1])
	}
	t.Log("\n" + b.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-server", b.String()); err != nil {
			t.Fatal(err)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// worker is one simulated machine: its connection, workflow and actions.
type worker struct {
	c       workflow.WorkflowServiceClient
	wf      string
	actions []*workflow.WorkflowAction
	lat     []time.Duration
}

// connectWorkers connects the machines [from, to), each with its own
// credential, and has each find its workflow, as a worker does at start.
func connectWorkers(t *testing.T, s *servertest.Server, ca *x509.CertPool, from, to int) []*worker {
	ctx := context.Background()
	workers := make([]*worker, to-from)
	tokens := s.WorkerTokens()
	if _, err := parallel(to-from, 64, func(k int) error {
		i := from + k
		c := workflow.NewWorkflowServiceClient(s.DialCA(ca, tokens[hwID(i)]))
		stream, err := c.GetWorkflowContexts(ctx, &workflow.WorkflowContextRequest{WorkerId: hwID(i)})
		if err != nil {
			return err
		}
		wctx, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("worker %d: no workflow: %w", i, err)
		}
		for _, err := stream.Recv(); err != io.EOF; _, err = stream.Recv() {
			if err != nil {
				return err
			}
		}
		list, err := c.GetWorkflowActions(ctx, &workflow.WorkflowActionsRequest{WorkflowId: wctx.GetWorkflowId()})
		if err != nil {
			return err
		}
		workers[k] = &worker{c: c, wf: wctx.GetWorkflowId(), actions: list.GetActionList()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return workers
}

// runWorkers has every worker report RUNNING then SUCCESS for each of its
// actions, all starting at once; with period > 0 each worker sends one
// report per period (its first at a random offset), otherwise back to back.
// It returns the sorted report latencies and the wall time.
func runWorkers(t *testing.T, workers []*worker, period time.Duration) ([]time.Duration, time.Duration) {
	ctx := context.Background()
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, len(workers))
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			next := time.Now()
			if period > 0 {
				next = next.Add(time.Duration(rand.Int64N(int64(period))))
			}
			for _, a := range w.actions {
				for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
					if period > 0 {
						time.Sleep(time.Until(next))
						next = next.Add(period)
					}
					t0 := time.Now()
					_, err := w.c.ReportActionStatus(ctx, &workflow.WorkflowActionStatus{
						WorkflowId: w.wf, TaskName: a.GetTaskName(), ActionName: a.GetName(), ActionStatus: st})
					w.lat = append(w.lat, time.Since(t0))
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var lat []time.Duration
	for _, w := range workers {
		lat = append(lat, w.lat...)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat, elapsed
}
