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
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"
	"golang.org/x/sync/errgroup"

	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/servertest"
)

var (
	out        = flag.String("out", "", "markdown file to write the figures into (its bench-server section)")
	nHardware  = flag.Int("hardware", 10000, "hardware records")
	nWorkflows = flag.Int("workflows", 2000, "workflows, one per machine, each run by its own simulated worker; half run at saturation, half paced")
	nActions   = flag.Int("actions", 10, "actions per workflow")
	pacedRate  = flag.Float64("paced-rate", 2000, "reports per second the paced phase offers")
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
	ids := make([]string, *nWorkflows)
	createTime, err := parallel(*nWorkflows, 32, func(i int) error {
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

	// Phase 1, saturation: every worker reports as fast as the server
	// answers. Phase 2, paced: other workers together offer the target rate
	// (2,000 reports/s), each spreading its reports evenly; its latencies are
	// what a fleet at that rate sees. Closed-loop latency at saturation is
	// bounded below by Little's law (workers / throughput), so the two
	// questions need the two phases.
	ca := s.CA()
	half := *nWorkflows / 2
	satWorkers := connectWorkers(t, s, ca, 0, half)
	pacedWorkers := connectWorkers(t, s, ca, half, *nWorkflows)
	if _, err := db.Exec("SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatal(err)
	}
	satLat, satElapsed := runWorkers(t, satWorkers, 0)
	var statements int64
	if err := db.QueryRow(`SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&statements); err != nil {
		t.Fatal(err)
	}
	period := time.Duration(float64(len(pacedWorkers)) / *pacedRate * float64(time.Second))
	pacedLat, pacedElapsed := runWorkers(t, pacedWorkers, period)
	for _, id := range append(ids[:5:5], ids[len(ids)-5:]...) {
		wf, err := wc.GetWorkflow(ctx, &workflow.GetRequest{Id: id})
		if err != nil || wf.GetState() != workflow.State_STATE_SUCCESS {
			t.Fatalf("workflow %s ended %v (%v), want SUCCESS", id, wf.GetState(), err)
		}
	}

	satReports, pacedReports := len(satLat), len(pacedLat)
	actions := satReports / 2
	rows := [][2]string{
		{"hardware records pushed (32 concurrent clients)", fmt.Sprintf("%d in %.1f s = %.0f/s", *nHardware, pushTime.Seconds(), float64(*nHardware)/pushTime.Seconds())},
		{"workflows created (32 concurrent clients)", fmt.Sprintf("%d in %.1f s = %.0f/s", *nWorkflows, createTime.Seconds(), float64(*nWorkflows)/createTime.Seconds())},
		{"workers, each with its own TLS connection and worker credential", fmt.Sprintf("%d (%d per phase), %d no-op actions per workflow", *nWorkflows, half, *nActions)},
		{"saturation: reports (RUNNING + SUCCESS per action), as fast as answered", fmt.Sprintf("%d in %.2f s", satReports, satElapsed.Seconds())},
		{"**saturation: action reports per second**", fmt.Sprintf("**%.0f**", float64(satReports)/satElapsed.Seconds())},
		{"saturation: report latency p50 / p99 (closed loop: ≥ workers ÷ throughput)", fmt.Sprintf("%.1f ms / %.1f ms", ms(percentile(satLat, .50)), ms(percentile(satLat, .99)))},
		{"paced: offered rate", fmt.Sprintf("%.0f reports/s (%d workers, one report each per %v)", *pacedRate, len(pacedWorkers), period)},
		{"paced: achieved", fmt.Sprintf("%d reports in %.2f s = %.0f/s", pacedReports, pacedElapsed.Seconds(), float64(pacedReports)/pacedElapsed.Seconds())},
		{"**paced: report latency p50 / p99**", fmt.Sprintf("**%.1f ms / %.1f ms**", ms(percentile(pacedLat, .50)), ms(percentile(pacedLat, .99)))},
		{"paced: report latency max", fmt.Sprintf("%.1f ms", ms(pacedLat[len(pacedLat)-1]))},
		{"Postgres statements per action (pg_stat_statements over the saturation phase, all statements of the database)", fmt.Sprintf("%.1f (%.1f per report)", float64(statements)/float64(actions), float64(statements)/float64(satReports))},
		{"PostgreSQL fsync", fsync},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## bench-server\n\n`make bench-server`, %s, %d CPUs, Go %s, PostgreSQL throwaway cluster (pkg/pgtest), herd-server as a separate process. Targets: ≥ 2,000 action reports/s, p99 < 100 ms, fsync on. The figures of one run; the machine is shared and noisy.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version())
	b.WriteString("| measure | value |\n| --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s |\n", r[0], r[1])
	}
	t.Log("\n" + b.String())
	if *out != "" {
		if err := writeSection(*out, "bench-server", b.String()); err != nil {
			t.Fatal(err)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeSection replaces (or appends) the section between this benchmark's
// markers, so each benchmark owns its part of the file.
func writeSection(path, name, body string) error {
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	if doc == "" {
		doc = "# herd benchmarks\n\nWritten by the `make bench-*` targets; each owns the section between its markers.\n"
	}
	section := begin + "\n" + body + end
	if i, j := strings.Index(doc, begin), strings.Index(doc, end); i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(end):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

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
	if _, err := parallel(to-from, 64, func(k int) error {
		i := from + k
		c := workflow.NewWorkflowServiceClient(s.DialCA(ca, s.WorkerToken(hwID(i))))
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
