//go:build bench

package storm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/herd-metal/herd/pkg/connect"
	"github.com/herd-metal/herd/proto/workflow"
)

// The steps of one machine's walk, in order; the report gives p50/p99 of each.
const (
	stepDHCP = iota
	stepAuto
	stepScript
	stepKernel
	stepInitrd
	stepEvents
	stepWorkflow // GetWorkflowContexts + GetWorkflowActions
	stepImage    // the image action's download
	stepReports  // the 10 ReportActionStatus calls
	stepMetadata
	stepWhole
	nSteps
)

var stepNames = [nSteps]string{"DHCP DORA (relayed)", "GET auto.ipxe", "GET machine script", "GET kernel", "GET initramfs",
	"boot events (2 GETs)", "GetWorkflowContexts + GetWorkflowActions", "GET OS image (action 3)", "ReportActionStatus ×10",
	"metadata crawl (EC2, cloud-init's walk)", "whole machine"}

// walk is what the machines share: where the services are and the counters.
type walk struct {
	ns       *netNS // the machines' namespace
	relay    *relay
	grpcAddr string // herd-server, on the host's loopback
	ca       *x509.CertPool
	actions  int

	bootsBytes, metadataBytes atomic.Int64
	dhcpRetries               atomic.Int64
}

// machineResult is one machine's walk: each step's time, or the error
// that stopped it.
type machineResult struct {
	steps      [nSteps]time.Duration
	workflowID string
	err        error
	failedAt   int // the step err stopped it at
}

// run walks machine m through the whole path.
func (w *walk) run(ctx context.Context, m machine) (res machineResult) {
	start := time.Now()
	lap := func(step int) { res.steps[step] = time.Since(start) - sum(res.steps[:step]) }
	fail := func(step int, err error) machineResult {
		res.err, res.failedAt = fmt.Errorf("machine %d (%s, %s), %s: %w", m.i, m.mac, m.ip, stepNames[step], err), step
		return res
	}
	// Each machine's HTTP connections leave from its own address.
	// No bound on a whole download (a storm may make it slow), only on a
	// stall, as a firmware's or image2disk's reader gives up (fetch).
	hc := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: stallTimeout,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return w.ns.dialFrom(ctx, m.ip, addr) },
	}}
	defer hc.CloseIdleConnections()
	get := func(url string, counter *atomic.Int64, allow404 bool) ([]byte, error) {
		body, _, err := fetch(ctx, hc, url, counter, allow404, false)
		return body, err
	}
	download := func(url string) error {
		_, _, err := fetch(ctx, hc, url, &w.bootsBytes, false, true)
		return err
	}

	ack, retries, err := w.relay.dora(ctx, m.mac)
	w.dhcpRetries.Add(int64(retries))
	if err != nil {
		return fail(stepDHCP, err)
	}
	if !ack.YourIPAddr.Equal(m.ip) {
		return fail(stepDHCP, fmt.Errorf("ACK gave %s, the reservation is %s", ack.YourIPAddr, m.ip))
	}
	bootFile := ack.BootFileNameOption()
	if bootFile == "" {
		bootFile = ack.BootFileName
	}
	if !strings.HasPrefix(bootFile, "http://") {
		return fail(stepDHCP, fmt.Errorf("boot file %q, want the auto.ipxe URL", bootFile))
	}
	lap(stepDHCP)

	auto, err := get(bootFile, &w.bootsBytes, false)
	if err != nil {
		return fail(stepAuto, err)
	}
	chain, err := chainURL(string(auto), m.hexhyp())
	if err != nil {
		return fail(stepAuto, err)
	}
	lap(stepAuto)

	body, err := get(chain, &w.bootsBytes, false)
	if err != nil {
		return fail(stepScript, err)
	}
	sc, err := parseScript(string(body))
	if err != nil {
		return fail(stepScript, err)
	}
	if sc.args["worker_id"] != m.hwID || sc.args["herd.token"] == "" {
		return fail(stepScript, fmt.Errorf("script for worker_id %q with token %t, want %s with one", sc.args["worker_id"], sc.args["herd.token"] != "", m.hwID))
	}
	lap(stepScript)

	if err := download(sc.kernel); err != nil {
		return fail(stepKernel, err)
	}
	lap(stepKernel)
	if err := download(sc.initrd); err != nil {
		return fail(stepInitrd, err)
	}
	lap(stepInitrd)
	for _, e := range sc.events {
		if _, err := get(e, &w.bootsBytes, false); err != nil {
			return fail(stepEvents, err)
		}
	}
	lap(stepEvents)

	// The OSIE's worker: herd-server with the credential from the script.
	conn, err := grpc.NewClient(w.grpcAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: w.ca, ServerName: "127.0.0.1"})),
		grpc.WithPerRPCCredentials(connect.Bearer(sc.args["herd.token"])))
	if err != nil {
		return fail(stepWorkflow, err)
	}
	defer conn.Close()
	wc := workflow.NewWorkflowServiceClient(conn)
	id, actions, err := workflowOf(ctx, wc, m.hwID)
	if err != nil {
		return fail(stepWorkflow, err)
	}
	if len(actions) != w.actions {
		return fail(stepWorkflow, fmt.Errorf("workflow %s has %d actions, want %d", id, len(actions), w.actions))
	}
	res.workflowID = id
	lap(stepWorkflow)

	var reports, image time.Duration
	for _, a := range actions {
		for _, st := range []workflow.State{workflow.State_STATE_RUNNING, workflow.State_STATE_SUCCESS} {
			if st == workflow.State_STATE_SUCCESS {
				if url := env(a.GetEnvironment(), "IMG_URL"); url != "" {
					t0 := time.Now()
					if err := download(url); err != nil {
						return fail(stepImage, err)
					}
					image += time.Since(t0)
				}
			}
			t0 := time.Now()
			_, err := wc.ReportActionStatus(ctx, &workflow.WorkflowActionStatus{WorkflowId: id, TaskName: a.GetTaskName(),
				ActionName: a.GetName(), ActionStatus: st, Seconds: 1, Message: "storm"})
			reports += time.Since(t0)
			if err != nil {
				return fail(stepReports, fmt.Errorf("%s %s: %w", a.GetName(), st, err))
			}
		}
	}
	if image == 0 {
		return fail(stepImage, errors.New("no action named an IMG_URL"))
	}
	res.steps[stepImage], res.steps[stepReports] = image, reports

	// cloud-init's EC2 walk, from the machine's own address.
	crawled, err := crawl(ctx, func(url string, allow404 bool) ([]byte, error) { return get(url, &w.metadataBytes, allow404) },
		sc.args["herd.metadata"]+"/2009-04-04/")
	if err != nil {
		return fail(stepMetadata, err)
	}
	if got := crawled["meta-data/hostname"]; got != m.hostname() {
		return fail(stepMetadata, fmt.Errorf("meta-data/hostname %q, want %q: metadata answered for another machine", got, m.hostname()))
	}
	lap(stepMetadata)
	res.steps[stepWhole] = time.Since(start)
	return res
}

func sum(ds []time.Duration) (s time.Duration) {
	for _, d := range ds {
		s += d
	}
	return s
}

// fetch GETs url: the body (discarded and only counted when discard),
// and an error for any status but 200 (and 404 when allow404).
// A request that receives nothing for stallTimeout fails (the services'
// own write timeout is 60 s too).
const stallTimeout = 60 * time.Second

func fetch(ctx context.Context, hc *http.Client, url string, counter *atomic.Int64, allow404, discard bool) ([]byte, int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stalled := fmt.Errorf("nothing received for %s", stallTimeout)
	watchdog := time.AfterFunc(stallTimeout, func() { cancel(stalled) })
	defer watchdog.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, 0, errors.Join(err, context.Cause(ctx))
	}
	defer res.Body.Close()
	body := &progress{r: res.Body, watchdog: watchdog}
	var data []byte
	if discard {
		_, err = io.Copy(io.Discard, body)
	} else {
		data, err = io.ReadAll(io.LimitReader(body, 1<<20))
	}
	n := body.n
	counter.Add(n)
	if err != nil {
		return nil, res.StatusCode, fmt.Errorf("GET %s: body after %d bytes: %w", url, n, errors.Join(err, context.Cause(ctx)))
	}
	switch {
	case res.StatusCode == http.StatusOK:
	case res.StatusCode == http.StatusNotFound && allow404:
	default:
		return nil, res.StatusCode, fmt.Errorf("GET %s: %s: %.200s", url, res.Status, data)
	}
	if discard && res.ContentLength >= 0 && n != res.ContentLength {
		return nil, res.StatusCode, fmt.Errorf("GET %s: %d bytes, Content-Length %d", url, n, res.ContentLength)
	}
	return data, res.StatusCode, nil
}

// progress counts what is read and pushes the stall watchdog back.
type progress struct {
	r        io.Reader
	watchdog *time.Timer
	n        int64
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.watchdog.Reset(stallTimeout)
	}
	return n, err
}

// workflowOf is the worker's start: the machine's one workflow and its actions.
func workflowOf(ctx context.Context, wc workflow.WorkflowServiceClient, hwID string) (string, []*workflow.WorkflowAction, error) {
	stream, err := wc.GetWorkflowContexts(ctx, &workflow.WorkflowContextRequest{WorkerId: hwID})
	if err != nil {
		return "", nil, err
	}
	var ids []string
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", nil, err
		}
		ids = append(ids, c.GetWorkflowId())
	}
	if len(ids) != 1 {
		return "", nil, fmt.Errorf("%d workflows with the next move, want 1", len(ids))
	}
	list, err := wc.GetWorkflowActions(ctx, &workflow.WorkflowActionsRequest{WorkflowId: ids[0]})
	if err != nil {
		return "", nil, err
	}
	return ids[0], list.GetActionList(), nil
}

// env is KEY's value in a KEY=value list.
func env(list []string, key string) string {
	for _, kv := range list {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}
