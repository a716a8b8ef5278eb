//go:build bench

// Package bench measures the web UI with a large fleet in a real
// chromium against a real herd-server: how long the fleet page takes to
// load, and whether it keeps up while workflows report. `make bench-ui`
// runs it. It is a benchmark, not a test: it asserts nothing about speed,
// it reports.
package bench

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/herd-metal/herd/pkg/benchdoc"
	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/pkg/servertest"
	"github.com/herd-metal/herd/proto/hardware"
	"github.com/herd-metal/herd/proto/template"
	"github.com/herd-metal/herd/proto/workflow"
	"github.com/herd-metal/herd/services/server/internal/ui/uitest"
)

var (
	out      = flag.String("out", "", "markdown file to write the figures into (its bench-ui section)")
	nMachine = flag.Int("hardware", 10000, "hardware records, each with one workflow")
	nRunning = flag.Int("running", 1000, "workflows that report while the page is open; the others have ended")
	nActions = flag.Int("actions", 10, "actions of each reporting workflow")
	loads    = flag.Int("loads", 5, "page loads measured")
)

func TestMain(m *testing.M) { os.Exit(servertest.Main(m, false)) }

func mac(i int) string {
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)
}
func hwID(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }

func record(i int) *hardware.Hardware {
	return &hardware.Hardware{Id: hwID(i), Network: &hardware.Hardware_Network{Interfaces: []*hardware.Hardware_Network_Interface{{
		Dhcp: &hardware.Hardware_DHCP{Mac: mac(i), Hostname: fmt.Sprintf("node-%d", i),
			Ip: &hardware.Hardware_DHCP_IP{Address: fmt.Sprintf("10.%d.%d.%d", 10+i>>16&0xff, i>>8&0xff, i&0xff), Netmask: "255.0.0.0"}},
		Netboot: &hardware.Hardware_Netboot{AllowPxe: true, AllowWorkflow: true}}}}}
}

func templateYAML(name string, actions int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: \"0.1\"\nname: %s\ntasks:\n  - name: \"t\"\n    worker: \"{{.device_1}}\"\n    actions:\n", name)
	for a := range actions {
		fmt.Fprintf(&b, "      - name: \"a%d\"\n        image: busybox\n        timeout: 600\n", a)
	}
	return b.String()
}

func parallel(n, width int, fn func(i int) error) (time.Duration, error) {
	start := time.Now()
	var g errgroup.Group
	g.SetLimit(width)
	for i := range n {
		g.Go(func() error { return fn(i) })
	}
	return time.Since(start), g.Wait()
}

// reportAll runs the actions of workflow ids[i] as machine i's worker
// would, over one shared connection with each machine's credential.
func reportAll(conn *grpc.ClientConn, tokens map[string]string, ids []string, from, to, actions int) (time.Duration, error) {
	wc := workflow.NewWorkflowServiceClient(conn)
	return parallel(to-from, 64, func(k int) error {
		i := from + k
		cred := grpc.PerRPCCredentials(connect.Bearer(tokens[hwID(i)]))
		for a := range actions {
			for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
				if _, err := wc.ReportActionStatus(context.Background(), &workflow.WorkflowActionStatus{WorkflowId: ids[i], TaskName: "t",
					ActionName: fmt.Sprintf("a%d", a), ActionStatus: st, Seconds: 1}, cred); err != nil {
					return fmt.Errorf("machine %d action %d: %w", i, a, err)
				}
			}
		}
		return nil
	})
}

func median(d []float64) float64 {
	s := append([]float64(nil), d...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// TestBenchUI fills a herd-server with -hardware machines, each with a
// workflow (all but -running of them ended), then measures the fleet page
// in chromium: until it is live with every row, and until every row shows
// its progress; then keeps it open while -running workflows report every
// action, and measures how long after the last report the page shows them
// all done, and the longest gap between two frames meanwhile.
func TestBenchUI(t *testing.T) {
	if *nRunning > *nMachine {
		t.Fatalf("-running %d > -hardware %d", *nRunning, *nMachine)
	}
	ctx := context.Background()
	s := servertest.Start(t, "--log-level", "info")
	admin := s.Dial(servertest.AdminToken)
	hc, tc, wc := hardware.NewHardwareServiceClient(admin), template.NewTemplateServiceClient(admin), workflow.NewWorkflowServiceClient(admin)
	pushTime := servertest.PushHardware(t, hc, 0, *nMachine, record)
	long, err := tc.CreateTemplate(ctx, &template.WorkflowTemplate{Name: "long", Data: templateYAML("long", *nActions)})
	if err != nil {
		t.Fatal(err)
	}
	short, err := tc.CreateTemplate(ctx, &template.WorkflowTemplate{Name: "short", Data: templateYAML("short", 1)})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, *nMachine)
	createTime, err := parallel(*nMachine, 32, func(i int) error {
		tpl := short.GetId()
		if i < *nRunning {
			tpl = long.GetId()
		}
		r, err := wc.CreateWorkflow(ctx, &workflow.CreateRequest{Template: tpl, Hardware: `{"device_1":"` + mac(i) + `"}`})
		ids[i] = r.GetId()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	tokens := s.WorkerTokens()
	workers := s.Dial("")
	endTime, err := reportAll(workers, tokens, ids, *nRunning, *nMachine, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed %d machines in %v, created %d workflows in %v, ended %d in %v", *nMachine, pushTime, *nMachine, createTime, *nMachine-*nRunning, endTime)

	// Where a load's time goes before the browser: the two API streams
	// the fleet stream starts from, and the fleet stream itself.
	apiStart := time.Now()
	if _, err := servertest.WatchTokens(ctx, hc); err != nil {
		t.Fatal(err)
	}
	watchTime := time.Since(apiStart)
	listStart := time.Now()
	list, err := wc.ListWorkflows(ctx, &workflow.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	for _, err = list.Recv(); err == nil; _, err = list.Recv() {
	}
	listTime := time.Since(listStart)
	streamTime := untilSynced(t, s.HTTP)
	t.Logf("hardware Watch snapshot %v, ListWorkflows %v, /ui/events to synced %v", watchTime, listTime, streamTime)

	b := uitest.Browser(t)
	uitest.Login(t, b, s.HTTP, servertest.AdminToken)
	uitest.Step(t, b, "first load", chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`)))
	// The page builds only the rows in view, and counts them all.
	allRows := fmt.Sprintf(`document.getElementById("count").textContent === %q`, fmt.Sprintf("%d machines", *nMachine))
	allProgress := `document.querySelectorAll('#fleet tbody tr[data-progress=""]:not(.spacer)').length === 0 && ` + allRows
	machinesShown := fmt.Sprintf(`document.getElementById("count").textContent.startsWith(%q) && document.querySelector("#fleet tbody tr[data-id]") !== null`, fmt.Sprintf("%d machines", *nMachine))
	var first, live, progress []float64
	for range *loads {
		uitest.Step(t, b, "load", chromedp.Navigate(s.HTTP+"/ui/"))
		// performance.now() counts from the navigation's start.
		first = append(first, uitest.Get(t, b, "until the machines show", chromedp.Poll[float64](`(`+machinesShown+`) && performance.now()`, chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(5*time.Minute))))
		live = append(live, uitest.Get(t, b, "until live", chromedp.Poll[float64](`(`+allRows+`) && performance.now()`, chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(5*time.Minute))))
		progress = append(progress, uitest.Get(t, b, "until every row has its progress", chromedp.Poll[float64](`(`+allProgress+`) && performance.now()`, chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(5*time.Minute))))
		t.Logf("load: machines shown after %.0f ms, live with every workflow after %.0f ms, the rows in view with their progress after %.0f ms", first[len(first)-1], live[len(live)-1], progress[len(progress)-1])
	}

	// The running workflows report while the page is open, filtered to
	// SUCCESS: its count reaches every machine when the last is done.
	uitest.SetControl(t, b, "state", "SUCCESS")
	uitest.Get(t, b, "frame probe", chromedp.Evaluate[bool](`(() => { window.benchGap = 0; let last = performance.now();
		const tick = (now) => { window.benchGap = Math.max(window.benchGap, now - last); last = now; requestAnimationFrame(tick); };
		requestAnimationFrame(tick); return true; })()`))
	reportTime, err := reportAll(workers, tokens, ids, 0, *nRunning, *nActions)
	if err != nil {
		t.Fatal(err)
	}
	lastReport := time.Now()
	uitest.Get(t, b, "see them all done", chromedp.Poll[bool](allRows,
		chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(5*time.Minute)))
	lag := time.Since(lastReport)
	gap := uitest.Get(t, b, "read the frame gap", chromedp.Evaluate[float64](`window.benchGap`))
	reports := *nRunning * *nActions * 2

	var doc strings.Builder
	fmt.Fprintf(&doc, "## Web UI (make bench-ui)\n\n")
	fmt.Fprintf(&doc, "Headless Debian chromium at 1280x800 against one herd-server (no race detector) on PostgreSQL, on this machine (%d CPUs, shared). %d machines, each with one workflow: %d ended (1 action), %d of %d actions that report while the fleet page is open.\n\n",
		runtime.NumCPU(), *nMachine, *nMachine-*nRunning, *nRunning, *nActions)
	fmt.Fprintf(&doc, "| figure | value |\n| --- | --- |\n")
	fmt.Fprintf(&doc, "| fleet page, navigation to every machine counted and the rows in view shown, workflows still loading (median of %d; min, max) | %.0f ms (%.0f, %.0f) |\n", *loads, median(first), minOf(first), maxOf(first))
	fmt.Fprintf(&doc, "| fleet page, navigation to live with every workflow known (median; min, max) | %.0f ms (%.0f, %.0f) |\n", median(live), minOf(live), maxOf(live))
	fmt.Fprintf(&doc, "| fleet page, navigation to the progress of every row in view shown (median; min, max) | %.0f ms (%.0f, %.0f) |\n", median(progress), minOf(progress), maxOf(progress))
	fmt.Fprintf(&doc, "| of which the server: hardware Watch snapshot; ListWorkflows; /ui/events request to its \"synced\" event (Go client) | %.0f ms; %.0f ms; %.0f ms |\n",
		float64(watchTime.Milliseconds()), float64(listTime.Milliseconds()), float64(streamTime.Milliseconds()))
	fmt.Fprintf(&doc, "| %d reports from %d workers | sent in %.1f s (%.0f/s) |\n", reports, *nRunning, reportTime.Seconds(), float64(reports)/reportTime.Seconds())
	fmt.Fprintf(&doc, "| last report to the page showing all %d done | %.0f ms |\n", *nMachine, float64(lag.Milliseconds()))
	fmt.Fprintf(&doc, "| longest gap between two frames while they reported | %.0f ms |\n", gap)
	t.Log("\n" + doc.String())
	if *out != "" {
		if err := benchdoc.WriteSection(*out, "bench-ui", doc.String()); err != nil {
			t.Fatal(err)
		}
	}
}

// untilSynced logs in over HTTP and times one fleet stream from its
// request to its "synced" event.
func untilSynced(t *testing.T, base string) time.Duration {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.PostForm(base+"/ui/login", url.Values{"token": {servertest.AdminToken}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(res.Cookies()) != 1 {
		t.Fatalf("login: %d, cookies %v", res.StatusCode, res.Cookies())
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/ui/events", nil)
	req.AddCookie(res.Cookies()[0])
	start := time.Now()
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := bufio.NewScanner(res.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		if lines.Text() == "event: synced" {
			return time.Since(start)
		}
	}
	t.Fatalf("the fleet stream ended before synced: %v", lines.Err())
	return 0
}

func minOf(d []float64) float64 {
	m := d[0]
	for _, v := range d {
		m = min(m, v)
	}
	return m
}

func maxOf(d []float64) float64 {
	m := d[0]
	for _, v := range d {
		m = max(m, v)
	}
	return m
}
